"""Bottleneck adapters on tiny random BERT/Llama models: identity at init, counts, training, save/load."""

from __future__ import annotations

import json

import pytest
import torch
from pydantic import ValidationError

from tunelab.adapters import (
    AdapterSettings,
    Bottleneck,
    inject_adapters,
    load_adapters,
    mark_only_adapters_trainable,
    save_adapters,
)

MODELS = ["tiny_bert_cls", "tiny_llama_cls", "tiny_llama_lm"]
KINDS = ["houlsby", "pfeiffer"]
CASES = [(kind, model) for kind in KINDS for model in MODELS]
HEAD_PATTERNS = ("classifier", "score")


def _inputs(seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, 1000, (2, 8), generator=g)  # (B, T); no pad id 0, so Llama-cls reads the last token


def _logits(model, ids) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


def _train_step(model) -> None:
    model.train()
    ids = _inputs(seed=2)
    is_lm = "CausalLM" in type(model).__name__
    labels = ids if is_lm else torch.randint(0, 2, (ids.shape[0],), generator=torch.Generator().manual_seed(3))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model(input_ids=ids, labels=labels).loss.backward()
    opt.step()
    model.eval()


def _snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _head_params(model) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if n.split(".")[0] in HEAD_PATTERNS)


def _fresh_copy(model):
    # Same class, config and seed as the conftest fixtures: what a user reloading the base model gets.
    torch.manual_seed(0)
    return type(model)(model.config).eval()


@pytest.mark.parametrize("kind,model_name", CASES)
def test_fresh_adapters_leave_outputs_unchanged(kind, model_name, request):
    model = request.getfixturevalue(model_name)
    ids = _inputs()
    before = _logits(model, ids)
    inject_adapters(model, AdapterSettings(kind=kind))
    # Exact equality: a zero up-projection adds exactly 0.0 to every hidden state.
    assert torch.equal(_logits(model, ids), before)


@pytest.mark.parametrize("kind,model_name", CASES)
def test_trainable_parameter_count_is_analytic(kind, model_name, request):
    model = request.getfixturevalue(model_name)
    settings = AdapterSettings(kind=kind, reduction_factor=8)
    inject_adapters(model, settings)
    mark_only_adapters_trainable(model)
    cfg = model.config
    hidden, b = cfg.hidden_size, cfg.hidden_size // 8
    per_layer = 2 if kind == "houlsby" else 1
    expected = cfg.num_hidden_layers * per_layer * (2 * hidden * b + b + hidden) + _head_params(model)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == expected


@pytest.mark.parametrize("kind,model_name", CASES)
def test_one_step_changes_only_adapters_and_head(kind, model_name, request):
    model = request.getfixturevalue(model_name)
    inject_adapters(model, AdapterSettings(kind=kind))
    trainable = set(mark_only_adapters_trainable(model))
    before = _snapshot(model)
    _train_step(model)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed <= trainable, f"frozen tensors changed: {sorted(changed - trainable)}"
    # Every up-projection moves on step one; the down-projection gets no gradient yet (up is zero),
    # but AdamW's weight decay still moves its weight.
    assert {k for k in trainable if ".adapter.up." in k or ".adapter.down.weight" in k} <= changed
    heads = {k for k in trainable if k.split(".")[0] in HEAD_PATTERNS}
    assert heads <= changed and (heads or "CausalLM" in type(model).__name__)


@pytest.mark.parametrize("kind,model_name", CASES)
def test_save_load_reproduces_logits(kind, model_name, request, tmp_path):
    model = request.getfixturevalue(model_name)
    settings = AdapterSettings(kind=kind, non_linearity="gelu")
    names = inject_adapters(model, settings)
    trainable = mark_only_adapters_trainable(model)
    _train_step(model)
    save_adapters(model, tmp_path, settings)

    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["adapter_modules"] == names and config["settings"]["non_linearity"] == "gelu"
    from safetensors.torch import load_file

    assert set(load_file(str(tmp_path / "adapter_model.safetensors"))) == set(trainable)

    restored = load_adapters(_fresh_copy(model), tmp_path)
    ids = _inputs()
    diff = (_logits(restored, ids) - _logits(model, ids)).abs().max().item()
    assert diff < 1e-6


def test_load_rejects_weights_that_match_no_module(tiny_bert_cls, tmp_path):
    settings = AdapterSettings()
    inject_adapters(tiny_bert_cls, settings)
    mark_only_adapters_trainable(tiny_bert_cls)
    save_adapters(tiny_bert_cls, tmp_path, settings)
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(tmp_path / "adapter_model.safetensors"))
    tensors["bert.encoder.layer.9.output.dense.adapter.up.bias"] = torch.zeros(32)
    save_file(tensors, str(tmp_path / "adapter_model.safetensors"))
    with pytest.raises(ValueError, match="keys matching no module.*layer.9"):
        load_adapters(_fresh_copy(tiny_bert_cls), tmp_path)


def test_load_rejects_other_architecture(tiny_bert_cls, tiny_llama_cls, tmp_path):
    settings = AdapterSettings()
    inject_adapters(tiny_bert_cls, settings)
    save_adapters(tiny_bert_cls, tmp_path, settings)
    with pytest.raises(ValueError, match="different architecture"):
        load_adapters(tiny_llama_cls, tmp_path)


@pytest.mark.parametrize("kind", KINDS)
def test_unsupported_architecture_raises_clear_error(kind):
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=4, n_positions=64))
    with pytest.raises(ValueError, match=r"GPT2LMHeadModel.*'gpt2'.*BERT-style.*Llama-style"):
        inject_adapters(gpt2, AdapterSettings(kind=kind))


@pytest.mark.parametrize("model_name", MODELS)
def test_houlsby_has_twice_as_many_adapters_as_pfeiffer(model_name, request):
    model = request.getfixturevalue(model_name)
    pfeiffer = inject_adapters(_fresh_copy(model), AdapterSettings(kind="pfeiffer"))
    houlsby = inject_adapters(model, AdapterSettings(kind="houlsby"))
    assert len(pfeiffer) == model.config.num_hidden_layers
    assert len(houlsby) == 2 * len(pfeiffer)
    assert set(pfeiffer) < set(houlsby)  # pfeiffer's places are houlsby's feed-forward places


def test_adapters_survive_to_and_reject_double_injection(tiny_llama_cls):
    names = inject_adapters(tiny_llama_cls, AdapterSettings(kind="houlsby"))
    tiny_llama_cls.to(torch.float64)
    adapter = tiny_llama_cls.get_submodule(names[0])
    assert isinstance(adapter, Bottleneck) and adapter.up.weight.dtype == torch.float64
    assert _logits(tiny_llama_cls, _inputs()).dtype == torch.float64
    with pytest.raises(ValueError, match="already has an adapter"):
        inject_adapters(tiny_llama_cls, AdapterSettings())


def test_settings_reject_unknown_keys_and_bad_values():
    with pytest.raises(ValidationError, match="reduction"):
        AdapterSettings(reduction=4)
    with pytest.raises(ValidationError):
        AdapterSettings(reduction_factor=0)
    assert AdapterSettings(reduction_factor=1000).reduction_factor == 1000  # bottleneck clamps to 1


def test_bottleneck_is_at_least_one_wide(tiny_bert_cls):
    names = inject_adapters(tiny_bert_cls, AdapterSettings(reduction_factor=1000))
    assert tiny_bert_cls.get_submodule(names[0]).down.out_features == 1
