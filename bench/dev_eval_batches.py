"""Benchmark: one dev evaluation in the split's order against tunelab's length batches.

The Trainer evaluates dev after every epoch (30 times a MiniLM cell, 10 times a pet cell in
examples/lmbff_sst2.yaml). Under the LM-BFF protocol dev is 32 sentences: in the split's order and
`train.eval_batch_size` 32 that is one batch padded to its longest row. tunelab now evaluates dev in
`tunelab.training.dev_batches.length_batches` (longest first, at most 32 rows and 32 × median-length
padded tokens a batch). For each of LM-BFF's 5 seeds this draws 32 SST-2 training sentences and times
the forward passes of one dev evaluation both ways, as the Trainer runs them (the same collators,
inference mode):

- `minilm-l6` with a classification head (mean pooling), the input the sentence;
- `smollm2-135m` as `pet` reads it (PetModel: label logits at the answer position), the input the
  reference template "Review: {text}\\nSentiment:".

Figures: median seconds over the repeats of each way, their ratio, and the share of padded tokens
that are real. Prints a table; writes bench/results/dev_eval_batches.json.

    .venv/bin/python bench/dev_eval_batches.py             # ~2 min on 2 idle cores
    .venv/bin/python bench/dev_eval_batches.py --repeats 3

Needs SST-2 from `--datasets` (default: $TUNELAB_DATASETS or ../shared/datasets); exits with a
message when it is absent.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
DEFAULT_DATASETS = Path(os.environ.get("TUNELAB_DATASETS", HERE.parents[1] / "shared" / "datasets"))
SEEDS = [13, 21, 42, 87, 100]
DEV_SIZE = 32
EVAL_BATCH = 32  # train.eval_batch_size's default
TEMPLATE = "Review: {text}\nSentiment:"


def minilm_case():
    from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding

    from tunelab.models import load_tokenizer, resolve_model_path
    from tunelab.readouts.classification import encode_classification

    path = resolve_model_path("minilm-l6")
    tokenizer = load_tokenizer(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2).eval()
    collate = DataCollatorWithPadding(tokenizer)

    def features(sentences):
        rows = [{"text": s, "label": None} for s in sentences]
        return encode_classification(tokenizer, rows, ["negative", "positive"], 128)

    return model, collate, features


def smollm2_case():
    from transformers import AutoModelForCausalLM

    from tunelab.methods.pet_model import PetCollator, PetModel
    from tunelab.models import load_tokenizer, resolve_model_path

    path = resolve_model_path("smollm2-135m")
    tokenizer = load_tokenizer(path)
    lm = AutoModelForCausalLM.from_pretrained(path).eval()
    model = PetModel(lm, causal=True, words_per_label=[1, 1]).eval()
    words = [tokenizer(" negative", add_special_tokens=False)["input_ids"][0],
             tokenizer(" positive", add_special_tokens=False)["input_ids"][0]]
    collate = PetCollator(tokenizer.pad_token_id or 0)

    def features(sentences):
        out = []
        for s in sentences:
            ids = tokenizer(TEMPLATE.format(text=s), add_special_tokens=False)["input_ids"]
            out.append({"input_ids": ids, "attention_mask": [1] * len(ids), "answer_pos": len(ids) - 1, "word_ids": words})
        return out

    return model, collate, features


def time_batches(model, collate, features, batches, repeats: int) -> float:
    def once():
        with torch.inference_mode():
            for batch in batches:
                model(**collate([features[i] for i in batch]))

    once()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        once()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    from tunelab.training.dev_batches import length_batches

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=Path, default=DEFAULT_DATASETS)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    train = args.datasets / "sst2" / "train.jsonl"
    if not train.is_file():
        sys.exit(f"SST-2 not found under {args.datasets} (set --datasets or TUNELAB_DATASETS)")
    sentences = [json.loads(line)["text"] for line in train.open(encoding="utf-8") if line.strip()]
    rows = []
    for name, case in (("minilm-l6", minilm_case), ("smollm2-135m", smollm2_case)):
        model, collate, encode = case()
        for seed in SEEDS:
            features = encode(random.Random(seed).sample(sentences, DEV_SIZE))
            lengths = [len(f["input_ids"]) for f in features]
            in_order = [list(range(i, min(i + EVAL_BATCH, len(features)))) for i in range(0, len(features), EVAL_BATCH)]
            batched = length_batches(lengths, EVAL_BATCH)
            padded = lambda batches: sum(len(b) * max(lengths[i] for i in b) for b in batches)  # noqa: E731
            before = time_batches(model, collate, features, in_order, args.repeats)
            after = time_batches(model, collate, features, batched, args.repeats)
            rows.append({"model": name, "seed": seed, "in_order_s": before, "length_batches_s": after,
                         "speedup": before / after, "batches": len(batched),
                         "real_token_share_in_order": sum(lengths) / padded(in_order),
                         "real_token_share_length_batches": sum(lengths) / padded(batched)})
            r = rows[-1]
            print(f"{name:13s} seed {seed:3d}: in order {before:6.3f} s  length batches {after:6.3f} s "
                  f"({r['batches']} batches)  ×{r['speedup']:.2f}  real tokens {r['real_token_share_in_order']:.2f}"
                  f" → {r['real_token_share_length_batches']:.2f}")
    summary = {name: statistics.median(r["speedup"] for r in rows if r["model"] == name) for name in ("minilm-l6", "smollm2-135m")}
    print("median speed-up of one dev evaluation: " + ", ".join(f"{k} ×{v:.2f}" for k, v in summary.items()))
    out = HERE / "results" / "dev_eval_batches.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"threads": torch.get_num_threads(), "dev_size": DEV_SIZE, "eval_batch_size": EVAL_BATCH,
                               "repeats": args.repeats, "median_speedup": summary, "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
