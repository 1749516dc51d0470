"""Verbalizers (label -> words the LM says), score aggregation, contextual calibration, word search.

A verbalizer is data: ``{label: word | [words]}``. Words may be several tokens long; the scoring
engine scores each word's full token sequence, and this module turns per-word scores into
per-label scores. Arrays are numpy or torch (torch keeps gradients, for prompt-based
fine-tuning); shapes are written as (N examples, W words) and (N, L labels).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, NamedTuple

import numpy as np

from tunelab.errors import ConfigError, DataError

Aggregation = Literal["max", "mean", "logsumexp"]
CONTENT_FREE_INPUTS = ("N/A", "", "[MASK]")
"""Zhao et al. (2021) average the model's label probabilities over these content-free inputs."""


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


class Candidates(NamedTuple):
    words: list[str]
    """Every label word, flattened in label order."""
    label_index: list[int]
    """For each word, the index of its label in `Verbalizer.labels`."""


class Verbalizer:
    """Maps each label of a task to one or more answer words.

    ``labels`` (the task's label names, in order) fixes the label order of every (N, L) output and
    is checked both ways: a verbalizer label outside the task and a task label without words are
    errors. Keys are compared as strings because YAML reads ``1: yes`` with an integer key.
    """

    def __init__(self, words: Mapping[Any, str | Sequence[str]], labels: Sequence[Any] | None = None):
        if isinstance(words, Verbalizer):
            words = words.words
        if not isinstance(words, Mapping) or not words:
            raise ConfigError(f"prompt.verbalizer must be a non-empty mapping {{label: word or [words]}}, got {words!r}")
        by_name = {str(label): label for label in (labels if labels is not None else words)}
        unknown = [key for key in words if str(key) not in by_name]
        if unknown:
            raise ConfigError(f"prompt.verbalizer has label {unknown[0]!r}, which is not a label of the task; "
                              f"valid labels: {list(by_name)}")
        given = {str(key): value for key, value in words.items()}
        self.labels: tuple = tuple(by_name.values())
        self.words: dict[Any, tuple[str, ...]] = {}
        owner: dict[str, Any] = {}
        for name, label in by_name.items():
            value = given.get(name)
            items = [value] if isinstance(value, str) else list(value or [])
            if not items:
                raise ConfigError(f"prompt.verbalizer gives no words for label {label!r}; every task label needs at "
                                  f"least one (labels: {list(by_name)})")
            for word in items:
                if not isinstance(word, str) or not word.strip():
                    raise ConfigError(f"prompt.verbalizer.{name}: words must be non-empty strings, got {word!r}")
                if word in owner:
                    raise ConfigError(f"prompt.verbalizer: word {word!r} is given for both {owner[word]!r} and {label!r}")
                owner[word] = label
            self.words[label] = tuple(items)

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return f"Verbalizer({self.to_dict()!r})"

    def to_dict(self) -> dict[Any, list[str]]:
        return {label: list(words) for label, words in self.words.items()}

    def label_words(self, label: Any) -> list[str]:
        for known in self.labels:
            if known == label or str(known) == str(label):
                return list(self.words[known])
        raise KeyError(f"label {label!r} is not in the verbalizer; labels: {list(self.labels)}")

    def candidates(self) -> Candidates:
        """All words flattened (the W axis of `aggregate`'s input) with a map back to their labels."""
        words, index = [], []
        for i, label in enumerate(self.labels):
            words.extend(self.words[label])
            index.extend([i] * len(self.words[label]))
        return Candidates(words, index)

    def aggregate(self, scores_per_word: Any, how: Aggregation = "max") -> Any:
        """(..., W) word scores, W in `candidates()` order -> (..., L) label scores.

        ``max``: best word; ``mean``: average score; ``logsumexp``: log Σ_w exp(s_w), i.e. the log
        of the label's total probability when the scores are log-probabilities.
        """
        if how not in ("max", "mean", "logsumexp"):
            raise ConfigError(f"verbalizer aggregation must be max, mean or logsumexp, not {how!r}")
        words, index = self.candidates()
        if scores_per_word.shape[-1] != len(words):
            raise ValueError(f"expected {len(words)} word scores on the last axis, got shape {tuple(scores_per_word.shape)}")
        groups = [[w for w, i in enumerate(index) if i == label] for label in range(len(self.labels))]
        if _is_torch(scores_per_word):
            import torch

            reduce = {"max": lambda s: s.max(dim=-1).values, "mean": lambda s: s.mean(dim=-1),
                      "logsumexp": lambda s: torch.logsumexp(s, dim=-1)}[how]
            return torch.stack([reduce(scores_per_word[..., g]) for g in groups], dim=-1)
        scores = np.asarray(scores_per_word)
        reduce = {"max": lambda s: s.max(axis=-1), "mean": lambda s: s.mean(axis=-1),
                  "logsumexp": lambda s: np.logaddexp.reduce(s, axis=-1)}[how]
        return np.stack([reduce(scores[..., g]) for g in groups], axis=-1)

    def decode(self, label_scores: Any) -> list:
        """(N, L) label scores -> the N predicted labels (argmax)."""
        best = label_scores.argmax(-1)
        return [self.labels[int(i)] for i in np.asarray(best.tolist() if _is_torch(best) else best).reshape(-1)]


