"""Templates written by a language model from the training examples (LM-BFF's automatic templates).

LM-BFF (Gao et al., 2021) lets T5 fill in the text around the input and the label word, decoding
the template that is likeliest over all training examples at once. A causal LM (the embedded
smollm2-135m, or any model named in `generate_templates.model`) writes left to right, so here it
writes the text *after* the input — the cue that leads to the label word — by beam search over
suffix tokens t, scored on the K-shot training examples (x_i, y_i) only::

    score(t) = 1/N Σ_i log p(t | x_i)                       fluency: the LM would write t after x_i
             + 1/N Σ_i log softmax_l( z_i[w_l] )[y_i]        the cue makes the gold label's word win
    z_i = next-token logits after x_i + t;  w_l = first token of label l's first word

The template is then `{{ text }}` + decoded t. Every candidate is a Jinja template like any user
template: it is compiled and rendered on a training example in the sandboxed environment
(`tunelab.prompts.template`), and it must read exactly the fields the plain template reads — a
candidate that fails to render, trips the sandbox, or reads another field (a `{{ label }}` would
put the answer into the prompt) is rejected and recorded with its reason. The kept candidates
(`top_n`, best score first) are then scored on the dev split by the strategy, which keeps the best.
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import Field

from tunelab.errors import ConfigError
from tunelab.prompts.engine import with_delimiter
from tunelab.prompts.template import compile_template, render, template_fields
from tunelab.scoring import bos_to_add
from tunelab.settings import StrictSettings


class TemplateGeneration(StrictSettings):
    """`strategy.generate_templates`: let a causal LM write templates from the training examples."""

    model: str | None = None
    """The causal LM that writes them (embedded name, local folder or hub id); default: the experiment's model."""
    top_n: int = Field(3, gt=0)
    """Generated templates kept (best training score first) and scored on the dev split."""
    max_tokens: int = Field(4, gt=0, le=16)
    """Longest generated cue, in tokens."""
    beam: int = Field(4, gt=0)
    """Beam width of the search over cue tokens."""
    expand: int = Field(8, gt=0)
    """Next tokens tried per beam and step (the likeliest over the examples)."""
    examples: int = Field(16, gt=0)
    """Training examples the LM reads (balanced over labels, in split order); fewer if the split is smaller."""


def base_template(fields: set[str]) -> str:
    """What the LM writes around: the example's text field(s), as the default template renders them."""
    return "{{ text }}\n{{ text_pair }}" if "text_pair" in fields else "{{ text }}"


def check_candidate(template: str, example: dict, fields: set[str]) -> str | None:
    """Why `template` is refused (None: accepted). Compiled and rendered in the sandbox, like any user template."""
    try:
        compile_template(template, "generated template")
        used = template_fields(template, "generated template")
        render(template, example, key="generated template")
    except ConfigError as err:
        return str(err)
    if used != fields:
        return f"reads fields {sorted(used)}, not exactly {sorted(fields)} (a generated template may not read other fields)"
    return None


def balanced_examples(train: list[dict], labels: list[str], n: int) -> list[dict]:
    """Up to n training examples, classes in turn, each class in split order (deterministic)."""
    by_label = [[e for e in train if str(e["label"]) == label] for label in labels]
    out: list[dict] = []
    for row in range(max((len(b) for b in by_label), default=0)):
        out += [b[row] for b in by_label if row < len(b)]
    return out[:n]


