"""tunelab: adapt pretrained language models and measure which strategy wins."""

__version__ = "0.1.0"
