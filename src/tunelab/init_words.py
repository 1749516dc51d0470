"""The label words `tunelab init` writes: each label's name, made distinct where `pet` needs it.

zero_shot and few_shot score a label word whole; `pet` scores only its first token after the prompt,
so two labels whose words start alike ("search creative work", "search screening event") make every
pet cell of the written sweep fail when the sweep reaches it. The words are checked with the embedded LM's own
tokenizer, as pet reads them after the prompt's "Answer:"; clashing words lose the words they share
at the front ("creative work", "screening event"), and when that is not enough (SST-5's "very negative",
"very positive") the sweep trains `pet_choices`, which scores every token of each word, with a note saying why.
"""

from __future__ import annotations

from dataclasses import dataclass

from tunelab.errors import ModelError
from tunelab.models import embedded_path, load_tokenizer

LM = "smollm2-135m"  # the embedded LM init writes for the prompting strategies
CUE = "Answer:"  # the end of init's template, which the first label-word token follows


@dataclass
class LabelWords:
    words: dict[str, str]
    pet_ok: bool = True
    note: str = ""


def label_words(names: list[str]) -> LabelWords:
    words = {name: name.replace("_", " ") for name in names}
    try:
        tokenizer = load_tokenizer(str(embedded_path(LM)))
    except ModelError:  # the LM package is missing: the run itself will say so
        return LabelWords(words)
    clashes = clashing(names, first_tokens(tokenizer, list(words.values())))
    if not clashes:
        return LabelWords(words)
    shortened = dict(words)
    for group in clashes:
        shortened.update(without_shared_front({name: words[name] for name in group}))
    if not clashing(names, first_tokens(tokenizer, list(shortened.values()))):
        pairs = ", ".join(f"{words[n]!r} → {shortened[n]!r}" for group in clashes for n in group)
        return LabelWords(shortened, note=f"label words shortened so that each starts with its own token, which pet "
                                          f"scores: {pairs}")
    shown = ", ".join(repr(words[n]) for n in clashes[0])
    return LabelWords(words, pet_ok=False, note=f"pet_choices instead of pet: the label words {shown} start with the same "
                                                f"token and pet scores only that one; pet_choices trains the same read-out "
                                                f"on every token of each word (or write words that differ at the start "
                                                f"into prompt.verbalizer and use pet)")


def first_tokens(tokenizer, words: list[str]) -> list[int]:
    """The token pet scores for each word: the first after init's "Answer:" (pet's own split)."""
    from tunelab.methods.pet_model import label_word_ids
    from tunelab.prompts.engine import with_delimiter

    return label_word_ids(tokenizer, CUE, [with_delimiter(CUE, w) for w in words], causal=True)[1]


def clashing(names: list[str], firsts: list[int]) -> list[list[str]]:
    """Groups (two or more labels) whose words start with the same token."""
    groups: dict[int, list[str]] = {}
    for name, token in zip(names, firsts):
        groups.setdefault(token, []).append(name)
    return [group for group in groups.values() if len(group) > 1]


def without_shared_front(words: dict[str, str]) -> dict[str, str]:
    """The words with the leading words they all share removed ('search creative work' → 'creative work'); each
    keeps its last word, so none comes out empty."""
    split = [w.split() for w in words.values()]
    shared = 0
    while all(len(parts) > shared + 1 for parts in split) and len({parts[shared] for parts in split}) == 1:
        shared += 1
    return {name: " ".join(parts[shared:]) for name, parts in zip(words, split)}
