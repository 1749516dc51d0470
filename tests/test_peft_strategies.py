"""Parameter-efficient strategies (lora and its DoRA/rsLoRA/PiSSA/OLoRA/LoRA+ settings, ia3, vera, oft,
ln_tuning, adalora, prompt/prefix/P-tuning v1+v2, adapter) on tiny random
BERT and Llama models: exactly the intended parameters train, save → load reproduces the outputs
(also through plain `peft.PeftModel.from_pretrained`), counts agree with PEFT, bad settings fail early."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch
import yaml

from conftest import experiment_yaml, save_tiny
from tunelab.config import validate_experiment
from tunelab.costs import parameter_costs
from tunelab.errors import ConfigError
from tunelab.export import export_merged
from tunelab.methods import get_strategy
from tunelab.model_changes.peft_common import ADAPTER_DIR, apply_peft

LABELS = ["negative", "positive"]
PEFT_STRATEGIES = ["lora", "ia3", "prompt_tuning", "prefix_tuning", "ptuning", "ptuning_v2", "vera", "ln_tuning", "oft", "adalora"]
# What each method adds, by parameter name: written independently of the implementation (PEFT's
# names: DoRA's magnitudes, VeRA's two scaling vectors, OFT's rotations, AdaLoRA's singular values).
MARKERS = {
    "lora": ("lora_A", "lora_B", "lora_magnitude_vector"), "ia3": ("ia3_l",), "adapter": (".adapter.",),
    "vera": ("vera_lambda_b", "vera_lambda_d"), "ln_tuning": ("ln_tuning_layers",), "oft": ("oft_R",),
    "adalora": ("lora_A", "lora_B", "lora_E"),
}
LORA_VARIANTS = [  # DoRA, PiSSA (exact and randomised SVD), OLoRA, LoRA+: settings of lora
    {"r": 2, "use_dora": True, "init": "gaussian"}, {"r": 2, "init": "pissa", "dropout": 0.0},
    {"r": 2, "init": "pissa_niter_2", "use_dora": True}, {"r": 2, "init": "olora", "use_rslora": True},
    {"r": 2, "loraplus_lr_ratio": 16.0},
]
NEW_METHODS = [("vera", {"r": 8}), ("ln_tuning", {}), ("oft", {"block_size": 8}), ("oft", {"block_size": 4, "coft": True}),
               ("adalora", {"init_r": 4, "target_r": 2})]
CASES = [
    ("lora", {}), ("lora", {"r": 2, "alpha": 4, "dropout": 0.0, "use_rslora": True}), ("ia3", {}),
    ("prompt_tuning", {"num_virtual_tokens": 4}), ("prefix_tuning", {"num_virtual_tokens": 4, "encoder_hidden_size": 8}),
    ("ptuning", {"num_virtual_tokens": 4}), ("ptuning", {"num_virtual_tokens": 4, "encoder": "lstm", "encoder_hidden_size": 8}),
    ("ptuning_v2", {"num_virtual_tokens": 4}), ("adapter", {"kind": "houlsby", "reduction_factor": 4, "non_linearity": "tanh"}),
    ("adapter", {"kind": "pfeiffer", "reduction_factor": 2, "non_linearity": "tanh"}),
    *[("lora", settings) for settings in LORA_VARIANTS], *NEW_METHODS,
]
# Trained and reloaded: the first case of each strategy (keyed by its name), and the LoRA variants
# that change the base weights or the optimizer (keyed lora:<init> / lora:plus).
ROUNDTRIP = {**{name: (name, settings) for name, settings in reversed(CASES)},
             "lora:pissa": ("lora", LORA_VARIANTS[1]), "lora:pissa_niter+dora": ("lora", LORA_VARIANTS[2]),
             "lora:olora": ("lora", LORA_VARIANTS[3]), "lora:plus": ("lora", LORA_VARIANTS[4])}
# Adapters use tanh here: in the top layer only the pooled token gets a gradient, and a 2-unit ReLU
# bottleneck at 4 positions can be dead at random init (then its weights rightly do not move).
MODELS = ["bert", "llama"]
PREFIX_METHODS = ("prefix_tuning", "ptuning_v2")


@functools.cache
def peft_prefixes_classifier(model_name: str) -> bool:
    """PEFT's own answer, from a real forward pass and independent of tunelab: does prefix tuning run
    on this sequence classifier with the installed transformers? (PEFT 0.21 refuses every one on
    transformers >= 5.24, which renamed `past_key_values` to `cache`.)"""
    from peft import PrefixTuningConfig, get_peft_model
    from transformers import BertForSequenceClassification, LlamaForSequenceClassification

    from conftest import tiny_bert_config, tiny_llama_config

    build = {"bert": (BertForSequenceClassification, tiny_bert_config), "llama": (LlamaForSequenceClassification, tiny_llama_config)}
    model_class, config = build[model_name]
    model = get_peft_model(model_class(config()), PrefixTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=2))
    try:
        model(input_ids=torch.tensor([[5, 6, 7]]))
    except ValueError:
        return False
    return True


def skip_where_peft_refuses(name: str, model_name: str) -> None:
    if name in PREFIX_METHODS and model_name in MODELS and not peft_prefixes_classifier(model_name):
        pytest.skip(f"PEFT refuses {name} on a {model_name} classifier with this transformers "
                    "(test_prefix_methods_are_refused_exactly_where_peft_refuses covers it)")
TEXTS = ["good fine great", "awful", "nice good lovely and rather long too, with many words in it", "bad poor"]


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory, bert_tokenizer, tiny_bert_dir, tiny_llama_dir) -> dict[str, Path]:
    """Base models without a classification head (it is new, as with real checkpoints), plus the
    tokenizer; DistilBERT stands for an architecture some methods do not support."""
    from transformers import DistilBertConfig, DistilBertModel

    torch.manual_seed(0)
    distil = DistilBertConfig(vocab_size=30522, dim=32, hidden_dim=64, n_layers=2, n_heads=4, max_position_embeddings=256)
    distil_dir = save_tiny(DistilBertModel(distil), bert_tokenizer, tmp_path_factory.mktemp("distilbert"))
    return {"bert": tiny_bert_dir, "llama": tiny_llama_dir, "distilbert": distil_dir}


@pytest.fixture(scope="module")
def data_files(tmp_path_factory) -> dict[str, str]:
    good = ["good fine great", "great nice good", "nice good lovely and a longer one", "lovely great fine"]
    bad = ["bad awful poor", "poor terrible bad", "awful bad dull, long and boring", "dull poor awful"]
    rows = [{"text": t, "label": "positive"} for t in good] + [{"text": t, "label": "negative"} for t in bad]
    root = tmp_path_factory.mktemp("data")
    files = {"train": rows, "dev": rows[::2], "test": rows[1::2]}
    for split, split_rows in files.items():
        (root / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in split_rows))
    return {split: str(root / f"{split}.jsonl") for split in files}


def experiment(model_dir: Path, name: str, settings: dict, data: dict | None = None, max_length: int = 32) -> dict:
    return {
        "name": "tiny", "model": {"name": str(model_dir), "max_length": max_length, "device": "cpu"},
        "task": {"type": "classification", "label_names": LABELS}, "data": data or {},
        "strategy": {"name": name, **settings}, "metrics": ["accuracy"],
        "train": {"epochs": 1, "batch_size": 4, "learning_rate": 1e-2, "progress_bar": False, "log_to": [], "seed": 1},
    }


def make_strategy(model_dir: Path, name: str, settings: dict, max_length: int = 32):
    config = validate_experiment(experiment(model_dir, name, settings, max_length=max_length))
    info = get_strategy(name)
    return info.cls(info.cls.Settings(**settings), config, LABELS)


def intended(name: str, param: str) -> bool:
    """PEFT's prompt encoders, LoRA/IA3/adapter weights, and the (copy of the) new head."""
    if name in MARKERS:
        method = any(marker in param for marker in MARKERS[name])
    else:
        method = param.startswith("prompt_encoder.")
    head = "modules_to_save" in param if name in PEFT_STRATEGIES else param.split(".")[0] in ("classifier", "score")
    return method or head


