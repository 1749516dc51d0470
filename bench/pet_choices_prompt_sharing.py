"""Benchmark: a pet_choices training step with the prompt run once per question against once per choice.

`pet_choices` scores every choice of a question after its prompt. A row per choice (`ChoiceModel`, what soft
prompts still take) runs the prompt once for each choice; `SharedPromptChoiceModel` runs it once and copies its
KV cache to the choices, which run only their own tokens. This times one training step (forward, loss,
backward) of `smollm2-135m` on batches of 4 BIG-Bench date-understanding questions (six MM/DD/YYYY choices,
init's template), both ways, on the same batches, and checks the two losses agree.

Figures: median seconds a step of each way over the repeats, their ratio, and the tokens each feeds the model.
Prints a table; writes bench/results/pet_choices_prompt_sharing.json.

    .venv/bin/python bench/pet_choices_prompt_sharing.py            # ~2 min on 2 idle cores
    .venv/bin/python bench/pet_choices_prompt_sharing.py --repeats 5

Needs date_understanding from `--datasets` (default: $TUNELAB_DATASETS or ../shared/datasets); exits with a
message when it is absent.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
DEFAULT_DATASETS = Path(os.environ.get("TUNELAB_DATASETS", HERE.parents[1] / "shared" / "datasets"))
TEMPLATE = "Question: {{ text }}\nOptions: {{ choices | join(', ') }}\nAnswer:"
BATCH = 4


def strategy_for(train_file: Path):
    from tunelab.config import validate_experiment
    from tunelab.run import prepare

    raw = {"name": "bench", "model": {"name": "smollm2-135m", "max_length": 256},
           "task": {"type": "multiple_choice"}, "data": {"train": str(train_file), "test": str(train_file)},
           "strategy": {"name": "pet_choices", "train": "full"},
           "prompt": {"template": TEMPLATE, "use_chat_template": False}, "metrics": ["accuracy"]}
    prepared = prepare(validate_experiment(raw))
    return prepared.strategy, prepared.splits.train


def step_seconds(model, batch: dict) -> tuple[float, float]:
    """(seconds of one forward + backward, the loss)."""
    model.zero_grad()
    started = time.perf_counter()
    loss = model(**batch)["loss"]
    loss.backward()
    return time.perf_counter() - started, float(loss.detach())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", type=Path, default=DEFAULT_DATASETS)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    train_file = args.datasets / "date_understanding" / "train.jsonl"
    if not train_file.is_file():
        print(f"no {train_file}: pass --datasets or set TUNELAB_DATASETS", file=sys.stderr)
        return 2

    from tunelab.methods.choice_model import ChoiceCollator, ChoiceModel, SharedPromptChoiceModel

    strategy, questions = strategy_for(train_file)
    features = strategy.encode(strategy.plan(), questions, "train")
    batches = [features[i : i + BATCH] for i in range(0, len(features) - BATCH + 1, BATCH)]
    lm = strategy.load_base().model.train()
    ways = {"a row per choice": (ChoiceModel(lm), False), "prompt once, cache shared": (SharedPromptChoiceModel(lm), True)}
    results = {}
    for name, (model, shared) in ways.items():
        collate = ChoiceCollator(0, shared_prompt=shared)
        collated = [collate(batch) for batch in batches]
        tokens = sum(int(b["attention_mask"].sum()) + int(b.get("tail_mask", torch.zeros(1)).sum()) for b in collated)
        runs = [[step_seconds(model, batch) for batch in collated] for _ in range(args.repeats)]
        results[name] = {"median_step_seconds": statistics.median(s for run in runs for s, _ in run),
                         "tokens_fed": tokens, "losses": [loss for _, loss in runs[0]]}
    rows, shared = results["a row per choice"], results["prompt once, cache shared"]
    ratio = rows["median_step_seconds"] / shared["median_step_seconds"]
    agree = max(abs(a - b) for a, b in zip(rows["losses"], shared["losses"]))
    print(f"{len(batches)} batches of {BATCH} questions, {args.repeats} repeats, torch threads {torch.get_num_threads()}")
    print(f"{'way':28} {'s/step':>8} {'tokens fed':>11}")
    for name, result in results.items():
        print(f"{name:28} {result['median_step_seconds']:8.2f} {result['tokens_fed']:11d}")
    print(f"speed-up {ratio:.2f}x; largest loss difference {agree:.2e}")
    out = HERE / "results" / "pet_choices_prompt_sharing.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"batches": len(batches), "batch_questions": BATCH, "repeats": args.repeats,
                               "torch_threads": torch.get_num_threads(), "ways": results, "speed_up": ratio,
                               "largest_loss_difference": agree}, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
