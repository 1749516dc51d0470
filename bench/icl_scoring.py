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

What is timed: tunelab's `PromptEngine.predict` (render, tokenise, forward passes) against lm-eval's
`lm.loglikelihood` (tokenise, forward passes) — engine against engine, model loading excluded;
lm-eval's whole `simple_evaluate` (dataset, few-shot contexts, metrics) is reported beside it.
Wall-clock and CPU seconds are both recorded: on a machine busy with other work, `--rounds R`
alternates the two systems over R slices so that both see the same load.

    .venv/bin/pip install -e '.[bench]'                          # lm-eval==0.4.13
    .venv/bin/python bench/icl_scoring.py --limit 400 --rounds 4 --threads 1   # a few minutes
    .venv/bin/python bench/icl_scoring.py --rounds 8 --threads 1               # all 1,821 sentences, ~15 min

One thread per process keeps the timing honest when other processes share the cores (OpenMP
threads spin-wait for each other when oversubscribed, which slows small forward passes most).
Each round re-runs tunelab's few-shot prefix once (~140 tokens), a small cost against tunelab.
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


class Timer:
    """Accumulated wall-clock and CPU seconds over several timed blocks."""

    def __init__(self):
        self.seconds = self.cpu_seconds = 0.0

    def __enter__(self):
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.seconds += time.perf_counter() - self._wall
        self.cpu_seconds += time.process_time() - self._cpu


def tunelab_scorer(model_dir: str, demos: list[dict], batch_size: int):
    """predict(rows) -> (predictions, scores) through `PromptEngine`, as the few_shot strategy scores."""
    from transformers import AutoModelForCausalLM

    from tunelab.prompts.engine import PromptEngine
    from tunelab.prompts.plan import PromptPlan
    from tunelab.models import load_tokenizer
    from tunelab.prompts import PromptSettings

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    prompt = PromptSettings(template=TEMPLATE, use_chat_template=False).model_dump(mode="json")
    plan = PromptPlan("classification", prompt, LABELS, {label: [" " + label] for label in LABELS}, demonstrations=demos, k=len(demos))
    engine = PromptEngine(load_tokenizer(model_dir), model, max_length=8192, batch_size=batch_size)

    def predict(rows: list[dict]):
        outputs = engine.predict(plan, rows)
        return [o["prediction"] for o in outputs], [[o["scores"][label] for label in LABELS] for o in outputs]

    return predict, engine.stats