def batch(tokenizer, texts=TEXTS) -> dict:
    return dict(tokenizer(texts, padding=True, return_tensors="pt"))


def train_steps(model, inputs: dict, labels: torch.Tensor, steps: int = 2) -> None:
    """Two AdamW steps without weight decay: the first moves zero-initialised B/up matrices off zero,
    so in the second every intended tensor (e.g. LoRA's A) receives a gradient."""
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    for _ in range(steps):
        optimizer.zero_grad()
        model(**inputs, labels=labels).loss.backward()
        optimizer.step()
    model.eval()


def logits(model, inputs: dict) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(**inputs).logits


@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("name,settings", CASES)
def test_training_changes_exactly_the_intended_parameters(model_dirs, model_name, name, settings):
    skip_where_peft_refuses(name, model_name)
    strategy = make_strategy(model_dirs[model_name], name, settings)
    loaded = strategy.load_base()
    model = strategy.prepare(loaded)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    expected = {n for n, _ in model.named_parameters() if intended(name, n)}
    assert trainable == expected
    head = {n for n in expected if "modules_to_save" in n or n.split(".")[0] in ("classifier", "score")}
    assert head and expected - head  # both the method's own weights and the head train
    before = {n: t.detach().clone() for n, t in model.state_dict().items()}
    train_steps(model, batch(loaded.tokenizer), torch.tensor([1, 0, 1, 0]))
    changed = {n for n, t in model.state_dict().items() if not torch.equal(before[n], t)}
    assert changed == expected