class CueSearch:
    """Beam search over cue tokens (module docstring), on one causal LM and a few training examples."""

    def __init__(self, model, tokenizer, examples: list[dict], base: str, labels: list[str],
                 verbalizer: dict[str, list[str]], settings: TemplateGeneration):
        self.model, self.tokenizer, self.settings = model, tokenizer, settings
        bos = bos_to_add(tokenizer)
        self.inputs = [bos + self.ids(render(base, e, key="generated template")) for e in examples]
        self.gold = torch.tensor([labels.index(str(e["label"])) for e in examples])
        self.verbalizer, self.labels = verbalizer, labels
        self.special = set(tokenizer.all_special_ids)
        self.anchor = self.inputs[0][len(bos):]  # a real input: cue tokens are decoded after it (module docstring)

    def ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def decode(self, cue: list[int]) -> str:
        """The cue's text as it reads after an input: WordPiece drops a token's leading space when decoded
        alone, so decode input + cue and cut the input off (alone only if that is not a clean cut)."""
        head, full = self.tokenizer.decode(self.anchor), self.tokenizer.decode(self.anchor + cue)
        return full[len(head):] if full.startswith(head) else self.tokenizer.decode(cue)

    def next_logprobs(self, cue: list[int]) -> torch.Tensor:
        """(N, V) log p(next token | x_i + cue), one right-padded batch."""
        rows = [x + cue for x in self.inputs]
        width = max(len(r) for r in rows)
        ids = torch.zeros(len(rows), width, dtype=torch.long)  # (N, T)
        mask = torch.zeros_like(ids)
        for i, row in enumerate(rows):
            ids[i, : len(row)], mask[i, : len(row)] = torch.tensor(row), 1
        device = next(self.model.parameters()).device
        with torch.inference_mode():
            logits = self.model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float().cpu()
        last = logits[torch.arange(len(rows)), mask.sum(1) - 1]  # (N, V) at each row's last real token
        return torch.log_softmax(last, dim=-1)

    def label_term(self, cue_text: str, logprobs: torch.Tensor) -> float:
        """1/N Σ_i log softmax over labels (first token of each label's first word) at y_i."""
        firsts = [self.ids(with_delimiter("x" + cue_text, self.verbalizer[label][0]))[0] for label in self.labels]
        z = logprobs[:, firsts]  # (N, L)
        return float(torch.log_softmax(z, dim=-1)[torch.arange(len(self.gold)), self.gold].mean())

    def run(self) -> list[dict]:
        """Every cue the beam visited, {cue, tokens, score, fluency, label}, best score first (one per text)."""
        s = self.settings
        beams = [([], 0.0)]  # (cue tokens, fluency so far)
        found: dict[str, dict] = {}
        for step in range(s.max_tokens + 1):
            grown = []
            for cue, fluency in beams:
                logprobs = self.next_logprobs(cue)  # (N, V)
                text = self.decode(cue)
                if cue and text.strip() and text not in found:
                    label = self.label_term(text, logprobs)
                    found[text] = {"cue": text, "tokens": cue, "score": fluency + label, "fluency": fluency, "label": label}
                if step == s.max_tokens:
                    continue
                mean = logprobs.mean(0)  # (V,)
                mean[list(self.special)] = -np.inf
                for token in torch.topk(mean, s.expand).indices.tolist():
                    grown.append((cue + [token], fluency + float(mean[token])))
            beams = sorted(grown, key=lambda b: -b[1])[: s.beam]
        return sorted(found.values(), key=lambda r: -r["score"])


def generate_templates(model, tokenizer, train: list[dict], labels: list[str], verbalizer: dict[str, list[str]],
                       settings: TemplateGeneration) -> dict:
    """{"kept": [template, ...], "candidates": [{template, score, ..., rejected?}]} from the training split only."""
    if not train:
        raise ConfigError("generate_templates needs training examples (data.train, or data.k_shot)")
    fields = set(train[0])
    base = base_template(fields)
    used = template_fields(base)
    examples = balanced_examples(train, labels, settings.examples)
    cues = CueSearch(model, tokenizer, examples, base, labels, verbalizer, settings).run()
    candidates, kept = [], []
    for cue in cues:
        template = base + cue["cue"]
        reason = check_candidate(template, examples[0], used)
        record = {"template": template, **{k: round(cue[k], 4) for k in ("score", "fluency", "label")}}
        if reason is not None:
            record["rejected"] = reason
        elif len(kept) < settings.top_n:
            kept.append(template)
        candidates.append(record)
    return {"kept": kept, "candidates": candidates, "examples": len(examples)}
