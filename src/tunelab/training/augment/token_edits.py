"""Token edits (EDA, Wei & Zou 2019, without its synonym operations): each copy applies one edit,
drawn from `operations`, to n = max(1, round(edit_rate × words)) words of the text:

- swap:   n times, exchange two words at random positions;
- delete: remove n words at random (at least one word always stays);
- insert: n times, insert a copy of one of the text's own words at a random position.

EDA's synonym replacement and synonym insertion need a synonym source; none ships offline here
(nltk is installed but not its WordNet data), so insertion repeats a word of the same text instead
of adding a synonym. Words are whitespace-separated tokens; punctuation stays attached to its word.
"""

from __future__ import annotations

import random


def edit_count(words: int, rate: float) -> int:
    return max(1, round(rate * words))


def swap(words: list[str], n: int, rng: random.Random) -> list[str]:
    words = list(words)
    if len(words) < 2:
        return words
    for _ in range(n):
        i, j = rng.sample(range(len(words)), 2)
        words[i], words[j] = words[j], words[i]
    return words


def delete(words: list[str], n: int, rng: random.Random) -> list[str]:
    if len(words) < 2:
        return list(words)
    gone = set(rng.sample(range(len(words)), min(n, len(words) - 1)))
    return [w for i, w in enumerate(words) if i not in gone]


def insert(words: list[str], n: int, rng: random.Random) -> list[str]:
    words = list(words)
    for _ in range(n):
        words.insert(rng.randint(0, len(words)), rng.choice(words))
    return words


EDITS = {"swap": swap, "delete": delete, "insert": insert}


def token_edit_copies(texts: list[str], copies: int, settings, seed: int) -> list[list[str]]:
    """`copies` edited versions per text (result[i] for texts[i]); the same seed gives the same edits.

    Up to 4 × copies draws are made per text so that repeats and no-op edits (a swap of two equal
    words) can be replaced; a text whose every edit is a no-op (one word) gets fewer, maybe none.
    """
    rng = random.Random(f"token_edits:{seed}")  # a string seed: independent of every other use of the seed
    result = []
    for text in texts:
        words, made = text.split(), []
        for _ in range(4 * copies):
            if len(made) == copies:
                break
            operation = EDITS[rng.choice(settings.operations)]
            edited = " ".join(operation(words, edit_count(len(words), settings.edit_rate), rng))
            if edited and edited != " ".join(words) and edited not in made:
                made.append(edited)
        result.append(made)
    return result