def calibrate(label_probs: Any, content_free_probs: Any, eps: float = 1e-12) -> Any:
    """Contextual calibration (Zhao et al., 2021, "Calibrate Before Use").

    With p = label_probs normalised over labels (N, L) and p_cf = content_free_probs (L,) or
    (1, L) the model's label distribution for content-free inputs (e.g. "N/A"), normalised::

        p_cal[n, l] = (p[n, l] / p_cf[l]) / Σ_l' (p[n, l'] / p_cf[l'])

    i.e. W = diag(p_cf)^-1, b = 0 applied to p, renormalised to a distribution. The paper writes
    softmax(W p + b); its reference code takes argmax(W p), which this matches. A p_cf of zero is
    clamped to `eps`. numpy in -> numpy out, torch in -> torch out.
    """
    if _is_torch(label_probs) or _is_torch(content_free_probs):
        import torch

        p = torch.as_tensor(label_probs, dtype=None if _is_torch(label_probs) else torch.float64)
        cf = torch.as_tensor(content_free_probs, dtype=p.dtype, device=p.device)
        clamp = lambda x: x.clamp_min(eps)  # noqa: E731
        normalise = lambda x: x / x.sum(dim=-1, keepdim=True)  # noqa: E731
    else:
        p = np.asarray(label_probs, dtype=np.float64)
        cf = np.asarray(content_free_probs, dtype=np.float64)
        clamp = lambda x: np.maximum(x, eps)  # noqa: E731
        normalise = lambda x: x / x.sum(axis=-1, keepdims=True)  # noqa: E731
    if p.shape[-1] != cf.shape[-1]:
        raise ValueError(f"label_probs has {p.shape[-1]} labels but content_free_probs has {cf.shape[-1]}")
    return normalise(normalise(p) / clamp(normalise(cf)))


def content_free_examples(example: Mapping[str, Any], text_fields: Sequence[str] = ("text", "text_pair"),
                          inputs: Sequence[str] = CONTENT_FREE_INPUTS) -> list[dict[str, Any]]:
    """Copies of `example` with its text fields replaced by each content-free input (for `calibrate`)."""
    return [{**example, **{f: value for f in text_fields if f in example}} for value in inputs]


def search_label_words(
    score_fn: Callable[[Sequence[Mapping[str, Any]], list[str]], Any],
    examples: Sequence[Mapping[str, Any]],
    candidate_words: Sequence[str],
    *,
    labels: Sequence[Any] | None = None,
    label_key: str = "label",
    top_n: int = 1,
    exclusive: bool = True,
) -> dict[Any, list[str]]:
    """Automatic label-word selection, a simplified LM-BFF (Gao et al., 2021) search.

    ``score_fn(examples, words)`` returns (N, W) log p(word | prompt(x_i)) at the answer position.
    With D_c the examples of class c and m_c(w) = mean_{i in D_c} log p(w | x_i), a word's score
    for class c is its contrast with the other classes (each class weighted equally)::

        crit(c, w) = m_c(w) - 1/(C-1) * Σ_{c' != c} m_c'(w)

    Returns the `top_n` words per class, best first. With ``exclusive`` a word serves one class
    only: (class, word) pairs are taken greedily in decreasing `crit`. LM-BFF then re-ranks word
    combinations on dev accuracy; this function is that search's first stage only.
    """
    words = list(dict.fromkeys(w for w in candidate_words if w and w.strip()))
    labels = list(labels) if labels is not None else list(dict.fromkeys(ex[label_key] for ex in examples))
    if len(labels) < 2:
        raise DataError(f"label-word search needs examples of at least two classes, got labels {labels}")
    if exclusive and len(words) < top_n * len(labels):
        raise ConfigError(f"label-word search: {len(words)} candidate words cannot give {top_n} distinct words to each "
                          f"of {len(labels)} classes")
    scores = score_fn(list(examples), words)
    scores = scores.detach().cpu().numpy() if _is_torch(scores) else np.asarray(scores, dtype=np.float64)
    if scores.shape != (len(examples), len(words)):
        raise ValueError(f"score_fn must return shape (N={len(examples)}, W={len(words)}), got {scores.shape}")
    ys = [ex[label_key] for ex in examples]
    means = []  # (C, W)
    for label in labels:
        rows = [i for i, y in enumerate(ys) if y == label]
        if not rows:
            raise DataError(f"label-word search: no training example has label {label!r}")
        means.append(scores[rows].mean(axis=0))
    means = np.stack(means)
    C = len(labels)
    crit = means - (means.sum(axis=0, keepdims=True) - means) / (C - 1)  # (C, W)
    if not exclusive:
        return {label: [words[w] for w in np.argsort(-crit[c], kind="stable")[:top_n]] for c, label in enumerate(labels)}
    chosen: dict[Any, list[str]] = {label: [] for label in labels}
    used: set[int] = set()
    for flat in np.argsort(-crit, axis=None, kind="stable"):
        c, w = divmod(int(flat), len(words))
        if w not in used and len(chosen[labels[c]]) < top_n:
            chosen[labels[c]].append(words[w])
            used.add(w)
    return chosen