def lm_eval_scorer(model_dir: str, batch_size: int, k: int, tasks_dir: str):
    """evaluate(doc indices) -> (predictions, scores, first prompt, seconds in lm.loglikelihood)."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    task_yaml = (HERE / "lm_eval_sst2_icl.yaml").read_text(encoding="utf-8").replace("__DATASETS__", str(DATASETS))
    (Path(tasks_dir) / "tunelab_sst2_icl.yaml").write_text(task_yaml, encoding="utf-8")
    lm = HFLM(pretrained=model_dir, dtype="float32", batch_size=batch_size, device="cpu")
    manager = TaskManager(include_path=tasks_dir)
    scoring = Timer()  # lm-eval's engine alone: tokenising and forward passes, as tunelab's predict
    loglikelihood = lm.loglikelihood

    def timed_loglikelihood(*args, **kwargs):
        with scoring:
            return loglikelihood(*args, **kwargs)

    lm.loglikelihood = timed_loglikelihood

    def evaluate(indices: list[int]):
        out = lm_eval.simple_evaluate(model=lm, tasks=["tunelab_sst2_icl"], task_manager=manager, num_fewshot=k,
                                      samples={"tunelab_sst2_icl": indices}, log_samples=True, random_seed=0,
                                      fewshot_random_seed=0)
        samples = sorted(out["samples"]["tunelab_sst2_icl"], key=lambda s: s["doc_id"])
        scores = [[float(r[0]) for r in s["filtered_resps"]] for s in samples]
        return [LABELS[int(np.argmax(row))] for row in scores], scores, samples[0]["arguments"][0][0]

    return evaluate, scoring


def summary(n: int, timer: Timer, predictions: list[str], gold: list[str]) -> dict:
    return {"examples_per_second": n / timer.seconds, "seconds": timer.seconds, "cpu_seconds": timer.cpu_seconds,
            "examples_per_cpu_second": n / timer.cpu_seconds,
            "accuracy": float(np.mean([p == g for p, g in zip(predictions, gold)]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="Score only the first N test sentences.")
    parser.add_argument("--k", type=int, default=4, help="Demonstrations (the first k training sentences).")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=1, help="Alternate the systems over this many slices (busy machines).")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice).")
    parser.add_argument("--out", type=Path, default=None, help="JSON file (default bench/results/icl_scoring_n<N>.json).")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from tunelab.models import embedded_path

    model_dir = str(embedded_path("smollm2-135m"))
    test = read_jsonl(DATASETS / "sst2" / "test.jsonl", args.limit)
    demos = read_jsonl(DATASETS / "sst2" / "train.jsonl", args.k)
    n, gold = len(test), [row["label"] for row in test]

    ours_timer, theirs_total = Timer(), Timer()
    ours, theirs = ([], []), ([], [])
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tasks_dir:
        predict, stats = tunelab_scorer(model_dir, demos, args.batch_size)
        evaluate, theirs_timer = lm_eval_scorer(model_dir, args.batch_size, args.k, tasks_dir)
        # Rounds alternate the two systems over the same slices, so that other processes on the
        # machine slow both alike; the load average and CPU seconds say how busy it was.
        bounds = np.linspace(0, n, args.rounds + 1).astype(int)
        for start, end in zip(bounds[:-1], bounds[1:]):
            with ours_timer:
                predictions, scores = predict(test[start:end])
            ours[0].extend(predictions), ours[1].extend(scores)
            with theirs_total:
                predictions, scores, first_prompt = evaluate(list(range(start, end)))
            theirs[0].extend(predictions), theirs[1].extend(scores)
    load_after = os.getloadavg()[0]
    if len(theirs[0]) != n:
        raise SystemExit(f"lm-eval scored {len(theirs[0])} examples, tunelab {n}")

    same = float(np.mean([a == b for a, b in zip(ours[0], theirs[0])]))
    diff = float(np.abs(np.array(ours[1]) - np.array(theirs[1])).max())
    lm_eval_result = summary(n, theirs_timer, theirs[0], gold)
    lm_eval_result.update(total_seconds=theirs_total.seconds, total_examples_per_second=n / theirs_total.seconds,
                          version=lm_eval_version())
    result = {
        "task": "sst2 test", "examples": n, "k": args.k, "model": "smollm2-135m (fp32)", "batch_size": args.batch_size,
        "rounds": args.rounds, "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(), "load_average_1min": [load_before, load_after],
        "tunelab": {**summary(n, ours_timer, ours[0], gold), "forward_passes": stats.forward_passes,
                    "tokens_processed": stats.tokens_processed, "padding_tokens": stats.padding_tokens,
                    "prefix_tokens": stats.prefix_tokens},
        "lm_eval": lm_eval_result,
        "speedup": theirs_timer.seconds / ours_timer.seconds,
        "speedup_cpu_time": theirs_timer.cpu_seconds / ours_timer.cpu_seconds,
        "speedup_vs_lm_eval_total": theirs_total.seconds / ours_timer.seconds,
        "identical_predictions": same,
        "max_abs_logprob_difference": diff,
        "lm_eval_first_prompt": first_prompt,
    }
    out = args.out or HERE / "results" / f"icl_scoring_n{n}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"SST-2 test, {n} examples, {args.k}-shot, smollm2-135m fp32, {torch.get_num_threads()} threads, batch {args.batch_size}")
    for name, r in (("tunelab", result["tunelab"]), ("lm-eval", result["lm_eval"])):
        print(f"  {name:8}: {r['examples_per_second']:7.2f} examples/s ({r['examples_per_cpu_second']:.2f} per CPU second)  "
              f"accuracy {r['accuracy']:.4f}")
    print(f"  lm-eval including task building: {result['lm_eval']['total_examples_per_second']:.2f} examples/s")
    print(f"  speed-up {result['speedup']:.1f}x wall-clock, {result['speedup_cpu_time']:.1f}x in CPU time, "
          f"{result['speedup_vs_lm_eval_total']:.1f}x against lm-eval's whole run (load average {load_before:.1f} -> "
          f"{load_after:.1f} on {os.cpu_count()} cores)")
    print(f"  identical predictions {100 * same:.2f}%, max |Δ log-prob| {diff:.2e}")
    print(f"  written to {out}")


def lm_eval_version() -> str:
    from importlib.metadata import version

    return version("lm_eval")


if __name__ == "__main__":
    main()
