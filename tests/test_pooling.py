"""model.pooling: mean — the classification head reads the masked mean of the token states, through
training, saving, reloading (evaluate) and PEFT; wrong uses fail clearly."""

import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch

from conftest import experiment_yaml, save_tiny
from tunelab.config import validate_experiment
from tunelab.errors import ModelError
from tunelab.methods import get_strategy
from tunelab.models import load_model
from tunelab.pooling import CONFIG_KEY, MaskedMeanPooler


def make_strategy(model_dir: Path, name: str, pooling: str | None = "mean", **settings):
    config = validate_experiment({"model": {"name": str(model_dir), "pooling": pooling}, "strategy": {"name": name, **settings}})
    info = get_strategy(name)
    return info.cls(info.cls.Settings(**settings), config, ["negative", "positive"])


def test_masked_mean_ignores_padding():
    pooler = MaskedMeanPooler()
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    pooler.mask = torch.tensor([[1, 1, 0]])
    assert torch.equal(pooler(hidden), torch.tensor([[2.0, 3.0]]))
    pooler.mask = torch.tensor([[1, 1, 0, 1, 1]])  # prefix tuning: the mask also covers 2 prefix positions, first
    assert torch.equal(pooler(hidden), torch.tensor([[51.5, 52.0]]))


def test_mean_pooled_head_reads_every_token_and_not_the_padding(tiny_bert_dir):
    loaded = load_model(str(tiny_bert_dir), "classification", 2, pooling="mean")
    model = loaded.model.eval()
    assert getattr(model.config, CONFIG_KEY) == "mean" and isinstance(model.base_model.pooler, MaskedMeanPooler)
    ids = torch.tensor([[101, 1200, 1300, 102, 0, 0], [101, 1500, 1600, 1700, 1800, 102]])
    mask = (ids != 0).long()
    with torch.inference_mode():
        batched = model(input_ids=ids, attention_mask=mask).logits
        alone = model(input_ids=ids[:1, :4], attention_mask=mask[:1, :4]).logits
        hidden = model.base_model(input_ids=ids[:1, :4]).last_hidden_state
        cls_model = load_model(str(tiny_bert_dir), "classification", 2).model.eval()
        classifier = model.classifier.state_dict()
        cls_model.classifier.load_state_dict(classifier)
        via_cls = cls_model(input_ids=ids[:1, :4]).logits
    assert torch.allclose(batched[0], alone[0], atol=1e-5)  # padding does not move the mean
    assert torch.allclose(alone[0], model.classifier(hidden.mean(dim=1))[0], atol=1e-5)
    assert not torch.allclose(alone, via_cls, atol=1e-3)  # and it is not the [CLS] pooler


@pytest.fixture(scope="module")
def tiny_mpnet_dir(tmp_path_factory, bert_tokenizer) -> Path:
    """A tiny MPNet: its classifier reads the first token's state itself (no pooler), like RoBERTa's."""
    from transformers import MPNetConfig, MPNetModel

    config = MPNetConfig(vocab_size=bert_tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=64, architectures=["MPNetModel"])
    return save_tiny(MPNetModel(config), bert_tokenizer, tmp_path_factory.mktemp("tiny-mpnet"))


def test_mean_pooling_on_a_first_token_head_reads_the_masked_mean(tiny_mpnet_dir):
    model = load_model(str(tiny_mpnet_dir), "classification", 2, pooling="mean").model.eval()
    assert type(model).__name__ == "MPNetForSequenceClassification" and getattr(model.config, CONFIG_KEY) == "mean"
    ids = torch.tensor([[0, 1200, 1300, 2, 1, 1], [0, 1500, 1600, 1700, 1800, 2]])
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    with torch.inference_mode():
        batched = model(input_ids=ids, attention_mask=mask).logits
        alone = model(input_ids=ids[:1, :4], attention_mask=mask[:1, :4]).logits
        plain = load_model(str(tiny_mpnet_dir), "classification", 2).model.eval()
        plain.classifier.load_state_dict(model.classifier.state_dict())
        hidden = plain.base_model(input_ids=ids[:1, :4]).last_hidden_state
        via_first_token = plain(input_ids=ids[:1, :4]).logits
    assert torch.allclose(batched[0], alone[0], atol=1e-5)  # padding does not move the mean
    assert torch.allclose(alone, model.classifier(hidden.mean(dim=1, keepdim=True)), atol=1e-5)
    assert not torch.allclose(alone, via_first_token, atol=1e-3)


