"""Model changes (`tunelab.model_changes`) composed with both read-outs, through real runs on tiny
models: a change registered here, in the test file, runs under a head and under `pet`; `pet` trains
with bitfit, partial and bottleneck adapters and its runs reload through `tunelab evaluate`; a pair
that makes no sense exits 2 before any weight loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import experiment_yaml
from tunelab.cli import main
from tunelab.model_changes import all_model_changes, register
from tunelab.model_changes.delta import DeltaChange
from tunelab.model_changes.selection import freeze_all, head_of, unfreeze

PROMPT = {"template": "Review: {{ text }}\nSentiment:", "verbalizer": {"negative": " bad", "positive": " good"}}


@register("norms_only", "only the normalisation weights train (registered by a test)")
class NormsOnly(DeltaChange):
    def apply(self, loaded, settings, target):
        head = head_of(loaded, target)
        freeze_all(loaded.model)
        unfreeze(loaded.model, lambda name: "norm" in name or head(name))
        return loaded.model


def base_weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(model_dir / "model.safetensors"))


def run_and_evaluate(tmp_path, model_dir, data, strategy: dict, capsys, **sections) -> Path:
    """`tunelab run`, then `tunelab evaluate` on the test file: same metrics to the last digit."""
    exp = experiment_yaml(tmp_path / "exp.yaml", model_dir, data, strategy, train={"epochs": 1}, **sections)
    run_dir = tmp_path / "run"
    assert main(["run", str(exp), "--out", str(run_dir)]) == 0
    stored = json.loads((run_dir / "metrics.json").read_text())["test"]
    capsys.readouterr()
    assert main(["evaluate", str(run_dir), "--data", data["test"]]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"] == stored
    return run_dir


@pytest.mark.parametrize("strategy, sections", [
    ({"name": "classifier", "train": "norms_only"}, {}),
    ({"name": "pet", "train": "norms_only"}, {"prompt": PROMPT}),
])
def test_a_change_registered_in_a_test_file_runs_under_both_readouts(tmp_path, tiny_llama_dir, tiny_sentiment, capsys,
                                                                    strategy, sections):
    run_dir = run_and_evaluate(tmp_path, tiny_llama_dir, tiny_sentiment, strategy, capsys, **sections)
    delta, base = load_file(str(run_dir / "delta.safetensors")), base_weights(tiny_llama_dir)
    norms = {name for name in base if "norm" in name}
    head = {name for name in delta if name.startswith("score.")}
    assert set(delta) == norms | head  # the classification head only under the head read-out
    assert bool(head) == (strategy["name"] == "classifier")
    assert all(not torch.equal(delta[name], base[name]) for name in norms), "a trained norm did not move"
    costs = json.loads((run_dir / "costs.json").read_text())
    assert costs["trainable_params"] == sum(delta[name].numel() for name in delta)


def pet_run(tmp_path, model_dir, data, strategy: dict, monkeypatch, capsys):
    """A pet run whose LM is kept for inspection: (run_dir, weights before training, trained LM)."""
    from tunelab.methods.pet import PetStrategy

    captured = {}
    original = PetStrategy.wrap

    def spy(self, lm, plan):
        captured.setdefault("before", {n: p.detach().clone() for n, p in lm.named_parameters()})
        captured.setdefault("lm", lm)
        return original(self, lm, plan)

    monkeypatch.setattr(PetStrategy, "wrap", spy)
    run_dir = run_and_evaluate(tmp_path, model_dir, data, strategy, capsys, prompt=PROMPT)
    return run_dir, captured["before"], captured["lm"]


def moved(before: dict, lm) -> set[str]:
    return {n for n, p in lm.named_parameters() if n in before and not torch.equal(before[n], p.detach())}


def test_pet_with_bitfit_trains_only_biases_added_to_llama(tmp_path, tiny_llama_dir, tiny_sentiment, monkeypatch, capsys):
    strategy = {"name": "pet", "train": "bitfit", "delta": {"add_biases": True}}
    run_dir, before, lm = pet_run(tmp_path, tiny_llama_dir, tiny_sentiment, strategy, monkeypatch, capsys)
    biases = {n for n in before if n.endswith(".bias")}
    assert biases and biases == moved(before, lm)
    assert not any(n.endswith(".bias") for n in base_weights(tiny_llama_dir))  # Llama has none of its own
    assert set(load_file(str(run_dir / "delta.safetensors"))) == biases


def test_pet_with_partial_trains_only_the_upper_layer_and_the_final_norm(tmp_path, tiny_llama_dir, tiny_sentiment,
                                                                         monkeypatch, capsys):
    strategy = {"name": "pet", "train": "partial", "delta": {"freeze_layers": 1}}
    run_dir, before, lm = pet_run(tmp_path, tiny_llama_dir, tiny_sentiment, strategy, monkeypatch, capsys)
    intended = {n for n in before if n.startswith("model.layers.1.")} | {"model.norm.weight"}
    assert moved(before, lm) == intended  # embeddings (tied with the LM head) and layer 0 stay frozen
    assert set(load_file(str(run_dir / "delta.safetensors"))) == intended


@pytest.mark.parametrize("kind", ["pfeiffer", "houlsby"])
def test_pet_with_bottleneck_adapters_trains_only_the_adapters(tmp_path, tiny_llama_dir, tiny_sentiment, monkeypatch,
                                                               capsys, kind):
    strategy = {"name": "pet", "train": "adapter", "delta": {"kind": kind, "reduction_factor": 4}}
    run_dir, before, lm = pet_run(tmp_path, tiny_llama_dir, tiny_sentiment, strategy, monkeypatch, capsys)
    adapters = {n for n in before if ".adapter." in n}
    assert len(adapters) == 2 * 4 * (2 if kind == "houlsby" else 1)  # layers × adapters per layer × (down, up) × (w, b)
    assert moved(before, lm) == adapters
    saved = load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))
    assert set(saved) == adapters


def test_pet_with_adapters_on_a_masked_lm(tmp_path, bert_tokenizer, tiny_sentiment, monkeypatch, capsys):
    from transformers import BertForMaskedLM

    from conftest import save_tiny, tiny_bert_config

    torch.manual_seed(0)
    model_dir = save_tiny(BertForMaskedLM(tiny_bert_config()), bert_tokenizer, tmp_path / "tiny-bert-mlm")
    strategy = {"name": "pet", "train": "adapter"}
    prompt = {**PROMPT, "template": "{{ text }} It was {{ mask }}."}
    from tunelab.methods.pet import PetStrategy

    captured = {}
    original = PetStrategy.wrap
    monkeypatch.setattr(PetStrategy, "wrap", lambda self, lm, plan: captured.setdefault(
        "before", ({n: p.detach().clone() for n, p in lm.named_parameters()}, lm)) and original(self, lm, plan))
    run_and_evaluate(tmp_path, model_dir, tiny_sentiment, strategy, capsys, prompt=prompt)
    before, lm = captured["before"]
    assert moved(before, lm) == {n for n in before if ".adapter." in n} != set()


def refuse_weights(monkeypatch):
    import tunelab.methods.classifier
    import tunelab.models

    def refuse(*args, **kwargs):
        raise AssertionError("model weights were loaded before the error was found")

    monkeypatch.setattr(tunelab.models, "load_model", refuse)
    monkeypatch.setattr(tunelab.methods.classifier, "load_model", refuse)


@pytest.mark.parametrize("strategy, readout, works", [
    ({"name": "pet", "train": "head"}, "an LM read-out", "with 'pet' use train: adapter, bitfit, full"),
    ({"name": "classifier", "train": "lm_head"}, "a classification-head read-out", "with 'classifier' use train: adapter"),
])
def test_a_pair_that_makes_no_sense_exits_2_before_any_weight_loads(tmp_path, tiny_llama_dir, tiny_sentiment, capsys,
                                                                    monkeypatch, strategy, readout, works):
    refuse_weights(monkeypatch)
    exp = experiment_yaml(tmp_path / "exp.yaml", tiny_llama_dir, tiny_sentiment, strategy, prompt=PROMPT,
                          output_dir=str(tmp_path / "runs"))
    before = sorted(tmp_path.rglob("*"))
    capsys.readouterr()
    assert main(["run", str(exp)]) == 2
    err = capsys.readouterr().err
    assert f"{exp}, line " in err and f"reads labels with {readout}" in err and works in err
    assert f"model change '{strategy['train']}' pairs only with" in err and "Traceback" not in err
    assert sorted(tmp_path.rglob("*")) == before  # nothing written


def test_strategies_lists_the_model_changes_and_their_readouts(capsys):
    capsys.readouterr()
    assert main(["strategies"]) == 0
    out = capsys.readouterr().out
    for info in all_model_changes():
        assert info.name in out
    line = next(line for line in out.splitlines() if line.startswith("  lm_head "))
    assert "lm" in line and "head," not in line


def test_a_shorthand_strategy_is_its_model_change_under_the_classifier(tmp_path, tiny_bert_dir, tiny_sentiment):
    """`{name: bitfit}` and `{name: classifier, train: bitfit}`: the same run, to the last digit."""
    outputs = []
    for strategy in ({"name": "bitfit"}, {"name": "classifier", "train": "bitfit"},
                     {"name": "classifier", "train": "lora", "delta": {"r": 2}}):
        folder = tmp_path / strategy.get("train", strategy["name"]) / strategy["name"]
        folder.mkdir(parents=True)
        exp = experiment_yaml(folder / "exp.yaml", tiny_bert_dir, tiny_sentiment, strategy, train={"epochs": 1})
        assert main(["run", str(exp), "--out", str(folder / "run")]) == 0
        outputs.append((folder / "run" / "predictions.jsonl").read_text())
    assert outputs[0] == outputs[1]
    assert (tmp_path / "lora" / "classifier" / "run" / "adapter" / "adapter_config.json").is_file()


def test_sft_with_bottleneck_adapters_generates_the_same_text_after_reloading(tmp_path, tiny_llama_dir):
    from conftest import write_jsonl
    from tunelab.run import load_run

    rows = [{"text": f"item {i} is here", "summary": f"item {i}"} for i in range(4)]
    data = {split: str(write_jsonl(tmp_path / f"{split}.jsonl", rows)) for split in ("train", "dev", "test")}
    exp = experiment_yaml(tmp_path / "exp.yaml", tiny_llama_dir, data,
                          {"name": "sft", "train": "adapter", "generation": {"max_new_tokens": 4}},
                          task={"type": "generation", "target_field": "summary", "label_names": None},
                          prompt={"template": "Text: {{ text }}\nShort:"}, metrics=["rouge1"], train={"epochs": 1})
    run_dir = tmp_path / "run"
    assert main(["run", str(exp), "--out", str(run_dir)]) == 0
    assert (run_dir / "adapter" / "adapter_config.json").is_file()
    stored = [json.loads(line)["prediction"] for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    _, strategy, predictor = load_run(run_dir)
    assert [o["prediction"] for o in predictor.predict(rows)] == stored


def test_a_sweep_refuses_a_nonsensical_pair_before_any_cell_runs(tmp_path, tiny_llama_dir, tiny_sentiment, capsys,
                                                                 monkeypatch):
    import yaml

    refuse_weights(monkeypatch)
    exp = experiment_yaml(tmp_path / "exp.yaml", tiny_llama_dir, tiny_sentiment, {"name": "head"}, prompt=PROMPT,
                          output_dir=str(tmp_path / "runs"))
    raw = yaml.safe_load(exp.read_text())
    raw["sweep"] = {"isolation": "none", "seeds": [1],
                    "strategies": [{"name": "pet", "settings": {"train": "bitfit", "delta": {"add_biases": True}}},
                                   {"name": "pet", "id": "pet-head", "settings": {"train": "head"}}]}
    exp.write_text(yaml.safe_dump(raw, sort_keys=False))
    before = sorted(tmp_path.rglob("*"))
    capsys.readouterr()
    assert main(["compare", str(exp)]) == 2
    err = capsys.readouterr().err
    assert "sweep cell" in err and "model change 'head' pairs only with" in err and "with 'pet' use train:" in err
    assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.parametrize("module, soft", [("prompt_tuning", True), ("prefix_tuning", True), ("ptuning", True),
                                          ("ptuning_v2", True), ("lora", False), ("ia3", False)])
def test_soft_prompts_are_known_by_their_peft_type(module, soft):
    import importlib

    from peft import PeftType

    from tunelab.model_changes.peft import is_soft_prompt

    settings_class = next(v for k, v in vars(importlib.import_module(f"tunelab.methods.{module}")).items()
                          if k.endswith("Settings") and v.__module__.endswith(module))
    assert is_soft_prompt(settings_class()) is soft
    if soft:  # the declared type is the one its PEFT config carries
        from transformers import BertConfig

        config = settings_class().peft_config(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2), "SEQ_CLS")
        assert config.peft_type == PeftType(settings_class.peft_type)
