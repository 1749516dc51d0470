"""Benchmark: tunelab's prompt-scoring engine vs lm-evaluation-harness, 4-shot SST-2, smollm2-135m.

Both systems read the same prompt for every test sentence — the first four training sentences as
demonstrations (lm-eval's `first_n` sampler), each "Review: <text>\\nSentiment: <label>", blank
lines between blocks, then "Review: <test sentence>\\nSentiment:" — and compare the log-likelihoods
of " negative" and " positive". tunelab scores through `PromptEngine` (the `few_shot` strategy's
path: the four demonstrations are a shared prefix whose key/value cache is computed once);
lm-eval through `--model hf` with `pretrained=<converted smollm2 dir>,dtype=float32` and the task
in bench/lm_eval_sst2_icl.yaml. Prints examples/s of each and the share of identical predictions,
and writes the figures to bench/results/icl_scoring_n<N>.json. Target: >= 5x lm-eval's
examples/s with >= 99.5% identical predictions.

    .venv/bin/pip install -e '.[bench]'              # lm-eval==0.4.13
    .venv/bin/python bench/icl_scoring.py --limit 200  # the full test split takes ~15 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
DATASETS = Path(os.environ.get("TUNELAB_DATASETS", HERE.parents[1] / "shared" / "datasets"))
LABELS = ["negative", "positive"]
TEMPLATE = "Review: {{ text }}\nSentiment:"


def read_jsonl(path: Path, limit: int | None = None) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return rows[:limit] if limit else rows


def run_tunelab(model_dir: str, demos: list[dict], test: list[dict], batch_size: int) -> dict:
    from transformers import AutoModelForCausalLM

    from tunelab.methods.prompt_engine import PromptEngine
    from tunelab.methods.prompting import PromptPlan
    from tunelab.models import load_tokenizer
    from tunelab.prompts import PromptSettings

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    prompt = PromptSettings(template=TEMPLATE, use_chat_template=False).model_dump(mode="json")
    plan = PromptPlan("classification", prompt, LABELS, {label: [" " + label] for label in LABELS}, demonstrations=demos, k=len(demos))
    engine = PromptEngine(load_tokenizer(model_dir), model, max_length=8192, batch_size=batch_size)
    started, cpu = time.perf_counter(), time.process_time()
    outputs = engine.predict(plan, test)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
    return {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "predictions": [o["prediction"] for o in outputs],
        "scores": [[o["scores"][label] for label in LABELS] for o in outputs],
        "forward_passes": engine.stats.forward_passes,
        "tokens_processed": engine.stats.tokens_processed,
        "padding_tokens": engine.stats.padding_tokens,
        "prefix_tokens": engine.stats.prefix_tokens,
    }


def run_lm_eval(model_dir: str, limit: int | None, batch_size: int, k: int) -> dict:
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    with tempfile.TemporaryDirectory() as tasks_dir:
        task_yaml = (HERE / "lm_eval_sst2_icl.yaml").read_text(encoding="utf-8").replace("__DATASETS__", str(DATASETS))
        (Path(tasks_dir) / "tunelab_sst2_icl.yaml").write_text(task_yaml, encoding="utf-8")
        lm = HFLM(pretrained=model_dir, dtype="float32", batch_size=batch_size, device="cpu")
        started, cpu = time.perf_counter(), time.process_time()  # dataset, contexts, tokenising, scoring; not the model load
        out = lm_eval.simple_evaluate(model=lm, tasks=["tunelab_sst2_icl"], task_manager=TaskManager(include_path=tasks_dir),
                                      num_fewshot=k, limit=limit, log_samples=True, random_seed=0, fewshot_random_seed=0)
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
    samples = sorted(out["samples"]["tunelab_sst2_icl"], key=lambda s: s["doc_id"])
    scores = [[float(r[0]) for r in s["filtered_resps"]] for s in samples]
    return {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "predictions": [LABELS[int(np.argmax(row))] for row in scores],
        "scores": scores,
        "first_prompt": samples[0]["arguments"][0][0] if samples else "",
        "accuracy": out["results"]["tunelab_sst2_icl"].get("acc,none"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="Score only the first N test sentences.")
    parser.add_argument("--k", type=int, default=4, help="Demonstrations (the first k training sentences).")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice).")
    parser.add_argument("--out", type=Path, default=None, help="JSON file (default bench/results/icl_scoring_n<N>.json).")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from tunelab.models import embedded_path

    model_dir = str(embedded_path("smollm2-135m"))
    test = read_jsonl(DATASETS / "sst2" / "test.jsonl", args.limit)
    demos = read_jsonl(DATASETS / "sst2" / "train.jsonl", args.k)
    n = len(test)

    # Other processes on the machine slow both systems; the load average and CPU seconds say how much.
    load_before = os.getloadavg()[0]
    ours = run_tunelab(model_dir, demos, test, args.batch_size)
    theirs = run_lm_eval(model_dir, args.limit, args.batch_size, args.k)
    load_after = os.getloadavg()[0]
    if len(theirs["predictions"]) != n:
        raise SystemExit(f"lm-eval scored {len(theirs['predictions'])} examples, tunelab {n}")

    gold = [row["label"] for row in test]
    same = float(np.mean([a == b for a, b in zip(ours["predictions"], theirs["predictions"])]))
    diff = float(np.abs(np.array(ours["scores"]) - np.array(theirs["scores"])).max())
    result = {
        "task": "sst2 test", "examples": n, "k": args.k, "model": "smollm2-135m (fp32)", "batch_size": args.batch_size,
        "torch_threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(), "load_average_1min": [load_before, load_after],
        "tunelab": {"examples_per_second": n / ours["seconds"], "seconds": ours["seconds"], "cpu_seconds": ours["cpu_seconds"],
                    "accuracy": float(np.mean([p == g for p, g in zip(ours["predictions"], gold)])),
                    **{key: ours[key] for key in ("forward_passes", "tokens_processed", "padding_tokens", "prefix_tokens")}},
        "lm_eval": {"examples_per_second": n / theirs["seconds"], "seconds": theirs["seconds"], "cpu_seconds": theirs["cpu_seconds"],
                    "accuracy": float(np.mean([p == g for p, g in zip(theirs["predictions"], gold)])), "version": "0.4.13"},
        "speedup": theirs["seconds"] / ours["seconds"],
        "speedup_cpu_time": theirs["cpu_seconds"] / ours["cpu_seconds"],
        "identical_predictions": same,
        "max_abs_logprob_difference": diff,
        "lm_eval_first_prompt": theirs["first_prompt"],
    }
    out = args.out or HERE / "results" / f"icl_scoring_n{n}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"SST-2 test, {n} examples, {args.k}-shot, smollm2-135m fp32, {torch.get_num_threads()} threads")
    print(f"  tunelab : {result['tunelab']['examples_per_second']:7.2f} examples/s  accuracy {result['tunelab']['accuracy']:.4f}")
    print(f"  lm-eval : {result['lm_eval']['examples_per_second']:7.2f} examples/s  accuracy {result['lm_eval']['accuracy']:.4f}")
    print(f"  speed-up {result['speedup']:.1f}x wall-clock ({result['speedup_cpu_time']:.1f}x in CPU time; load average "
          f"{load_before:.1f} -> {load_after:.1f} on {os.cpu_count()} cores)")
    print(f"  identical predictions {100 * same:.2f}%, max |Δ log-prob| {diff:.2e}")
    print(f"  written to {out}")


if __name__ == "__main__":
    main()
