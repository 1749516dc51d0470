"""Chain-of-thought for `tunelab init`: labelled data whose records also carry a worked rationale.

StrategyQA's records hold a `rationale` beside the yes/no label: few-shot chain-of-thought (`cot`, Wei et al. 2022)
shows k of them as worked examples and reads the answer out of what the LM writes after its own reasoning. Init
does not run it by default — the LM generates up to `MAX_NEW_TOKENS` tokens an example (StrategyQA, 2026-12-05:
0.6 questions/s, 5.5 and 9.5 min for the two cells of 200 test and 32 dev questions, two at once on 2 cores, where
the 13 other cells took 5 min together; SmolLM2's chains scored 53.0, chance) — but writes the entry as a commented
line and says so; uncommented, the file passes `compare --dry-run` (a test checks it).
"""

from __future__ import annotations

RATIONALE_NAMES = ("rationale", "explanation", "reasoning", "chain_of_thought", "cot", "solution")
"""Conventional names of a worked-reasoning field, in the order init prefers them."""
EXEMPLARS = 4  # worked examples before each question (Wei et al. used 6-8 on larger LMs; 4 fit a 1,024-token prompt)
MAX_NEW_TOKENS = 96
LM_LENGTH = 1024


def rationale_field(records: list[dict], share: float = 0.95) -> str | None:
    """The first conventional rationale field that holds a non-empty string in `share` of the records, else None."""
    for name in RATIONALE_NAMES:
        filled = sum(isinstance(r.get(name), str) and bool(r[name].strip()) for r in records)
        if records and filled >= share * len(records):
            return name
    return None


def cot_entry(field: str) -> str:
    """The sweep entry (one YAML flow line) for few-shot chain-of-thought with `field` as the worked reasoning.
    The stops end the LM's answer where a new question of init's template would begin."""
    settings = (f"{{mode: few_shot, k: {EXEMPLARS}, rationale_field: {field}, "
                f"generation: {{max_new_tokens: {MAX_NEW_TOKENS}, stop: [\"\\n\\n\", \"\\nQuestion:\"]}}}}")
    return f"- {{name: cot, settings: {settings}, model: {{name: smollm2-135m, max_length: {LM_LENGTH}}}}}"


def cot_lines(field: str) -> list[str]:
    """The commented entry, for the end of the sweep's strategies."""
    return [f"    # chain-of-thought with the data's {field!r} as worked examples: uncomment to add it (it generates "
            f"text: 5-10 min a cell for 200 test questions on 2 cores)",
            f"    # {cot_entry(field)}"]


def cot_note(field: str) -> str:
    return (f"records carry {field!r}: few-shot chain-of-thought (cot) can use them as worked examples; the file "
            f"holds its entry commented out (it generates text, slower than the rest of the sweep together): "
            f"uncomment it to compare it")
