"""Benchmark: tunelab training throughput, model FLOPs utilisation, and the tutorial baseline.

1. Peak: the best fp32 `torch.matmul` rate on 2048³ and 4096³ products, measured in this run.
2. Throughput rows (ROWS: model × strategy): tunelab's real training path (`prepare` → the
   strategy's `fit` → `train_model`, HF Trainer with dynamic padding and length-grouped batches),
   batch 8, on compute-bound 128-token inputs made of consecutive SST-2 training sentences joined
   and truncated at 128 tokens (`--inputs sentences` uses single SST-2 sentences instead). Time is
   tunelab's own `train_seconds` (costs.json: `trainer.train()` minus evaluation; no dev split here).
   Two FLOP counts per token:
   - `6N`: 6 × all parameters, the issue's formula. For a strategy that freezes weights it is an
     upper bound of the work done, and N includes embeddings (a lookup, not a matrix product).
   - `useful`: N = parameters outside embedding tables; 2N forward, + 2N for the backward pass to
     the activations when anything below the head trains, + 2 × trainable such parameters for their
     weight gradients. `full` → 6N; `bitfit` on BERT → ≈4N (biases sit in every layer); `bitfit`
     on Llama (no biases: only the head trains) → 2N. Attention's T² terms (≈4% at 128 tokens) are
     left out of both.
   MFU = achieved GFLOP/s ÷ the measured peak (the higher of the readings at start and end).
   A reference row trains smollm2-135m fully in a plain PyTorch loop (no Trainer, no tunelab) on the
   same batches: the gap between it and tunelab's row is what tunelab's path costs.
3. Baseline: a plain HF Trainer as tutorials write it (`padding="max_length", max_length=512`,
   batch 8) against tunelab on the same SST-2 training sentences, one epoch, full fine-tuning;
   ratio of examples/s.
Targets: tunelab ≥ 3× the baseline's examples/s; `full` on smollm2-135m ≥ 55% of the peak (6N).

    .venv/bin/python bench/train_throughput.py            # ~3 min on 2 idle cores
    .venv/bin/python bench/train_throughput.py --quick    # ~1 min: fewer examples, rougher figures

On a machine that other jobs share, every figure drops (2-thread training suffers far more from
lost time slices than one big matrix product, so MFU too); the script warns when the load average
exceeds the core count. The plain-loop row still tells tunelab's overhead apart from the machine's.

Prints a table; writes bench/results/train_throughput.json. Needs SST-2 from `--datasets`
(default: $TUNELAB_DATASETS or ../shared/datasets); exits with a message when it is absent.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
DEFAULT_DATASETS = Path(os.environ.get("TUNELAB_DATASETS", HERE.parents[1] / "shared" / "datasets"))
LABELS = ["negative", "positive"]
BATCH = 8
BLOCK_TOKENS = 128
BLOCK_CHARS = 900  # comfortably over 128 tokens for both tokenizers, so every block is truncated to exactly 128

# One line per row: (model, strategy, strategy settings, learning rate). Add a strategy here.
ROWS = [
    ("smollm2-135m", "full", {}, 1e-5),
    ("smollm2-135m", "bitfit", {}, 1e-3),
    ("smollm2-135m", "lora", {}, 1e-3),  # r=8 on q/k/v/o + gate/up/down
    ("smollm2-135m", "adapter", {}, 1e-3),  # Pfeiffer, reduction 16
    ("smollm2-135m", "prompt_tuning", {}, 1e-2),  # 20 virtual tokens (not counted in tokens/s)
    ("minilm-l6", "full", {}, 1e-4),
    ("minilm-l6", "bitfit", {}, 1e-3),
]

REFERENCE_ROWS = [("smollm2-135m", 1e-5)]  # the same full fine-tuning in a plain PyTorch loop


# ---------------------------------------------------------------------------------------------
# Peak


def matmul_peak(sizes=(2048, 4096), repeats: int = 3) -> dict:
    """Best fp32 GFLOP/s of an n×n by n×n product (2n³ FLOPs), after one warm-up product."""
    rates = {}
    for n in sizes:
        a, b = torch.randn(n, n), torch.randn(n, n)
        torch.matmul(a, b)
        best = min(timed(lambda: torch.matmul(a, b)) for _ in range(repeats))
        rates[n] = 2 * n**3 / best / 1e9
    return {"gflops": max(rates.values()), "by_size": rates, "repeats": repeats}


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


# ---------------------------------------------------------------------------------------------
# Data


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def blocks(sentences: list[dict], count: int) -> list[dict]:
    """`count` examples of consecutive sentences joined until ≥ BLOCK_CHARS (label of the first)."""
    out, index = [], 0
    while len(out) < count:
        first, text = sentences[index % len(sentences)], ""
        while len(text) < BLOCK_CHARS:
            text += " " + sentences[index % len(sentences)]["text"]
            index += 1
        out.append({"text": text.strip(), "label": first["label"]})
    return out


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return str(path)


# ---------------------------------------------------------------------------------------------
# tunelab's own path


def tunelab_fit(model: str, strategy: dict, train: list[dict], max_length: int, lr: float, workdir: Path):
    """Train through `prepare` + the strategy's `fit`; return (costs, trained model)."""
    from tunelab.config import validate_experiment
    from tunelab.run import prepare

    raw = {
        "name": "bench",
        "model": {"name": model, "max_length": max_length},
        "task": {"type": "classification", "label_names": LABELS},
        "data": {"train": write_jsonl(workdir / "train.jsonl", train), "test": write_jsonl(workdir / "test.jsonl", train[:1])},
        "strategy": strategy,
        "train": {"learning_rate": lr, "epochs": 1, "batch_size": BATCH, "eval_strategy": "no",
                  "progress_bar": False, "log_to": [], "logging_steps": 1000},
        "metrics": ["accuracy"],
    }
    prepared = prepare(validate_experiment(raw, source="bench"))
    predictor, costs = prepared.strategy.fit(prepared.splits, workdir / "run")
    return costs, getattr(predictor, "model", None)