@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("name", PREFIX_METHODS)
def test_prefix_methods_are_refused_exactly_where_peft_refuses(model_dirs, data_files, tmp_path, capsys, model_name, name):
    """Where PEFT runs prefix tuning on the classifier, tunelab trains it; where PEFT refuses it
    (transformers >= 5.24), `tunelab run` exits 2 with PEFT's reason before any weights load."""
    from tunelab.cli import main

    path = tmp_path / "exp.yaml"
    settings = {"num_virtual_tokens": 4}
    path.write_text(yaml.safe_dump(experiment(model_dirs[model_name], name, settings, data_files)))
    capsys.readouterr()
    code = main(["run", str(path), "--out", str(tmp_path / "run")])
    if peft_prefixes_classifier(model_name):
        assert code == 0 and (tmp_path / "run" / ADAPTER_DIR / "adapter_config.json").is_file()
    else:
        err = capsys.readouterr().err
        assert code == 2 and "Model does not support past key values" in err and "does not support the method" in err
        assert "Traceback" not in err and not list(tmp_path.glob("*run*"))


@pytest.mark.parametrize("model_name,targets", [
    ("bert", {"query", "value"}), ("llama", {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}),
])
def test_lora_default_targets_per_architecture(model_dirs, model_name, targets):
    strategy = make_strategy(model_dirs[model_name], "lora", {})
    model = strategy.prepare(strategy.load_base())
    adapted = {n.split(".lora_A")[0].rsplit(".", 1)[-1] for n, _ in model.named_parameters() if ".lora_A." in n}
    assert adapted == targets


@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("name,settings", [c for c in CASES if c[0] != "adapter"])
def test_trainable_counts_agree_with_peft(model_dirs, model_name, name, settings):
    skip_where_peft_refuses(name, model_name)
    strategy = make_strategy(model_dirs[model_name], name, settings)
    model = strategy.prepare(strategy.load_base())
    trainable, total = model.get_nb_trainable_parameters()
    costs = parameter_costs(model)
    assert (costs["trainable_params"], costs["total_params"]) == (trainable, total)


@pytest.mark.parametrize("model_name", MODELS)
def test_adapter_trainable_count_is_adapters_plus_head(model_dirs, model_name):
    from tunelab.adapters import Bottleneck

    strategy = make_strategy(model_dirs[model_name], "adapter", {"kind": "houlsby", "reduction_factor": 4})
    model = strategy.prepare(strategy.load_base())
    adapters = sum(p.numel() for m in model.modules() if isinstance(m, Bottleneck) for p in m.parameters())
    head = sum(p.numel() for n, p in model.named_parameters() if n.split(".")[0] in ("classifier", "score"))
    assert parameter_costs(model)["trainable_params"] == adapters + head
    layers, hidden, width = 2, 32, 32 // 4
    assert adapters == layers * 2 * (hidden * width + width + width * hidden + hidden)  # houlsby: 2 per layer


