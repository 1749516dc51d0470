"""How a label is read out of a model: today the classification head's inputs (`classification`).

Template + verbalizer scoring lives in `tunelab.scoring` and `methods/pet_model.py`, generation in
`tunelab.generation`; they are where DESIGN.md's `readouts/` is going.
"""
