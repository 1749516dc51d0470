"""Read-outs register here by name: adding one means one file and one `@register(...)` line.

A read-out is the second question every strategy answers (DESIGN.md): how a label (or an answer)
is read out of the model. Each declares

* `pairing`: the key model changes pair with (`head`: a new classification head; `lm`: the
  pretrained LM head, which both `verbalizer` and `generation` read), see
  `tunelab.model_changes.registry`;
* `lm_heads`: the pretrained LM head the model must have (`tunelab.model_facts.lm_head`:
  `causal_lm`, `masked_lm`; empty: any model, the read-out brings its own head);
* a `check(experiment, strategy)` that refuses a model without it from its config alone, before
  any weight loads.

A strategy is a model change × a read-out × a training recipe.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tunelab.plugins import import_package_modules, unknown_entry

# The pairing keys model changes declare, and how messages name them.
PAIRINGS = {
    "head": "a classification-head read-out",
    "lm": "an LM read-out (template + verbalizer scoring, or generated text)",
}
LM_HEAD_WORDS = {"causal_lm": "a causal LM head (decoder)", "masked_lm": "a masked LM head (encoder)"}


@dataclass(frozen=True)
class ReadoutInfo:
    name: str
    description: str
    pairing: str
    """The key model changes pair with (`PAIRINGS`)."""
    lm_heads: tuple[str, ...]
    """Pretrained LM heads that serve (model_facts.lm_head values); empty: any model."""
    used_by: str
    """The strategies that read labels this way, in words (for `tunelab strategies`)."""
    readout: object

    @property
    def needs(self) -> str:
        """The model it needs, in words."""
        if not self.lm_heads:
            return "any model (encoder or decoder)"
        return " or ".join(LM_HEAD_WORDS[kind] for kind in self.lm_heads)

    def check(self, experiment, strategy: str) -> None:
        """Refuse a model without what this read-out needs, from its config (no weights)."""
        self.readout.check(experiment, strategy)


REGISTRY: dict[str, ReadoutInfo] = {}


def register(name: str, description: str, pairing: str, lm_heads: tuple[str, ...] = (), used_by: str = ""):
    """Class decorator: `@register("verbalizer", "...", pairing="lm", lm_heads=("causal_lm", "masked_lm"))`."""
    if pairing not in PAIRINGS:
        raise ValueError(f"unknown pairing '{pairing}'; known: {sorted(PAIRINGS)}")
    unknown = set(lm_heads) - set(LM_HEAD_WORDS)
    if unknown:
        raise ValueError(f"unknown LM heads {sorted(unknown)}; known: {sorted(LM_HEAD_WORDS)}")

    def decorate(cls):
        REGISTRY[name] = ReadoutInfo(name, description, pairing, tuple(lm_heads), used_by, cls())
        cls.readout_name = name
        return cls

    return decorate


def load_all() -> None:
    import_package_modules("tunelab.readouts", Path(__file__).parent)


def get_readout(name: str) -> ReadoutInfo:
    load_all()
    if name not in REGISTRY:
        raise unknown_entry("read-out", name, sorted(REGISTRY))
    return REGISTRY[name]


def all_readouts() -> list[ReadoutInfo]:
    """Every read-out, by pairing key (head first), then name."""
    load_all()
    order = list(PAIRINGS)
    return sorted(REGISTRY.values(), key=lambda info: (order.index(info.pairing), info.name))


def pairing_of(name: str) -> str:
    """The pairing key of a read-out or of a pairing key itself (`verbalizer` -> `lm`, `lm` -> `lm`)."""
    return name if name in PAIRINGS else get_readout(name).pairing