@pytest.fixture(scope="module")
def finished_runs(model_dirs, data_files, tmp_path_factory) -> dict:
    """One finished run directory per (strategy, model), trained through run.prepare/execute."""
    from tunelab.config import load_experiment
    from tunelab.run import execute, prepare

    runs = {}
    root = tmp_path_factory.mktemp("runs")
    for key, (name, settings) in ROUNDTRIP.items():
        for model_name in MODELS:
            if name in PREFIX_METHODS and not peft_prefixes_classifier(model_name):
                continue
            slug = key.replace(":", "-").replace("+", "-")
            path = root / f"{slug}-{model_name}.yaml"
            path.write_text(yaml.safe_dump(experiment(model_dirs[model_name], name, settings, data_files)))
            run_dir = root / f"{slug}-{model_name}"
            execute(prepare(load_experiment(path)), run_dir)
            runs[key, model_name] = run_dir
    return runs


@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("key", list(ROUNDTRIP))
def test_save_load_reproduces_outputs(finished_runs, model_dirs, key, model_name):
    skip_where_peft_refuses(ROUNDTRIP[key][0], model_name)
    from tunelab.run import load_run

    run_dir = finished_runs[key, model_name]
    _, _, predictor = load_run(run_dir)
    saved = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    reloaded = predictor.predict([{"text": row["text"]} for row in saved])
    diff = max(abs(row["scores"][l] - new["scores"][l]) for row, new in zip(saved, reloaded) for l in LABELS)
    assert diff < 1e-5
    # Batching (and therefore padding) must not change a prediction. Decoders fed soft prompts are
    # left-padded, so pads sit between the soft prompt and the text and stretch their rotary
    # distance a little (≈1e-4 here); right padding would read a pad token instead (≈5e-2).
    alone = [predictor.predict([{"text": t}])[0]["scores"] for t in TEXTS]
    together = [o["scores"] for o in predictor.predict([{"text": t} for t in TEXTS])]
    assert max(abs(a[l] - b[l]) for a, b in zip(alone, together) for l in LABELS) < 1e-3
    costs = json.loads((run_dir / "costs.json").read_text())
    assert costs["trainable_params"] > 0 and costs["peak_memory_mb"] > 0 and costs["train_tokens_per_second"] > 0


@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("key", [key for key, (name, _) in ROUNDTRIP.items() if name in PEFT_STRATEGIES])
def test_plain_peft_loads_the_adapter_directory(finished_runs, model_dirs, key, model_name):
    skip_where_peft_refuses(ROUNDTRIP[key][0], model_name)
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    from tunelab.run import load_run

    _, _, predictor = load_run(finished_runs[key, model_name])
    base = AutoModelForSequenceClassification.from_pretrained(model_dirs[model_name], num_labels=2)
    plain = PeftModel.from_pretrained(base, finished_runs[key, model_name] / ADAPTER_DIR)
    inputs = batch(predictor.loaded.tokenizer)
    assert (logits(plain, inputs) - logits(predictor.model, inputs)).abs().max() < 1e-5
    trained_head = [n for n, _ in plain.named_parameters() if "modules_to_save" in n]
    assert trained_head  # the head came from the adapter directory, not the base's random init


@pytest.mark.parametrize("model_name", MODELS)
def test_lora_export_writes_a_plain_model_with_the_same_logits(finished_runs, model_name, tmp_path):
    from tunelab.models import load_model
    from tunelab.run import load_run

    run_dir = finished_runs["lora", model_name]
    out = export_merged(run_dir, tmp_path / "merged")
    merged = load_model(str(out), "classification", 2, label_names=LABELS)
    assert merged.missing_keys == [] and "lora" not in str(list(merged.model.state_dict()))
    _, _, predictor = load_run(run_dir)
    inputs = batch(predictor.loaded.tokenizer)
    assert (logits(merged.model, inputs) - logits(predictor.model, inputs)).abs().max() < 1e-5


def test_export_refuses_unmergeable_methods(finished_runs, tmp_path):
    from tunelab.errors import UserError

    with pytest.raises(UserError, match="cannot be merged"):
        export_merged(finished_runs["prompt_tuning", "bert"], tmp_path / "x")


def test_prompt_tuning_text_init_uses_the_text_embeddings(model_dirs):
    strategy = make_strategy(model_dirs["bert"], "prompt_tuning", {"num_virtual_tokens": 3, "init": "text", "init_text": "great"})
    loaded = strategy.load_base()
    ids = loaded.tokenizer("great")["input_ids"]  # [CLS] great [SEP]
    words = loaded.model.get_input_embeddings().weight[ids].detach().clone()
    model = strategy.prepare(loaded)
    assert torch.equal(model.prompt_encoder["default"].embedding.weight.detach(), words)


