"""Techniques of training that compose with any strategy that trains (issue 11): regularisation, ..."""
