"""Chain-of-thought as prompt transforms: CoT demonstrations, zero-shot CoT, answer extraction, voting.

- Few-shot CoT (Wei et al., 2022): an exemplar's answer is "<rationale> So the answer is <label>.",
  so with the default demonstration template a demonstration reads
  "Q ... A: <rationale> So the answer is <label>." (`cot_demonstrations` makes those pairs for
  `build_prompt`).
- Zero-shot CoT (Kojima et al., 2022), two steps: generate reasoning after
  "<query> Let's think step by step.", then read the answer after
  "<step 1 prompt><reasoning>\\nTherefore, the answer is".
- Self-consistency (Wang et al., 2023): sample several reasonings, `extract_answer` from each,
  `majority_vote`.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any

from tunelab.data.fields import record_fields
from tunelab.data.loaders import SOURCE_KEY
from tunelab.errors import ConfigError, DataError
from tunelab.prompts.template import DEFAULT_COT_CUE, PromptSettings, join_words, render_demonstration

ANSWER_PHRASE = "So the answer is"
ANSWER_CUE = "\nTherefore, the answer is"
ANSWER_CUE_NUMERIC = "\nTherefore, the answer (arabic numerals) is"
_ANSWER_IS = re.compile(r"answer\s*(?:\([^)]*\)\s*)?(?:is|:)", re.IGNORECASE)
# 1,234 | 1234 | 12.5 | .5, with an optional minus sign that is not part of a range like "3-5".
_NUMBER = re.compile(r"(?:(?<![\w.])[-\u2212])?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|(?:(?<![\w.])[-\u2212])?\.\d+")


def _after_last_cue(text: str) -> str | None:
    """The text after the last "answer is" / "answer:" (None when there is none)."""
    cues = list(_ANSWER_IS.finditer(text))
    return text[cues[-1].end():] if cues else None


def _normalise_number(raw: str) -> str:
    number = raw.replace(",", "").replace("\u2212", "-")
    if "." in number:
        whole, frac = number.split(".", 1)
        number = whole if not frac.strip("0") and whole not in ("", "-") else number
    return number


def _find_number(text: str) -> str | None:
    tail = _after_last_cue(text)
    if tail is not None and (first := _NUMBER.search(tail)):
        return _normalise_number(first.group())
    found = _NUMBER.findall(text)
    return _normalise_number(found[-1]) if found else None


def _label_surfaces(labels: Any) -> list[tuple[str, Any]]:
    if hasattr(labels, "to_dict"):  # a Verbalizer
        labels = labels.to_dict()
    if isinstance(labels, Mapping):
        pairs = [(w, label) for label, words in labels.items() for w in ([words] if isinstance(words, str) else words)]
        pairs += [(str(label), label) for label in labels]
    else:
        pairs = [(str(label), label) for label in labels]
    pairs = [(surface.strip(), label) for surface, label in pairs if str(surface).strip()]
    return sorted(dict(pairs[::-1]).items(), key=lambda p: -len(p[0]))  # longest first: "very good" before "good"


def _find_label(text: str, labels: Any) -> Any:
    surfaces = _label_surfaces(labels)
    if not surfaces:
        return None
    lookup = {s.lower(): label for s, label in surfaces}
    rx = re.compile(r"(?<!\w)(?:" + "|".join(re.escape(s) for s, _ in surfaces) + r")(?!\w)", re.IGNORECASE)
    tail = _after_last_cue(text)
    if tail is not None and (first := rx.search(tail)):
        return lookup[first.group().lower()]
    found = rx.findall(text)
    return lookup[found[-1].lower()] if found else None


def extract_answer(text: str | None, *, labels: Any = None, pattern: str | None = None, numeric: bool = False) -> Any:
    """Read the final answer out of generated text; None when nothing matches.

    - ``pattern``: a regex; its LAST match is used (group 1 if it has groups, else the whole
      match). Alone, the stripped capture is returned; with `labels`/`numeric` the capture is
      searched further.
    - ``numeric``: the first number after the last "answer is"/"answer:" if there is one, else
      the last number. "1,234" -> "1234", "-3.5" -> "-3.5", "42.00" -> "42".
    - ``labels``: label names, a ``{label: word | [words]}`` mapping or a `Verbalizer`; matched
      case-insensitively as whole words, longest word first. Returns the label of the FIRST
      mention after the last "answer is"/"answer:" when that phrase occurs (the answer follows
      it), else of the LAST mention in the text (reasoning usually ends with its conclusion).
    """
    if text is None:
        return None
    region = text
    if pattern is not None:
        try:
            matches = list(re.finditer(pattern, text))
        except re.error as err:
            raise ConfigError(f"answer pattern {pattern!r} is not a valid regular expression: {err}") from None
        if not matches:
            return None
        last = matches[-1]
        region = (last.group(1) if last.re.groups else last.group()) or ""
        if labels is None and not numeric:
            return region.strip()
    if numeric:
        return _find_number(region)
    if labels is not None:
        return _find_label(region, labels)
    raise ConfigError("extract_answer needs labels, a pattern or numeric=True")


def majority_vote(answers: Iterable[Hashable | None]) -> Any:
    """The most common answer, None ignored; ties go to the answer that appeared first."""
    answers = [a for a in answers if a is not None]
    if not answers:
        return None
    counts = Counter(answers)
    best = max(counts.values())
    return next(a for a in answers if counts[a] == best)


def cot_answer(rationale: str, answer: Any, *, answer_phrase: str = ANSWER_PHRASE) -> str:
    """The answer text of a CoT exemplar: "<rationale> So the answer is <answer>."."""
    return join_words(str(rationale).strip(), f"{answer_phrase} {str(answer).strip()}.")


def cot_demonstrations(
    examples: Sequence[Mapping[str, Any]],
    *,
    answer_fn: Callable[[Mapping[str, Any]], Any] | None = None,
    rationale_key: str = "rationale",
    label_key: str = "label",
    answer_phrase: str = ANSWER_PHRASE,
) -> list[tuple[Mapping[str, Any], str]]:
    """(example, CoT answer text) pairs for `build_prompt`'s `demonstrations`.

    The answer is ``answer_fn(example)`` (e.g. the label's verbalizer word), else the label field.
    Every exemplar needs a non-empty rationale.
    """
    pairs = []
    for i, ex in enumerate(examples):
        rationale = ex.get(rationale_key)
        if not isinstance(rationale, str) or not rationale.strip():
            source = ex.get(SOURCE_KEY, f"chain-of-thought demonstration {i}")  # file:line when read from a file
            fields = sorted(record_fields([ex]))
            raise DataError(f"{source} (a chain-of-thought exemplar) has no {rationale_key!r} field (fields: {fields})")
        answer = answer_fn(ex) if answer_fn is not None else ex[label_key]
        pairs.append((ex, cot_answer(rationale, answer, answer_phrase=answer_phrase)))
    return pairs


def render_cot_demonstration(settings: PromptSettings, example: Mapping[str, Any], answer: Any,
                             rationale: str, *, answer_phrase: str = ANSWER_PHRASE) -> str:
    """One CoT exemplar: "<template(example)> <rationale> So the answer is <answer>."."""
    return render_demonstration(settings, example, cot_answer(rationale, answer, answer_phrase=answer_phrase))


def zero_shot_cot_step1(prompt: str, cue: str = DEFAULT_COT_CUE) -> str:
    """Reasoning-extraction prompt: "<prompt> Let's think step by step."."""
    return join_words(prompt, cue)


def zero_shot_cot_step2(step1_prompt: str, reasoning: str, answer_cue: str = ANSWER_CUE) -> str:
    """Answer-extraction prompt: step 1 + generated reasoning + "\\nTherefore, the answer is".

    Use `ANSWER_CUE_NUMERIC` for arithmetic tasks (Kojima et al.'s "(arabic numerals)" cue).
    """
    return join_words(step1_prompt, str(reasoning).rstrip()) + answer_cue
