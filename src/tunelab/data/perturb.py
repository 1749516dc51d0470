"""A perturbed copy of the test split (`data.perturbed_test`): the robustness figure of a classification run.

Each word (whitespace-separated) is edited with probability `RATE`, by one of, equally likely:
- a typo inside the word: two neighbouring characters swapped, one deleted, or one inserted
  (a lowercase letter);
- a swap with the next word;
- a deletion of the word (never the last one left).
An example that drew no edit gets one, so every copy differs from its original. Only the text
fields change (`text`, `text_pair` and the task's own text fields); labels and every other key are
kept. The edits depend on the run's seed and the example's position alone, so the same seed gives
the same copy in every run and `data.max_test` keeps the first examples' copies unchanged.
Train and dev splits are never perturbed.
"""

from __future__ import annotations

import random
import string

RATE = 0.15
"""Probability that a word is edited."""
EDITS = ("typo", "swap", "delete")


def typo(word: str, rng: random.Random) -> str:
    """One character-level edit inside `word`: swap neighbours, delete one, or insert a letter."""
    kinds = ["insert"] + (["swap", "delete"] if len(word) >= 2 else [])
    kind = rng.choice(kinds)
    if kind == "swap":
        i = rng.randrange(len(word) - 1)
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if kind == "delete":
        i = rng.randrange(len(word))
        return word[:i] + word[i + 1:]
    i = rng.randrange(len(word) + 1)
    return word[:i] + rng.choice(string.ascii_lowercase) + word[i:]


def edit(words: list[str], i: int, kind: str, rng: random.Random) -> None:
    """Apply one edit at word `i`, in place (a swap or deletion that cannot apply becomes a typo)."""
    if kind == "swap" and i + 1 < len(words) and words[i] != words[i + 1]:
        words[i], words[i + 1] = words[i + 1], words[i]
    elif kind == "delete" and len(words) > 1:
        del words[i]
    else:
        words[i] = typo(words[i], rng)


def perturb_text(text: str, rng: random.Random, rate: float = RATE) -> str:
    words = text.split()
    if not words:
        return text + rng.choice(string.ascii_lowercase)  # an empty text still differs from its copy
    edited = False
    i = 0
    while i < len(words):
        if rng.random() < rate:
            edit(words, i, rng.choice(EDITS), rng)
            edited = True
        i += 1
    if not edited:
        edit(words, rng.randrange(len(words)), rng.choice(EDITS), rng)
    result = " ".join(words)
    return result if result != text else perturb_text(text, rng, rate)


def perturbed_copy(examples: list[dict], seed: int, text_keys: tuple[str, ...] = ("text", "text_pair")) -> list[dict]:
    """A new list of new dicts: each example with its text fields perturbed (the same edits wherever a
    text appears under two keys, e.g. `text` and the file's own `sentence`); the input is not touched."""
    copies = []
    for index, example in enumerate(examples):
        rng = random.Random(f"perturbed-test:{seed}:{index}")
        copy = dict(example)
        done: dict[str, str] = {}
        for key in text_keys:
            value = example.get(key)
            if isinstance(value, str):
                if value not in done:
                    done[value] = perturb_text(value, rng)
                copy[key] = done[value]
        copies.append(copy)
    return copies


def text_keys(task) -> tuple[str, ...]:
    """The keys an example's texts sit under: the canonical ones and the task's own field names."""
    keys = ["text", "text_pair", task.text_field] + ([task.text_pair_field] if task.text_pair_field else [])
    return tuple(dict.fromkeys(keys))
