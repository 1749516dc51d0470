"""Adversarial training on the input embeddings (FGM, PGD, FreeLB): the perturbation's norm, the loss
it raises, training with it under every kind of read-out, with R-Drop, across two processes, in a
sweep, and bad settings refused with exit 2 naming the key and line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import yaml

from conftest import cpu_only_env, experiment_yaml, tiny_bert_config
from tunelab.cli import main
from tunelab.config import AdversarialConfig, TrainConfig
from tunelab.training.adversarial import adversarial_loss, input_embeddings, shifted, with_adversarial

PET_PROMPT = {"template": "Review: {{ text }}\nSentiment:", "verbalizer": {"negative": "bad", "positive": "good"}}


def _model_and_batch(bert_tokenizer):
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    model = BertForSequenceClassification(tiny_bert_config(num_labels=2, hidden_dropout_prob=0.0,
                                                           attention_probs_dropout_prob=0.0))
    enc = bert_tokenizer(["good fine great film", "bad awful", "a dull and poor plot"], padding=True, return_tensors="pt")
    return model, {**enc, "labels": torch.tensor([1, 0, 0])}


def _recorder(model, batch):
    """loss_at for `adversarial_loss`, recording each pass's deltas and loss."""
    passes = []

    def loss_at(deltas):
        with shifted(input_embeddings(model), deltas) as shift:
            out = model(**batch)
        passes.append((shift.used, out.loss.detach()))
        return out.loss, out, shift.used

    return loss_at, passes


def _norms(delta):
    return delta.detach().flatten(1).norm(dim=1)


@pytest.mark.parametrize("method", ["fgm", "pgd", "freelb"])
def test_perturbation_has_the_configured_norm_and_raises_the_loss(bert_tokenizer, method):
    model, batch = _model_and_batch(bert_tokenizer)
    model.train()
    settings = AdversarialConfig(method=method, epsilon=0.5, steps=None if method == "fgm" else 3)
    loss_at, passes = _recorder(model, batch)
    total, _ = adversarial_loss(loss_at, settings)
    clean = passes[0][1]
    assert len(passes) == (2 if method == "fgm" else 4)  # the clean pass + one per ascent step
    assert torch.count_nonzero(passes[0][0][0]) == 0  # the clean pass adds zeros (the probe)
    for deltas, loss in passes[1:]:
        norms = _norms(deltas[0])
        if method == "fgm":
            assert torch.allclose(norms, torch.full_like(norms, 0.5), atol=1e-5)  # ‖δ‖ = ε per example
        assert (norms <= 0.5 + 1e-5).all()  # PGD/FreeLB: inside the ε-ball
        assert loss > clean  # the ascent raises the loss
    expected = passes[-1][1] if method != "freelb" else sum(l for _, l in passes[1:]) / 3
    assert torch.allclose(total.detach(), clean + expected, atol=1e-5)


def test_pgd_reaches_the_ball_edge_and_climbs_further_than_one_small_step(bert_tokenizer):
    model, batch = _model_and_batch(bert_tokenizer)
    loss_at, passes = _recorder(model, batch)
    adversarial_loss(loss_at, AdversarialConfig(method="pgd", epsilon=1.0, steps=4, step_size=0.5))
    assert torch.allclose(_norms(passes[-1][0][0]), torch.ones(3), atol=1e-4)  # 4 × 0.5 > ε: projected onto it
    assert passes[-1][1] > passes[1][1]  # later steps climb higher than the first


def test_embeddings_stay_untouched_and_frozen_embeddings_still_get_a_perturbation(bert_tokenizer):
    model, batch = _model_and_batch(bert_tokenizer)
    embedding = input_embeddings(model)
    embedding.weight.requires_grad_(False)  # as under LoRA, head, bitfit
    before = embedding.weight.clone()
    loss_at, passes = _recorder(model, batch)
    total, _ = adversarial_loss(loss_at, AdversarialConfig(epsilon=0.3))
    total.backward()
    assert torch.equal(embedding.weight, before) and embedding.weight.grad is None
    assert torch.allclose(_norms(passes[1][0][0]), torch.full((3,), 0.3), atol=1e-5)
    assert model.classifier.weight.grad is not None