def flop_counts(model: torch.nn.Module | None, costs: dict) -> dict:
    """FLOPs per training token: the issue's 6·N (all parameters) and the `useful` count (docstring)."""
    counts = {"six_n": 6.0 * costs["total_params"]}
    if model is None:
        return counts
    embedding_ids = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    params = [(n, p) for n, p in model.named_parameters() if id(p) not in embedding_ids]
    dense = sum(p.numel() for _, p in params)
    trainable = sum(p.numel() for _, p in params if p.requires_grad)
    head = ("classifier", "score")
    body_trains = any(p.requires_grad and not n.split(".")[0] in head for n, p in model.named_parameters())
    counts["useful"] = 2.0 * dense + (2.0 * dense if body_trains else 0.0) + 2.0 * trainable
    counts["dense_params"] = dense
    return counts


def throughput_row(model: str, strategy: str, settings: dict, lr: float, train: list[dict]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        costs, trained = tunelab_fit(model, {"name": strategy, **settings}, train, BLOCK_TOKENS, lr, Path(tmp))
    counts = flop_counts(trained, costs)
    tokens_per_s = costs["train_tokens"] / costs["train_seconds"]
    row = {
        "model": model, "strategy": strategy, "settings": settings,
        "trainable_percent": costs["trainable_percent"], "total_params": costs["total_params"],
        "examples": len(train), "tokens": costs["train_tokens"], "steps": costs["steps"],
        "train_seconds": costs["train_seconds"], "tokens_per_s": tokens_per_s,
        "examples_per_s": costs["train_examples_per_second"],
        "gflops_6n": tokens_per_s * counts["six_n"] / 1e9,
    }
    if "useful" in counts:
        row["gflops_useful"] = tokens_per_s * counts["useful"] / 1e9
        row["useful_flops_per_token"] = counts["useful"]
    return row


def add_utilisation(rows: list[dict], peak: float) -> None:
    for row in rows:
        row["mfu_6n"] = row["gflops_6n"] / peak
        if "gflops_useful" in row:
            row["mfu_useful"] = row["gflops_useful"] / peak


def reference_row(model_name: str, lr: float, train: list[dict]) -> dict:
    """The same full fine-tuning in a plain PyTorch loop (no Trainer, no tunelab): what this model
    gets from this machine right now, so a gap to tunelab's row is tunelab's (or the Trainer's)."""
    from transformers import DataCollatorWithPadding

    from tunelab.models import count_parameters, load_model
    from tunelab.readouts.classification import encode_classification

    torch.manual_seed(0)
    loaded = load_model(model_name, "classification", len(LABELS), label_names=LABELS)
    model = loaded.model.train()
    features = encode_classification(loaded.tokenizer, train, LABELS, BLOCK_TOKENS)
    collate = DataCollatorWithPadding(loaded.tokenizer)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, fused=True)  # the Trainer's default, adamw_torch_fused
    started = time.perf_counter()
    for start in range(0, len(features), BATCH):
        batch = collate(features[start : start + BATCH])
        model(**batch).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    seconds = time.perf_counter() - started
    tokens = sum(len(f["input_ids"]) for f in features)
    total = count_parameters(model)[1]
    gflops = tokens / seconds * 6.0 * total / 1e9
    return {"model": model_name, "strategy": "full (plain loop)", "trainable_percent": 100.0, "total_params": total,
            "examples": len(train), "tokens": tokens, "train_seconds": seconds, "tokens_per_s": tokens / seconds,
            "examples_per_s": len(train) / seconds, "gflops_6n": gflops}