# --- LoRA+ and AdaLoRA: what they ask of the training loop ----------------------------------------

def jsonl_rows(path: str) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


@pytest.mark.parametrize("model_name", MODELS)
def test_loraplus_steps_b_at_ratio_times_the_learning_rate(model_dirs, data_files, tmp_path, model_name):
    """The optimizer the Trainer really steps with (read in a callback): every lora_B tensor at
    lr × ratio, every lora_A tensor at lr, at every step of the schedule."""
    from types import SimpleNamespace

    from transformers import TrainerCallback

    from tunelab.train import TrainHooks, attach_hooks

    strategy = make_strategy(model_dirs[model_name], "lora", {"r": 2, "loraplus_lr_ratio": 16.0})
    loaded = strategy.load_base()
    model = strategy.prepare(loaded)
    names = {id(p): n for n, p in model.named_parameters()}
    seen = []

    class Spy(TrainerCallback):
        def on_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
            seen.append({names[id(p)]: group["lr"] for group in optimizer.param_groups for p in group["params"]})

    attach_hooks(model.base_model.model, TrainHooks(callbacks=[Spy()]))  # a second hook, inside the first
    rows = jsonl_rows(data_files["train"])
    strategy.train(model, loaded, SimpleNamespace(train=rows, dev=rows), tmp_path)
    assert len(seen) == 2  # 8 rows, batch 4, 1 epoch
    for lrs in seen:
        a = {lr for n, lr in lrs.items() if ".lora_A." in n}
        b = {lr for n, lr in lrs.items() if ".lora_B." in n}
        assert len(a) == len(b) == 1 and a.pop() * 16.0 == pytest.approx(b.pop())
        assert set(lrs) == {n for n, p in model.named_parameters() if p.requires_grad}  # nothing left out


@pytest.mark.parametrize("model_name", MODELS)
def test_adalora_reallocates_ranks_under_the_trainer(model_dirs, data_files, tmp_path, model_name):
    """The rank schedule runs (total_step = the Trainer's steps, ranks pruned to target_r per layer on
    average), and the best-dev weights reload exactly from the pruned adapter."""
    from tunelab.config import load_experiment
    from tunelab.run import execute, load_run, prepare

    raw = experiment(model_dirs[model_name], "adalora", {"init_r": 4, "target_r": 2}, data_files)
    raw["train"]["epochs"] = 4
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(raw))
    run_dir = tmp_path / "run"
    execute(prepare(load_experiment(path)), run_dir)
    config = json.loads((run_dir / ADAPTER_DIR / "adapter_config.json").read_text())
    steps = json.loads((run_dir / "costs.json").read_text())["steps"]
    assert config["total_step"] == steps == 8
    kept = [sum(mask) for mask in config["rank_pattern"].values()]
    assert len(kept) == 4 and sum(kept) == 2 * len(kept) and all(len(m) == 4 for m in config["rank_pattern"].values())
    _, _, predictor = load_run(run_dir)
    saved = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    reloaded = predictor.predict([{"text": row["text"]} for row in saved])
    assert max(abs(r["scores"][l] - n["scores"][l]) for r, n in zip(saved, reloaded) for l in LABELS) < 1e-5


@pytest.mark.parametrize("name,settings,message", [
    ("lora", {"init": "pisa"}, "init must be one of"), ("lora", {"init": "pissa_niter_0"}, "init must be one of"),
    ("lora", {"loraplus_lr_ratio": 0}, "loraplus_lr_ratio"), ("adalora", {"init_r": 2, "target_r": 4}, "cannot exceed init_r"),
    ("adalora", {"tinit": 0.5, "tfinal": 0.5}, "leaves no steps"), ("oft", {"block_size": 1}, "block_size"),
])
def test_new_peft_settings_are_checked_when_the_experiment_is_read(model_dirs, name, settings, message):
    from tunelab.run import prepare

    raw = experiment(model_dirs["bert"], name, settings, {"train": "x", "test": "y"})
    with pytest.raises(ConfigError, match=message):
        prepare(validate_experiment(raw))


# --- bad settings -----------------------------------------------------------------------------

