"""CUDA checks, run where a GPU is present (skipped on CPU-only machines such as CI).

Tests elsewhere see no GPU (conftest hides it) because they compare outputs bit for bit on the
CPU; these check the same code paths on a GPU: device placement, bf16 mixed-precision training,
artifacts that reload, prompt scoring that agrees with the CPU.
"""

import json

import pytest
import torch

from conftest import experiment_yaml
from tunelab.cli import main

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.mark.parametrize("strategy", [{"name": "bitfit"}, {"name": "full"}, {"name": "lora", "r": 4}])
def test_run_and_evaluate_on_cuda(tmp_path, tiny_bert_dir, tiny_sentiment, capsys, strategy):
    exp = experiment_yaml(tmp_path / "e.yaml", tiny_bert_dir, tiny_sentiment, strategy)
    run_dir = tmp_path / "run"
    assert main(["run", str(exp), "--out", str(run_dir)]) == 0
    costs = json.loads((run_dir / "costs.json").read_text())
    assert costs["device"].startswith("cuda") and costs["peak_memory_mb"] > 0
    stored = json.loads((run_dir / "metrics.json").read_text())["test"]
    capsys.readouterr()
    assert main(["evaluate", str(run_dir), "--data", tiny_sentiment["test"]]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"] == pytest.approx(stored, abs=1e-6)


def test_training_uses_bf16_autocast_with_fp32_weights(tmp_path):
    from tunelab.config import TrainConfig
    from tunelab.train import training_arguments

    args = training_arguments(TrainConfig(), tmp_path, has_dev=False, device=torch.device("cuda"))
    assert args.bf16 == torch.cuda.is_bf16_supported() and not args.use_cpu
    off = training_arguments(TrainConfig(mixed_precision="no"), tmp_path, has_dev=False, device=torch.device("cuda"))
    assert not off.bf16


def test_scoring_on_cuda_agrees_with_cpu(tiny_llama_lm, bert_tokenizer):
    from tunelab.scoring import ScoreRequest, score_requests

    requests = [ScoreRequest("Review: a fine film.\nSentiment:", [" positive", " negative"]),
                ScoreRequest("Review: dull\nSentiment:", [" good", " very bad indeed"])]
    cpu = score_requests(tiny_llama_lm, bert_tokenizer, requests, shared_prefix="Rate it.\n")
    gpu = score_requests(tiny_llama_lm.to("cuda"), bert_tokenizer, requests, shared_prefix="Rate it.\n")
    for cpu_row, gpu_row in zip(cpu, gpu):
        for a, b in zip(cpu_row, gpu_row):
            assert abs(a.logprob_sum - b.logprob_sum) < 1e-3