@pytest.mark.parametrize("name", ["head", "bitfit", "full", "lora", "mpnet-head", "mpnet-lora"])
def test_saved_mean_pooled_models_reload_with_mean_pooling(tmp_path, tiny_bert_dir, tiny_mpnet_dir, name):
    model_dir = tiny_mpnet_dir if name.startswith("mpnet-") else tiny_bert_dir
    name = name.removeprefix("mpnet-")
    strategy = make_strategy(model_dir, name)
    loaded = strategy.load_base()
    model = strategy.prepare(loaded)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.05 * torch.randn_like(param))
    strategy.save_artifact(model, tmp_path, loaded)
    reloaded = strategy.load(tmp_path).model.eval()
    ids = torch.randint(1000, 2000, (3, 7))
    model.eval()
    with torch.inference_mode():
        assert torch.allclose(model(input_ids=ids).logits, reloaded(input_ids=ids).logits, atol=1e-5)
    if name == "full":  # the whole model is saved: its config records the pooling, so a plain load finds it
        assert json.loads((tmp_path / "model" / "config.json").read_text())[CONFIG_KEY] == "mean"
        plain = load_model(str(tmp_path / "model"), "classification", 2).model.eval()
        assert isinstance(plain.base_model.pooler, MaskedMeanPooler)


def test_cli_run_evaluate_and_export_keep_mean_pooling(tmp_path, tiny_bert_dir, tiny_sentiment, capsys):
    from tunelab.cli import main

    path = experiment_yaml(tmp_path / "exp.yaml", tiny_bert_dir, tiny_sentiment, {"name": "lora"},
                           model={"name": str(tiny_bert_dir), "max_length": 32, "pooling": "mean"})
    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out)]) == 0
    stored = json.loads((out / "metrics.json").read_text())["test"]
    capsys.readouterr()
    assert main(["evaluate", str(out), "--data", tiny_sentiment["test"]]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"] == pytest.approx(stored, abs=1e-9)
    # Scores, not only metrics (4 test examples tie easily): predict reloads the mean-pooled model.
    saved = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert main(["predict", str(out), "--data", tiny_sentiment["test"]]) == 0
    again = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert max(abs(a["scores"][k] - b["scores"][k]) for a, b in zip(saved, again) for k in a["scores"]) < 1e-5
    assert main(["export", str(out), "--out", str(tmp_path / "merged")]) == 0
    merged = load_model(str(tmp_path / "merged"), "classification", 2).model
    assert isinstance(merged.base_model.pooler, MaskedMeanPooler)
    assert_plain_peft_recipe_matches(out, tiny_bert_dir)


def assert_plain_peft_recipe_matches(run_dir: Path, base_dir: Path) -> None:
    """README's recipe: plain transformers + apply_pooling + PeftModel.from_pretrained gives tunelab's logits."""
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    from tunelab.pooling import apply_pooling
    from tunelab.run import load_run

    _, _, predictor = load_run(run_dir)
    base = AutoModelForSequenceClassification.from_pretrained(base_dir, num_labels=2)
    apply_pooling(base, "mean")
    plain = PeftModel.from_pretrained(base, run_dir / "adapter").eval()
    ids = torch.tensor([[101, 1200, 1300, 102, 0], [101, 1500, 1600, 1700, 102]])
    with torch.inference_mode():
        expected = predictor.model.eval()(input_ids=ids, attention_mask=(ids != 0).long()).logits
        actual = plain(input_ids=ids, attention_mask=(ids != 0).long()).logits
    assert torch.allclose(expected, actual, atol=1e-5)


def test_mean_pooling_on_a_decoder_is_a_clear_error(tmp_path, tiny_llama_dir, tiny_sentiment, capsys):
    from tunelab.cli import main

    with pytest.raises(ModelError, match="needs an encoder whose classifier reads a pooler"):
        load_model(str(tiny_llama_dir), "classification", 2, pooling="mean")
    path = experiment_yaml(tmp_path / "exp.yaml", tiny_llama_dir, tiny_sentiment, {"name": "lora"},
                           model={"name": str(tiny_llama_dir), "max_length": 32, "pooling": "mean"})
    assert main(["run", str(path), "--out", str(tmp_path / "run")]) == 2
    assert "model.pooling: mean needs an encoder whose classifier reads a pooler" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_mean_pooling_checkpoint_under_cls_pooling_warns(tmp_path, tiny_bert_dir):
    folder = tmp_path / "sentence-model"
    shutil.copytree(tiny_bert_dir, folder)
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    with pytest.warns(UserWarning, match="model.pooling: mean"):
        load_model(str(folder), "classification", 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        load_model(str(folder), "classification", 2, pooling="cls")  # an explicit choice is respected quietly
        load_model(str(tiny_bert_dir), "classification", 2)


def test_cli_shows_tunelab_warnings_without_source_lines():
    from tunelab.cli import plain_warning

    assert plain_warning("set model.pooling", UserWarning, "/x/src/tunelab/models.py", 9) == "warning: set model.pooling\n"
    library = plain_warning("deprecated", FutureWarning, "/x/transformers/modeling_utils.py", 9)
    assert "modeling_utils.py:9" in library  # other libraries' warnings keep their origin