BAD = [
    ("bert", "lora", {"target_modules": ["nonexistent"]}, "target_modules"),
    ("bert", "lora", {"target_modules": ["query", "q_proj"]}, r"\['q_proj'\] match no module"),
    ("bert", "ia3", {"target_modules": ["key"], "feedforward_modules": ["output.dense"]}, "must also be in target_modules"),
    ("bert", "prompt_tuning", {"num_virtual_tokens": 240}, "num_virtual_tokens"),
    ("llama", "ptuning", {"num_virtual_tokens": 240}, "exceeds the model's 256 positions"),
    ("bert", "prefix_tuning", {"num_virtual_tokens": 240}, "num_virtual_tokens"),
    ("llama", "ptuning_v2", {"num_virtual_tokens": 240}, "num_virtual_tokens"),
    ("distilbert", "lora", {}, "no default LoRA target modules"),
    ("distilbert", "ia3", {}, "no default IA3 target modules"),
    ("distilbert", "prefix_tuning", {}, "does not support the method"),
    ("distilbert", "ptuning_v2", {}, "does not support the method"),
    ("distilbert", "adapter", {}, "do not support DistilBert"),
    ("distilbert", "vera", {}, "no default VeRA target modules"),
    ("distilbert", "oft", {}, "no default OFT target modules"),
    ("distilbert", "adalora", {}, "no default AdaLoRA target modules"),
    ("distilbert", "ln_tuning", {}, "no default LN tuning target modules"),
    ("llama", "ln_tuning", {"target_modules": ["layernorm"]}, r"\['layernorm'\] match no module"),
]


@pytest.mark.parametrize("model_name,name,settings,message", BAD)
def test_bad_settings_fail_in_check_before_any_weights_load(model_dirs, model_name, name, settings, message):
    skip_where_peft_refuses(name, model_name)
    strategy = make_strategy(model_dirs[model_name], name, settings)
    with pytest.raises(ConfigError, match=message):
        strategy.check()


@pytest.mark.parametrize("model_name,name,settings,message", BAD[:3])
def test_bad_targets_also_fail_when_wrapping(model_dirs, model_name, name, settings, message):
    strategy = make_strategy(model_dirs[model_name], name, settings)
    with pytest.raises(ConfigError, match=message):
        strategy.prepare(strategy.load_base())


def test_cli_reports_a_bad_setting_with_file_line_and_exit_2(model_dirs, data_files, tmp_path, capsys):
    from tunelab.cli import main

    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(experiment(model_dirs["bert"], "lora", {"target_modules": ["qurey"]}, data_files), sort_keys=False))
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if "target_modules" in text)
    assert main(["run", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert f"{path}, line {line}: strategy.target_modules" in err and "query" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("settings", [{"init": "text"}, {"init_text": "hello"}])
def test_prompt_tuning_init_text_goes_with_text_init(model_dirs, settings):
    from tunelab.run import prepare

    raw = experiment(model_dirs["bert"], "prompt_tuning", settings, {"train": "x", "test": "y"})
    with pytest.raises(ConfigError, match="init_text"):
        prepare(validate_experiment(raw))


# --- the LM head: the same wrapping for prompt learning ------------------------------------------

@pytest.mark.parametrize("name,settings", [c for c in CASES if c[0] in PEFT_STRATEGIES])
def test_apply_peft_wraps_a_causal_lm(model_dirs, tmp_path, name, settings):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    info = get_strategy(name)
    torch.manual_seed(0)
    model = apply_peft(AutoModelForCausalLM.from_pretrained(model_dirs["llama"]), info.cls.Settings(**settings), "CAUSAL_LM", max_length=32)
    ids = torch.randint(1000, 2000, (2, 6))
    expected = {n for n, _ in model.named_parameters() if intended(name, n) and "modules_to_save" not in n}
    assert {n for n, p in model.named_parameters() if p.requires_grad} == expected
    before = {n: t.detach().clone() for n, t in model.state_dict().items()}
    train_steps(model, {"input_ids": ids}, ids)
    assert {n for n, t in model.state_dict().items() if not torch.equal(before[n], t)} == expected
    model.save_pretrained(tmp_path / "adapter")
    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dirs["llama"]), tmp_path / "adapter")
    assert (logits(reloaded, {"input_ids": ids}) - logits(model, {"input_ids": ids})).abs().max() < 1e-5


# --- end to end on the real encoder --------------------------------------------------------------

