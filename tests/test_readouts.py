"""Read-outs (`tunelab.readouts`): the registry lists `head`, `verbalizer` and `generation`, each with
the pairing key model changes pair with; pairing answers as before for every model change; `none`
(nothing trains) pairs with the LM read-outs and a strategy that trains refuses it; a read-out on a
model without what it needs is refused before any weight loads."""

from __future__ import annotations

import sys

import pytest

from conftest import experiment_yaml
from tunelab.cli import main
from tunelab.config import load_experiment
from tunelab.errors import ConfigError
from tunelab.methods import all_strategies
from tunelab.model_changes import all_model_changes
from tunelab.model_changes.registry import pairs_with
from tunelab.readouts import PAIRINGS, all_readouts, get_readout, pairing_of

PROMPT = {"template": "Review: {{ text }}\nSentiment:", "verbalizer": {"negative": " bad", "positive": " good"}}
HEAD_ONLY, LM_ONLY = {"head"}, {"lm_head", "none"}  # every other change pairs with both


def refuse_weights(monkeypatch):
    import transformers
    from transformers.models.auto.auto_factory import _BaseAutoModelClass

    def refuse(*args, **kwargs):
        raise AssertionError("model weights were loaded before the error was found")

    for name, module in list(sys.modules.items()):
        if name.startswith("tunelab") and hasattr(module, "load_model"):
            monkeypatch.setattr(module, "load_model", refuse)
    monkeypatch.setattr(_BaseAutoModelClass, "from_pretrained", classmethod(refuse))
    monkeypatch.setattr(transformers.PreTrainedModel, "from_pretrained", classmethod(refuse))


def test_the_registry_lists_the_readouts_with_their_pairing_keys():
    readouts = {info.name: info for info in all_readouts()}
    assert set(readouts) == {"head", "span", "verbalizer", "choices", "generation", "token_head"}
    assert {name: info.pairing for name, info in readouts.items()} == {
        "head": "head", "span": "head", "verbalizer": "lm", "choices": "lm", "generation": "lm", "token_head": "head"}
    assert readouts["span"].lm_heads == ()  # a new span head: any model
    assert {info.pairing for info in readouts.values()} == set(PAIRINGS)
    assert readouts["head"].lm_heads == () and readouts["generation"].lm_heads == readouts["choices"].lm_heads == ("causal_lm",)
    assert set(readouts["verbalizer"].lm_heads) == {"causal_lm", "masked_lm"}
    assert pairing_of("verbalizer") == pairing_of("choices") == pairing_of("generation") == pairing_of("lm") == "lm"
    with pytest.raises(ConfigError, match="did you mean 'verbalizer'"):
        get_readout("verbaliser")


def test_pairing_answers_as_before_for_every_model_change():
    all_strategies()  # the PEFT strategies hand their settings to model_changes when they load
    changes = all_model_changes()
    assert {"full", "head", "lm_head", "none", "lora", "ia3"} <= {info.name for info in changes}
    for info in changes:
        expected = ("head",) if info.name in HEAD_ONLY else ("lm",) if info.name in LM_ONLY else ("head", "lm")
        assert info.readouts == expected, info.name
        assert info.trains == (info.name != "none")
    trained = [info.name for info in changes if info.trains]
    assert pairs_with("head") == [name for name in trained if name not in LM_ONLY]
    assert pairs_with("verbalizer") == pairs_with("generation") == pairs_with("lm") == [name for name in trained
                                                                                         if name not in HEAD_ONLY]


@pytest.mark.parametrize("readout, message", [
    ("verbalizer", "strategy 'pet' reads label words with a pretrained LM head, but model"),
    ("generation", "strategy 'pet' scores answer words with a causal (decoder) language model"),
])
def test_a_readout_refuses_a_model_without_what_it_needs(tmp_path, tiny_bert_dir, tiny_sentiment, monkeypatch,
                                                         readout, message):
    refuse_weights(monkeypatch)
    exp = load_experiment(experiment_yaml(tmp_path / "exp.yaml", tiny_bert_dir, tiny_sentiment, {"name": "pet"},
                                          prompt=PROMPT))
    with pytest.raises(ConfigError, match="line") as err:
        get_readout(readout).check(exp, "pet")
    assert message in str(err.value) and str(tmp_path / "exp.yaml") in str(err.value)
    get_readout("head").check(exp, "pet")  # any model takes a new head


def test_pet_on_an_encoder_without_an_lm_head_exits_2_before_any_weight_loads(tmp_path, tiny_bert_dir, tiny_sentiment,
                                                                              monkeypatch, capsys):
    refuse_weights(monkeypatch)
    exp = experiment_yaml(tmp_path / "exp.yaml", tiny_bert_dir, tiny_sentiment, {"name": "pet"}, prompt=PROMPT,
                          output_dir=str(tmp_path / "runs"))
    capsys.readouterr()
    assert main(["run", str(exp)]) == 2
    err = capsys.readouterr().err
    assert "reads label words with a pretrained LM head, but model" in err and "Traceback" not in err


@pytest.mark.parametrize("strategy", ["pet", "sft"])
def test_a_strategy_that_trains_refuses_train_none(tmp_path, tiny_llama_dir, tiny_sentiment, monkeypatch, capsys,
                                                   strategy):
    refuse_weights(monkeypatch)
    sections = {"prompt": PROMPT}
    if strategy == "sft":
        sections = {"prompt": {"template": "Text: {{ text }}\nLabel:"}, "metrics": ["rouge1"],
                    "task": {"type": "generation", "target_field": "label", "label_names": None}}
    settings = {"name": strategy, "train": "none"} | ({"generation": {"max_new_tokens": 4}} if strategy == "sft" else {})
    exp = experiment_yaml(tmp_path / "exp.yaml", tiny_llama_dir, tiny_sentiment, settings,
                          output_dir=str(tmp_path / "runs"), **sections)
    before = sorted(tmp_path.rglob("*"))
    capsys.readouterr()
    assert main(["run", str(exp)]) == 2
    err = capsys.readouterr().err
    assert f"{exp}, line " in err and "model change 'none' trains nothing" in err and "Traceback" not in err
    works = err.split(f"with '{strategy}' use train: ")[1].strip().split(", ")
    assert {"adapter", "bitfit", "full", "lm_head", "partial", "lora"} <= set(works) and "none" not in works
    assert sorted(tmp_path.rglob("*")) == before  # nothing written


def test_strategies_lists_none_and_the_readouts(capsys):
    capsys.readouterr()
    assert main(["strategies"]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("  none "))
    assert "[lm]" in line and "nothing trains" in line
    readouts = out[out.index("\nRead-outs"):]
    for info in all_readouts():
        assert f"\n  {info.name} " in readouts and f"[{info.pairing}]" in readouts and info.needs in readouts