# ---------------------------------------------------------------------------------------------
# The tutorial baseline


def baseline_examples_per_s(model_name: str, train: list[dict], lr: float, workdir: Path) -> dict:
    """A plain HF Trainer as tutorials write it: every sentence padded to 512 tokens."""
    from datasets import Dataset, disable_progress_bars
    from transformers import AutoModelForSequenceClassification, Trainer, TrainingArguments

    from tunelab.models import load_tokenizer, resolve_model_path

    disable_progress_bars()
    path = resolve_model_path(model_name)
    tokenizer = load_tokenizer(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2, dtype=torch.float32)
    model.config.pad_token_id = tokenizer.pad_token_id
    dataset = Dataset.from_list([{"text": r["text"], "label": LABELS.index(r["label"])} for r in train])
    dataset = dataset.map(lambda b: tokenizer(b["text"], padding="max_length", max_length=512, truncation=True), batched=True)
    args = TrainingArguments(output_dir=str(workdir), per_device_train_batch_size=BATCH, num_train_epochs=1,
                             learning_rate=lr, save_strategy="no", report_to=[], use_cpu=True,
                             disable_tqdm=True, logging_steps=1000, seed=42)
    trainer = Trainer(model=model, args=args, train_dataset=dataset.remove_columns(["text"]))
    seconds = timed(trainer.train)
    return {"examples_per_s": len(train) / seconds, "train_seconds": seconds, "tokens_per_example": 512}