@pytest.mark.e2e
def test_cli_lora_on_minilm_runs_evaluates_and_exports(tmp_path, capsys):
    from tunelab.cli import main
    from tunelab.demo import demo_data_dir

    example = Path(__file__).resolve().parents[1] / "examples" / "demo_run.yaml"
    run_dir = tmp_path / "run"
    overrides = ["strategy.name=lora", "train.learning_rate=2e-3", "train.epochs=2", "train.log_to=[]"]
    assert main(["run", str(example), *overrides, "--out", str(run_dir)]) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())["test"]
    costs = json.loads((run_dir / "costs.json").read_text())
    assert (run_dir / ADAPTER_DIR / "adapter_config.json").is_file() and 0 < costs["trainable_percent"] < 1
    capsys.readouterr()
    assert main(["evaluate", str(run_dir), "--data", str(demo_data_dir() / "sentiment_test.jsonl")]) == 0
    evaluated = json.loads(capsys.readouterr().out)["metrics"]
    assert evaluated == pytest.approx(metrics, abs=1e-9)
    assert main(["export", str(run_dir), "--out", str(tmp_path / "merged")]) == 0
    assert (tmp_path / "merged" / "config.json").is_file() and not (tmp_path / "merged" / "adapter_config.json").exists()


@pytest.mark.e2e
def test_cli_new_peft_methods_train_one_cell_each_on_minilm(tmp_path):
    """One short cell per new method (and the LoRA variants together) from the CLI on the real encoder;
    each saved adapter, loaded with plain PEFT on the untouched base (mean pooling, as the run used),
    gives the test scores the run wrote."""
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tunelab.cli import main
    from tunelab.demo import demo_data_dir
    from tunelab.models import resolve_model_path
    from tunelab.pooling import apply_pooling

    example = Path(__file__).resolve().parents[1] / "examples" / "demo_run.yaml"
    base_dir = resolve_model_path("minilm-l6")
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    small_train = demo_data_dir() / "sentiment_dev.jsonl"  # 16 reviews: two steps per cell keep the test short
    cells = {"vera": [], "ln_tuning": [], "oft": [], "adalora": [],
             "lora": ["strategy.use_dora=true", "strategy.init=pissa_niter_4", "strategy.loraplus_lr_ratio=8"]}
    for name, extra in cells.items():
        run_dir = tmp_path / name
        overrides = [f"strategy.name={name}", *extra, f"data.train={small_train}", "train.learning_rate=2e-3", "train.epochs=1",
                     "train.batch_size=8", "model.max_length=32", "data.max_test=8", "train.log_to=[]"]
        assert main(["run", str(example), *overrides, "--out", str(run_dir)]) == 0, name
        assert 0 < json.loads((run_dir / "costs.json").read_text())["trainable_percent"] < 1, name
        base = AutoModelForSequenceClassification.from_pretrained(base_dir, num_labels=2)
        apply_pooling(base, "mean")
        plain = PeftModel.from_pretrained(base, run_dir / ADAPTER_DIR).eval()
        rows = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
        inputs = tokenizer([r["text"] for r in rows], padding=True, truncation=True, max_length=32, return_tensors="pt")
        with torch.no_grad():
            probs = plain(**inputs).logits.softmax(-1)
        written = torch.tensor([[r["scores"][l] for l in LABELS] for r in rows])
        assert (probs - written).abs().max() < 1e-4, name


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("strategy", [
    {"name": "prompt_tuning", "num_virtual_tokens": 4}, {"name": "ptuning_v2", "num_virtual_tokens": 4},
    {"name": "ia3"}, {"name": "adapter"},
])
def test_run_and_evaluate_on_cuda(tmp_path, tiny_llama_dir, tiny_sentiment, capsys, strategy):
    from tunelab.cli import main

    exp = experiment_yaml(tmp_path / "e.yaml", tiny_llama_dir, tiny_sentiment, strategy)
    run_dir = tmp_path / "run"
    assert main(["run", str(exp), "--out", str(run_dir)]) == 0
    assert json.loads((run_dir / "costs.json").read_text())["device"].startswith("cuda")
    stored = json.loads((run_dir / "metrics.json").read_text())["test"]
    capsys.readouterr()
    assert main(["evaluate", str(run_dir), "--data", tiny_sentiment["test"]]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"] == pytest.approx(stored, abs=1e-6)