def test_the_trainer_loss_is_clean_plus_adversarial_and_evaluation_stays_clean(tmp_path, bert_tokenizer):
    from transformers import Trainer

    from tunelab.train import training_arguments

    cfg = TrainConfig(progress_bar=False, log_to=[], adversarial={"method": "fgm", "epsilon": 0.5})
    assert with_adversarial(Trainer, None) is Trainer
    model, batch = _model_and_batch(bert_tokenizer)
    trainer = with_adversarial(Trainer, cfg.adversarial)(model=model, args=training_arguments(cfg, tmp_path, has_dev=False))
    model.train()
    loss = trainer.compute_loss(model, dict(batch))
    loss_at, _ = _recorder(model, batch)
    expected, _ = adversarial_loss(loss_at, cfg.adversarial)
    assert torch.allclose(loss, expected, atol=1e-5)
    model.eval()
    with torch.no_grad():
        assert torch.allclose(trainer.compute_loss(model, dict(batch)), model(**batch).loss)


def _run(tmp_path, model_dir, data, strategy, name, **sections):
    exp = experiment_yaml(tmp_path / f"{name}.yaml", model_dir, data, strategy, **sections)
    assert main(["run", str(exp), "--out", str(tmp_path / name)]) == 0
    return json.loads((tmp_path / name / "metrics.json").read_text())


ADVERSARIAL = {"epochs": 1, "adversarial": {"method": "fgm", "epsilon": 0.5}}


@pytest.mark.parametrize("strategy", [{"name": "head"}, {"name": "lora", "r": 4}])
def test_fgm_trains_head_and_lora(tmp_path, tiny_bert_dir, tiny_sentiment, strategy):
    metrics = _run(tmp_path, tiny_bert_dir, tiny_sentiment, strategy, strategy["name"], train=ADVERSARIAL)
    assert "accuracy" in metrics["test"] and "accuracy" in metrics["perturbed"]


def test_pgd_trains_pet_with_lora_and_freelb_with_rdrop(tmp_path, tiny_llama_dir, tiny_bert_dir, tiny_sentiment):
    _run(tmp_path, tiny_llama_dir, tiny_sentiment, {"name": "pet", "train": "lora"}, "pet", prompt=PET_PROMPT,
         train={"epochs": 1, "adversarial": {"method": "pgd", "epsilon": 0.5, "steps": 2}})
    _run(tmp_path, tiny_bert_dir, tiny_sentiment, {"name": "head"}, "rdrop",
         train={"epochs": 1, "rdrop_alpha": 1.0, "label_smoothing": 0.1, "dropout": {"hidden": 0.2},
                "adversarial": {"method": "freelb", "epsilon": 0.5, "steps": 2}})


def test_fgm_and_rdrop_compose_in_one_loss(tmp_path, bert_tokenizer):
    """R-Drop's compute_loss runs inside each adversarial pass: clean R-Drop loss + perturbed R-Drop loss."""
    from transformers import BertForSequenceClassification

    from tunelab.train import training_arguments
    from tunelab.training.regularization import regularized_loss, trainer_class

    cfg = TrainConfig(rdrop_alpha=1.0, progress_bar=False, log_to=[], adversarial={"epsilon": 0.5})
    torch.manual_seed(0)
    model = BertForSequenceClassification(tiny_bert_config(num_labels=2, hidden_dropout_prob=0.3))
    trainer = with_adversarial(trainer_class(cfg), cfg.adversarial)(model=model, args=training_arguments(cfg, tmp_path, has_dev=False))
    _, batch = _model_and_batch(bert_tokenizer)
    model.train()
    torch.manual_seed(3)
    loss = trainer.compute_loss(model, dict(batch))
    stacked = {k: torch.cat([v, v]) for k, v in batch.items() if k != "labels"}

    def loss_at(deltas):
        with shifted(input_embeddings(model), deltas) as shift:
            logits = model(**stacked).logits
        return regularized_loss(logits, batch["labels"], rdrop_alpha=1.0), None, shift.used

    torch.manual_seed(3)
    expected, _ = adversarial_loss(loss_at, cfg.adversarial)
    assert torch.allclose(loss, expected, atol=1e-5)


@pytest.mark.parametrize("adversarial, key", [({"method": "vat"}, "method"), ({"epsilon": 0}, "epsilon"),
                                              ({"method": "pgd", "steps": 0}, "steps"), ({"epsilonn": 1}, "epsilonn"),
                                              ({"method": "fgm", "steps": 5}, "")])