def baseline_comparison(model_name: str, train: list[dict], lr: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        base = baseline_examples_per_s(model_name, train, lr, Path(tmp) / "baseline")
    with tempfile.TemporaryDirectory() as tmp:
        costs, _ = tunelab_fit(model_name, {"name": "full"}, train, 512, lr, Path(tmp))
    ours = costs["train_examples_per_second"]
    return {
        "model": model_name, "strategy": "full", "examples": len(train),
        "baseline_examples_per_s": base["examples_per_s"], "baseline_seconds": base["train_seconds"],
        "tunelab_examples_per_s": ours, "tunelab_seconds": costs["train_seconds"],
        "tunelab_tokens_per_example": costs["train_tokens"] / max(len(train), 1),
        "ratio": ours / base["examples_per_s"],
    }


# ---------------------------------------------------------------------------------------------
# Report


def print_report(result: dict) -> None:
    peak = result["peak"]
    sizes = ", ".join(f"{n}³ {g:.1f}" for n, g in peak["by_size"].items())
    print(f"\nfp32 matmul peak: {peak['gflops']:.1f} GFLOP/s ({sizes}); again at the end: "
          f"{result['peak_after']['gflops']:.1f}; MFU uses the higher, {result['peak_gflops']:.1f}; threads {result['threads']}; "
          f"load average {result['load_before']:.2f} → {result['load_after']:.2f} on {os.cpu_count()} cores")
    print(f"inputs: {result['inputs']}, batch {BATCH}\n")
    header = f"{'model':14} {'strategy':14} {'train%':>7} {'tok/s':>8} {'ex/s':>7} {'GF/s 6N':>8} {'MFU 6N':>7} {'GF/s use':>9} {'MFU use':>8}"
    print(header)
    print("-" * len(header))
    for r in result["rows"] + result["reference"]:
        useful = f"{r['gflops_useful']:9.1f} {100 * r['mfu_useful']:7.1f}%" if "mfu_useful" in r else f"{'-':>9} {'-':>8}"
        print(f"{r['model']:14} {r['strategy']:14} {r['trainable_percent']:6.2f}% {r['tokens_per_s']:8.1f} "
              f"{r['examples_per_s']:7.2f} {r['gflops_6n']:8.1f} {100 * r['mfu_6n']:6.1f}% {useful}")
    for b in result["baselines"]:
        print(f"\nbaseline ({b['model']}, {b['examples']} SST-2 sentences, 1 epoch, full): tutorial Trainer padded to 512 "
              f"{b['baseline_examples_per_s']:.2f} ex/s; tunelab {b['tunelab_examples_per_s']:.2f} ex/s "
              f"({b['tunelab_tokens_per_example']:.0f} tokens/example) → {b['ratio']:.1f}×  (target ≥ 3×)")
    target = next((r for r in result["rows"] if r["model"] == "smollm2-135m" and r["strategy"] == "full"), None)
    if target:
        print(f"smollm2-135m full: {100 * target['mfu_6n']:.1f}% of the measured peak by 6N (target ≥ 55%), "
              f"{100 * target.get('mfu_useful', float('nan')):.1f}% by the useful count")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=Path, default=DEFAULT_DATASETS, help="folder holding sst2/train.jsonl")
    parser.add_argument("--quick", action="store_true", help="fewer examples (a rough figure in ~2 minutes)")
    parser.add_argument("--examples", type=int, default=None, help="training examples per throughput row (default 64; quick 16)")
    parser.add_argument("--baseline-examples", type=int, default=None, help="SST-2 sentences for the baseline (default 128; quick 32)")
    parser.add_argument("--baseline-models", default="minilm-l6", help="comma-separated; '' skips the baseline")
    parser.add_argument("--only", default=None, help="comma-separated model:strategy rows to run, e.g. smollm2-135m:full")
    parser.add_argument("--inputs", choices=["blocks", "sentences"], default="blocks",
                        help=f"blocks: {BLOCK_TOKENS}-token runs of SST-2 text (compute-bound); sentences: single SST-2 sentences")
    parser.add_argument("--no-reference", dest="reference", action="store_false", help="skip the plain-PyTorch reference loop")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "train_throughput.json")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    sst2 = args.datasets / "sst2" / "train.jsonl"
    if not sst2.is_file():
        print(f"skipped: SST-2 not found at {sst2} (pass --datasets DIR or set TUNELAB_DATASETS)")
        return 0
    from tunelab.cli import quiet_libraries

    quiet_libraries()
    sentences = read_jsonl(sst2)
    n_rows = args.examples or (16 if args.quick else 64)
    n_base = args.baseline_examples or (32 if args.quick else 128)
    train = blocks(sentences, n_rows) if args.inputs == "blocks" else sentences[:n_rows]
    result = {"host": platform.node(), "torch": torch.__version__, "threads": torch.get_num_threads(),
              "load_before": os.getloadavg()[0], "batch": BATCH, "quick": args.quick,
              "inputs": f"{BLOCK_TOKENS}-token blocks of SST-2 text" if args.inputs == "blocks" else "SST-2 sentences"}
    if result["load_before"] > (os.cpu_count() or 1):
        print(f"warning: load average {result['load_before']:.1f} on {os.cpu_count()} cores: other processes share the CPU, "
              "so every figure below is low; compare tunelab with the plain-loop row, or run on an idle machine")
    result["peak"] = matmul_peak()
    only = set(args.only.split(",")) if args.only else None
    result["rows"] = [
        throughput_row(model, strategy, settings, lr, train)
        for model, strategy, settings, lr in ROWS if only is None or f"{model}:{strategy}" in only
    ]
    result["reference"] = [reference_row(m, lr, train) for m, lr in REFERENCE_ROWS
                           if args.reference and (only is None or f"{m}:full" in only)]
    models = [m for m in args.baseline_models.split(",") if m]
    result["baselines"] = [baseline_comparison(m, sentences[:n_base], 1e-4) for m in models]
    result["peak_after"] = matmul_peak()  # a second reading shows whether the machine stayed as fast
    result["load_after"] = os.getloadavg()[0]
    # MFU against the best reading of the run: the conservative choice when the machine's speed drifts.
    result["peak_gflops"] = max(result["peak"]["gflops"], result["peak_after"]["gflops"])
    add_utilisation(result["rows"] + result["reference"], result["peak_gflops"])
    print_report(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
