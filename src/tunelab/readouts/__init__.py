"""How a label is read out of a model — the second of the questions every strategy answers (DESIGN.md).

One file per read-out, each registered with one `@register(...)` line (see registry.py): `head`
(a new classification head, pooling cls | mean), `verbalizer` (template + verbalizer scoring of the
LM's own head) and `generation` (the continuation is the answer). Each declares the pretrained LM
head it needs and the pairing key model changes pair with (`head`, `lm`).
`classification.py` encodes a classification head's inputs.
"""

from tunelab.readouts.registry import PAIRINGS, ReadoutInfo, all_readouts, get_readout, pairing_of, register

__all__ = ["PAIRINGS", "ReadoutInfo", "all_readouts", "get_readout", "pairing_of", "register"]