def test_bad_settings_exit_2_naming_the_key_and_line(tmp_path, tiny_bert_dir, tiny_sentiment, capsys, adversarial, key):
    exp = experiment_yaml(tmp_path / "e.yaml", tiny_bert_dir, tiny_sentiment, {"name": "head"},
                          train={"adversarial": adversarial})
    assert main(["run", str(exp), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert f"train.adversarial{'.' + key if key else ''}" in err and "line" in err and "Traceback" not in err
    if not key:
        assert "fgm takes one step of size epsilon and no steps" in err
    assert not (tmp_path / "r").exists()


def test_a_strategy_that_trains_nothing_refuses_it_before_weights_load(tmp_path, tiny_llama_dir, tiny_sentiment,
                                                                      capsys, monkeypatch):
    import tunelab.methods.icl as icl

    monkeypatch.setattr(icl.InContextStrategy, "fit", lambda *a, **k: pytest.fail("weights loaded"))
    exp = experiment_yaml(tmp_path / "z.yaml", tiny_llama_dir, tiny_sentiment, {"name": "zero_shot"}, prompt=PET_PROMPT,
                          train={"adversarial": {"method": "fgm"}})
    assert main(["run", str(exp), "--out", str(tmp_path / "z")]) == 2
    err = capsys.readouterr().err
    assert "train.adversarial" in err and "line" in err and "zero_shot trains nothing" in err
    # in a sweep: refused where it was set, before any cell runs
    raw = yaml.safe_load(exp.read_text())
    raw["train"].pop("adversarial")
    raw["sweep"] = {"strategies": ["head", {"name": "zero_shot", "train": {"adversarial": {"epsilon": 0.5}}}]}
    exp.write_text(yaml.safe_dump(raw, sort_keys=False))
    assert main(["compare", str(exp), "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "line" in err and "zero_shot trains nothing" in err and not (tmp_path / "s").exists()


def test_a_sweep_with_an_adversarial_axis_resumes_like_any_other(tmp_path, tiny_bert_dir, tiny_sentiment, capsys):
    exp = experiment_yaml(tmp_path / "s.yaml", tiny_bert_dir, tiny_sentiment, {"name": "head"}, train={"epochs": 1})
    raw = yaml.safe_load(exp.read_text())
    raw["sweep"] = {"isolation": "none", "strategies": [
        "head", {"name": "head", "id": "head-fgm", "search": {"train.adversarial.epsilon": [0.1, 1.0]}}]}
    exp.write_text(yaml.safe_dump(raw, sort_keys=False))
    out = tmp_path / "sweep"
    assert main(["compare", str(exp), "--out", str(out)]) == 0
    first = capsys.readouterr().out
    cells = sorted(p.name for p in out.iterdir() if (p / "metrics.json").is_file())
    assert cells == ["head-fgm-kall-epsilon=0.1-seed42", "head-fgm-kall-epsilon=1-seed42", "head-kall-seed42"]
    config = yaml.safe_load((out / "head-fgm-kall-epsilon=1-seed42" / "config.yaml").read_text())
    assert config["train"]["adversarial"] == {"method": "fgm", "epsilon": 1.0, "steps": None, "step_size": None}
    stamps = {c: (out / c / "metrics.json").stat().st_mtime_ns for c in cells}
    assert main(["compare", str(exp), "--out", str(out)]) == 0
    assert {c: (out / c / "metrics.json").stat().st_mtime_ns for c in cells} == stamps  # nothing re-ran
    assert "perturbed" in first


def test_pgd_across_two_processes(tmp_path, tiny_bert_dir, tiny_sentiment):
    """torchrun, two ranks over gloo: both ran the same steps, and rank 0 wrote clean and perturbed metrics."""
    exp = experiment_yaml(tmp_path / "ddp.yaml", tiny_bert_dir, tiny_sentiment, {"name": "lora", "r": 4},
                          train={"epochs": 2, "batch_size": 4, "gradient_accumulation_steps": 2,
                                 "adversarial": {"method": "pgd", "epsilon": 0.5, "steps": 2}})
    out = tmp_path / "two"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
               "-m", "tunelab.cli", "run", str(exp), "--out", str(out)]
    done = subprocess.run(command, env=cpu_only_env(OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    costs = json.loads((out / "costs.json").read_text())
    assert costs["world_size"] == 2 and sorted(r["rank"] for r in costs["ranks"]) == [0, 1]
    assert len({r["pid"] for r in costs["ranks"]}) == 2 and costs["ranks"][0]["steps"] == costs["ranks"][1]["steps"] > 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert "accuracy" in metrics["test"] and "accuracy" in metrics["perturbed"]


def test_sft_trains_with_fgm_and_its_generation_task_gets_no_perturbed_score(tmp_path, tiny_llama_dir):
    from test_regularization import _sft_experiment

    exp = _sft_experiment(tmp_path, tiny_llama_dir, {"epochs": 1, "adversarial": {"method": "fgm", "epsilon": 0.5}})
    assert main(["run", str(exp), "--out", str(tmp_path / "sft")]) == 0
    assert "perturbed" not in json.loads((tmp_path / "sft" / "metrics.json").read_text())  # classification only
