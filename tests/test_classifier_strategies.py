"""head / full / partial / bitfit on tiny random models: one step changes exactly the intended
parameters; the saved artifact reproduces the outputs."""

from pathlib import Path

import pytest
import torch

from tunelab.config import validate_experiment
from tunelab.errors import ConfigError
from tunelab.methods import get_strategy
from tunelab.methods.selection import layer_index


def make_strategy(model_dir: Path, name: str, **settings):
    config = validate_experiment({"model": {"name": str(model_dir)}, "strategy": {"name": name, **settings}})
    info = get_strategy(name)
    return info.cls(info.cls.Settings(**settings), config, ["negative", "positive"])


def expected_trainable(name: str, settings: dict, param: str, head: set) -> bool:
    """The rule each strategy promises, written independently of its implementation."""
    if param in head or param.split(".")[0] in ("classifier", "score"):
        return True
    index = layer_index(param)
    if name == "full":
        return True
    if name == "head":
        return False
    if name == "bitfit":
        return param.endswith(".bias")
    if "freeze_layers" in settings:
        return index is not None and index >= settings["freeze_layers"] or (index is None and "embed" not in param)
    if "train_top_layers" in settings:
        return index is not None and index >= 2 - settings["train_top_layers"] or (index is None and "embed" not in param)
    return any(part in param for part in ("attention.output.dense", "self_attn.o_proj"))


CASES = [
    ("head", {}), ("full", {}), ("bitfit", {}),
    ("partial", {"freeze_layers": 1}), ("partial", {"train_top_layers": 1}),
    ("partial", {"train_modules": ["*attention.output.dense*", "*self_attn.o_proj*"]}),
]


@pytest.mark.parametrize("model_fixture", ["tiny_bert_dir", "tiny_llama_dir"])
@pytest.mark.parametrize("name,settings", CASES)
def test_one_step_changes_exactly_the_intended_parameters(request, model_fixture, name, settings):
    strategy = make_strategy(request.getfixturevalue(model_fixture), name, **settings)
    loaded = strategy.load_base()
    model = strategy.prepare(loaded)
    head = set(loaded.missing_keys)
    for param_name, param in model.named_parameters():
        assert param.requires_grad == expected_trainable(name, settings, param_name, head), param_name
    if model_fixture == "tiny_llama_dir" and name == "bitfit":
        assert {n for n, p in model.named_parameters() if p.requires_grad} == head  # Llama has no biases
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    one_step(model)
    for param_name, param in model.named_parameters():
        changed = not torch.equal(before[param_name], param.detach())
        if not param.requires_grad:
            assert not changed, f"{param_name} is frozen but changed"
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters() if p.requires_grad)


def one_step(model) -> None:
    model.train()
    torch.manual_seed(1)
    input_ids = torch.randint(1000, 2000, (4, 9))
    loss = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), labels=torch.tensor([0, 1, 0, 1])).loss
    loss.backward()
    torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0).step()


@pytest.mark.parametrize("model_fixture", ["tiny_bert_dir", "tiny_llama_dir"])
@pytest.mark.parametrize("name,settings", CASES[:4])
def test_saved_artifact_reproduces_outputs(request, tmp_path, model_fixture, name, settings):
    strategy = make_strategy(request.getfixturevalue(model_fixture), name, **settings)
    loaded = strategy.load_base()
    model = strategy.prepare(loaded)
    one_step(model)
    strategy.save_artifact(model, tmp_path, loaded)
    reloaded = strategy.load(tmp_path)
    input_ids = torch.randint(1000, 2000, (3, 7))
    model.eval()
    with torch.inference_mode():
        expected = model(input_ids=input_ids).logits
        actual = reloaded.model(input_ids=input_ids).logits
    assert torch.allclose(expected, actual, atol=1e-6)


def test_delta_artifact_is_small(tmp_path, tiny_bert_dir):
    strategy = make_strategy(tiny_bert_dir, "bitfit")
    loaded = strategy.load_base()
    model = strategy.prepare(loaded)
    strategy.save_artifact(model, tmp_path, loaded)
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / "delta.safetensors"))
    assert saved and all(k.endswith(".bias") or k.startswith("classifier") for k in saved)


@pytest.mark.parametrize("settings,message", [
    ({"freeze_layers": 5}, "only 2 layers"),
    ({"train_top_layers": 3}, "only 2 layers"),
    ({"train_modules": ["*nothing_matches*"]}, "match no parameter"),
])
def test_partial_bad_settings(tiny_bert_dir, settings, message):
    strategy = make_strategy(tiny_bert_dir, "partial", **settings)
    with pytest.raises(ConfigError, match=message):
        strategy.prepare(strategy.load_base())


def test_partial_needs_exactly_one_rule():
    from pydantic import ValidationError

    from tunelab.methods.partial import PartialSettings

    with pytest.raises(ValidationError, match="exactly one"):
        PartialSettings(freeze_layers=1, train_top_layers=1)
