"""Bad inputs are one clear exit-2 error (what, where, how to fix), found before any weights load,
leaving nothing new behind in the output location."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from conftest import experiment_yaml
from tunelab.cli import main
from tunelab.errors import ConfigError


@pytest.fixture
def no_weights(monkeypatch):
    """Every check below must fire before a model's weights load: loading one fails the test."""
    import tunelab.models

    def refuse(head):
        raise AssertionError("model weights were loaded before the error was found")

    monkeypatch.setattr(tunelab.models, "auto_class_for", refuse)


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def exp_file(tmp_path, model_dir, data, strategy=None, **sections) -> Path:
    sections.setdefault("output_dir", str(tmp_path / "runs"))
    return experiment_yaml(tmp_path / "exp.yaml", model_dir, data, strategy or {"name": "head"}, **sections)


def run_fails(capsys, tmp_path, args: list[str]) -> str:
    """Run the CLI, expect exit 2 with one `error:` message and no new file under tmp_path; return the message."""
    before = files_under(tmp_path)
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert files_under(tmp_path) == before
    return err


def line_of(path: Path, text: str) -> int:
    """The first line of `path` containing `text` (a line starting with it, when `text` starts with '^')."""
    found = lambda line: line.startswith(text[1:]) if text.startswith("^") else text in line
    return next(n for n, line in enumerate(path.read_text().splitlines(), 1) if found(line))


# --------------------------------------------------------------------------------------------- the file


def test_experiment_file_not_utf8_names_file_line_and_fix(tmp_path, capsys):
    path = tmp_path / "exp.yaml"
    path.write_bytes("name: x\ntrain:\n  epochs: 2\n# r\xe9sum\xe9 of the run\n".encode("latin-1"))
    err = run_fails(capsys, tmp_path, ["run", str(path)])
    assert f"{path}, line 4" in err and "not valid UTF-8" in err and "re-save it as UTF-8" in err


def test_duplicate_key_in_the_file_names_key_and_both_lines(tmp_path, capsys):
    path = tmp_path / "exp.yaml"
    path.write_text("name: x\ntrain:\n  epochs: 2\n  learning_rate: 0.1\n  epochs: 5\n", encoding="utf-8")
    err = run_fails(capsys, tmp_path, ["run", str(path)])
    assert f"{path}, line 5: key 'train.epochs' is given twice" in err and "lines 3 and 5" in err
    assert "Remove one of them" in err


def test_duplicate_key_inside_an_override_value(tmp_path, capsys):
    path = tmp_path / "exp.yaml"
    path.write_text("name: x\n", encoding="utf-8")
    err = run_fails(capsys, tmp_path, ["run", str(path), "train={epochs: 1, epochs: 2}"])
    assert "command-line override 'train={epochs: 1, epochs: 2}': key 'train.epochs' is given twice" in err


def test_yaml_merge_keys_may_repeat_a_key():
    from tunelab.config import parse_yaml

    data, _ = parse_yaml("base: &b {epochs: 2, seed: 1}\ntrain:\n  <<: *b\n  epochs: 3\n", "x.yaml")
    assert data["train"] == {"epochs": 3, "seed": 1}


# --------------------------------------------------------------------------------------------- schema values


@pytest.mark.parametrize("seed", ["-1", str(2**32)])
def test_seed_outside_numpys_range_is_a_schema_error(tmp_path, tiny_bert_dir, tiny_sentiment, capsys, no_weights, seed):
    exp = exp_file(tmp_path, tiny_bert_dir, tiny_sentiment)
    err = run_fails(capsys, tmp_path, ["run", str(exp), f"train.seed={seed}"])
    assert f"command-line override 'train.seed={seed}': 'train.seed'" in err


def test_seed_in_the_file_names_its_line(tmp_path, tiny_bert_dir, tiny_sentiment, capsys):
    exp = exp_file(tmp_path, tiny_bert_dir, tiny_sentiment, train={"seed": -5})
    err = run_fails(capsys, tmp_path, ["run", str(exp)])
    assert f"{exp}, line {line_of(exp, 'seed:')}: 'train.seed'" in err and "greater than or equal to 0" in err


def test_sweep_seeds_are_bounded_too(tmp_path, tiny_bert_dir, tiny_sentiment, capsys):
    exp = exp_file(tmp_path, tiny_bert_dir, tiny_sentiment, sweep={"isolation": "none", "strategies": ["head"], "seeds": [1, -1]})
    err = run_fails(capsys, tmp_path, ["compare", str(exp)])
    assert "'sweep.seeds.1'" in err and f"line {line_of(exp, '- -1')}" in err


def test_unknown_device_lists_the_valid_forms(tmp_path, tiny_bert_dir, tiny_sentiment, capsys, no_weights):
    exp = exp_file(tmp_path, tiny_bert_dir, tiny_sentiment)
    err = run_fails(capsys, tmp_path, ["run", str(exp), "model.device=gpu"])
    assert "command-line override 'model.device=gpu': 'model.device'" in err
    assert "auto, cpu, cuda, cuda:N" in err and "mps" in err and "'gpu'" in err


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:1", "mps"])
def test_valid_devices_pass_the_schema(device):
    from tunelab.config import ModelConfig

    assert ModelConfig(device=device).device == device


@pytest.mark.parametrize("name", ["../escaped", "/abs/path", "a/b", "a\\b", "", ".", ".."])
def test_experiment_name_must_be_a_plain_folder_name(tmp_path, tiny_bert_dir, tiny_sentiment, capsys, name):
    work = tmp_path / "work"
    work.mkdir()
    exp = experiment_yaml(work / "exp.yaml", tiny_bert_dir, tiny_sentiment, {"name": "head"}, name=name,
                          output_dir=str(work / "runs"))
    err = run_fails(capsys, tmp_path, ["run", str(exp)])  # nothing new anywhere under tmp_path (../escaped too)
    assert f"{exp}, line {line_of(exp, '^name:')}: 'name'" in err
    assert "plain folder name" in err and "output_dir" in err


def test_plain_names_are_accepted():
    from tunelab.config import validate_experiment

    for name in ("sst2-minilm", "run.v2", "My Experiment", "x"):
        assert validate_experiment({"name": name}).name == name


# --------------------------------------------------------------------------------------------- overrides


def test_unknown_override_key_is_blamed_on_the_override(tmp_path, tiny_bert_dir, tiny_sentiment, capsys):
    exp = exp_file(tmp_path, tiny_bert_dir, tiny_sentiment)
    err = run_fails(capsys, tmp_path, ["run", str(exp), "train.learnig_rate=1e-3"])
    problem = err.splitlines()[1].strip()
    assert problem.startswith("command-line override 'train.learnig_rate=1e-3': unknown key 'train.learnig_rate'")
    assert "did you mean 'train.learning_rate'" in problem and str(exp) not in problem


@pytest.mark.parametrize("override, message", [
    ("strategy.name=lroa", "unknown strategy 'lroa' — did you mean 'lora'?"),
    ("metrics=[acuracy]", "unknown metric 'acuracy'. Did you mean 'accuracy'?"),
])
def test_unknown_strategy_or_metric_names_where_it_was_written(tmp_path, tiny_bert_dir, tiny_sentiment, capsys,
                                                               override, message):
    exp = exp_file(tmp_path, tiny_bert_dir, tiny_sentiment)
    err = run_fails(capsys, tmp_path, ["run", str(exp), override])
    assert err.startswith(f"error: command-line override '{override}': {message}")


def test_bad_override_value_is_blamed_on_the_override(tmp_path, tiny_bert_dir, tiny_sentiment, capsys):
    exp = exp_file(tmp_path, tiny_bert_dir, tiny_sentiment)
    err = run_fails(capsys, tmp_path, ["run", str(exp), "train.epochs=-1"])
    assert err.splitlines()[1].strip().startswith("command-line override 'train.epochs=-1': 'train.epochs'")


def test_override_of_a_whole_section_locates_its_keys(tmp_path, tiny_bert_dir, tiny_sentiment, capsys):
    exp = exp_file(tmp_path, tiny_bert_dir, tiny_sentiment)
    err = run_fails(capsys, tmp_path, ["run", str(exp), "model={name: x, devise: cpu}"])
    assert "command-line override 'model={name: x, devise: cpu}': unknown key 'model.devise'" in err


# --------------------------------------------------------------------------------------------- the model


def test_max_length_beyond_the_models_positions(tmp_path, tiny_bert_dir, tiny_sentiment, capsys, no_weights):
    exp = exp_file(tmp_path, tiny_bert_dir, tiny_sentiment, model={"max_length": 1024})
    err = run_fails(capsys, tmp_path, ["run", str(exp)])
    assert f"{exp}, line {line_of(exp, 'max_length: 1024')}: model.max_length is 1024" in err
    assert "at most 256 tokens (max_position_embeddings in config.json)" in err
    assert "Set model.max_length to 256 or less" in err
    err = run_fails(capsys, tmp_path, ["run", str(exp), "model.max_length=100000"])
    assert "command-line override 'model.max_length=100000': model.max_length is 100000" in err


def test_max_length_at_the_limit_is_fine(tmp_path, tiny_bert_dir, tiny_sentiment):
    from tunelab.config import load_experiment
    from tunelab.run import prepare

    prepare(load_experiment(exp_file(tmp_path, tiny_bert_dir, tiny_sentiment, model={"max_length": 256})))


def test_model_facts_read_config_and_tokenizer_limit(tmp_path, tiny_bert_dir, tiny_llama_dir):
    from tunelab.model_facts import model_facts

    bert = model_facts(str(tiny_bert_dir))
    assert (bert.model_type, bert.kind, bert.num_layers, bert.max_positions) == ("bert", "encoder", 2, 256)
    llama = model_facts(str(tiny_llama_dir))
    assert (llama.kind, llama.num_layers, llama.max_positions) == ("decoder", 2, 256)
    # A position table larger than what the tokenizer allows (its model_max_length, 512 here): the tokenizer's limit.
    wide = shutil.copytree(tiny_bert_dir, tmp_path / "wide")
    config = json.loads((wide / "config.json").read_text())
    (wide / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 4096}))
    facts = model_facts(str(wide))
    assert facts.max_positions == 512 and "tokenizer_config.json" in facts.limit_source


def test_unconverted_smollm2_is_checked_when_loaded_not_before(tmp_path, tiny_llama_dir, monkeypatch):
    """No conversion just to check: without the converted config.json, the check runs when the run
    executes, before training."""
    import tunelab.models
    from tunelab.config import validate_experiment
    from tunelab.model_checks import check_model
    from tunelab.run import Prepared, execute

    monkeypatch.setattr(tunelab.models, "smollm2_dir", lambda: tmp_path / "not-converted")
    monkeypatch.setattr(tunelab.models, "converted_smollm2", lambda: pytest.fail("converted just for a check"))
    config = validate_experiment({"model": {"name": "smollm2-135m", "max_length": 1000}})
    assert check_model(config) is False

    class Fitted(Exception):
        pass

    class Strategy:
        def fit(self, splits, run_dir):
            raise Fitted  # training began: the check let the run through

    prepared = Prepared(config, Strategy(), splits=None, model_checked=False)
    monkeypatch.setattr(tunelab.models, "resolve_model_path", lambda name: str(tiny_llama_dir))  # "converted" now
    with pytest.raises(ConfigError, match="model.max_length is 1000.*at most 256 tokens"):
        execute(prepared, tmp_path / "runs" / "run")
    assert not (tmp_path / "runs").exists()
    config.model.max_length = 64
    with pytest.raises(Fitted):
        execute(prepared, tmp_path / "runs" / "run")


@pytest.mark.parametrize("layers_key, value", [("freeze_layers", 99), ("train_top_layers", 3)])
def test_partial_layers_beyond_the_model(tmp_path, tiny_bert_dir, tiny_sentiment, capsys, no_weights, layers_key, value):
    exp = exp_file(tmp_path, tiny_bert_dir, tiny_sentiment, {"name": "partial", layers_key: value})
    err = run_fails(capsys, tmp_path, ["run", str(exp)])
    assert f"{exp}, line {line_of(exp, layers_key)}: strategy.{layers_key} is {value}" in err
    assert "has only 2 layers" in err and "at most 2" in err
    assert not (tmp_path / "runs").exists()


def test_partial_checks_the_loaded_model_with_the_same_rule(tiny_bert_dir):
    from tunelab.config import validate_experiment
    from tunelab.methods.partial import PartialSettings, PartialStrategy

    config = validate_experiment({"model": {"name": str(tiny_bert_dir)}, "strategy": {"name": "partial", "freeze_layers": 7}})
    strategy = PartialStrategy(PartialSettings(freeze_layers=7), config, ["a", "b"])
    with pytest.raises(ConfigError, match="strategy.freeze_layers is 7, but model .* has only 6 layers"):
        strategy.first_trained_layer(6)
    assert strategy.first_trained_layer(7) == 7


def test_empty_model_directory_says_what_a_model_directory_needs(tmp_path, tiny_sentiment, capsys, no_weights):
    empty = tmp_path / "empty-model"
    empty.mkdir()
    exp = exp_file(tmp_path, empty, tiny_sentiment)
    err = run_fails(capsys, tmp_path, ["run", str(exp)])
    assert f"{exp}, line {line_of(exp, 'empty-model')}: model directory {empty} has no config.json (it is empty)" in err
    assert "config.json, the weights" in err and "tokenizer" in err and not err.rstrip().endswith(":")


def test_first_line_never_ends_on_a_dangling_colon():
    from tunelab.models import first_line

    err = OSError("Couldn't instantiate the backend tokenizer from one of: \n(1) a `tokenizers` library serialization "
                  "file, \n(2) a slow tokenizer instance to convert or \n(3) an equivalent slow tokenizer class.\n"
                  "You need to have sentencepiece installed.")
    line = first_line(err)
    assert "\n" not in line and not line.endswith(":") and "(1) a `tokenizers` library" in line
    assert first_line(OSError("word " * 200)).endswith(" ...")


# --------------------------------------------------------------------------------------------- sweeps


def sweep_file(tmp_path, model_dir, data, sweep: dict) -> Path:
    return exp_file(tmp_path, model_dir, data, sweep={"isolation": "none", **sweep},
                    train={"epochs": 1, "eval_strategy": "no", "progress_bar": False, "log_to": ["csv"]})


def test_sweep_k_larger_than_a_class_leaves_no_directory(tmp_path, tiny_bert_dir, tiny_sentiment, capsys, no_weights):
    exp = sweep_file(tmp_path, tiny_bert_dir, tiny_sentiment, {"strategies": ["head"], "k_shot": [50]})
    err = run_fails(capsys, tmp_path, ["compare", str(exp)])
    assert "sweep cell head-k50" in err and "fewer than k_shot" in err
    assert not (tmp_path / "runs").exists()


def test_sweep_k_error_leaves_an_earlier_sweep_untouched(tmp_path, tiny_bert_dir, tiny_sentiment, capsys, no_weights):
    exp = sweep_file(tmp_path, tiny_bert_dir, tiny_sentiment, {"strategies": ["head"], "k_shot": [50]})
    earlier = tmp_path / "runs" / "tiny"
    earlier.mkdir(parents=True)
    (earlier / "sweep.json").write_text('{"earlier": true}\n')
    run_fails(capsys, tmp_path, ["compare", str(exp)])  # no .lock, no new file
    assert (earlier / "sweep.json").read_text() == '{"earlier": true}\n'


def test_duplicate_strategy_entries_name_the_id_and_lines(tmp_path, tiny_bert_dir, tiny_sentiment, capsys):
    exp = sweep_file(tmp_path, tiny_bert_dir, tiny_sentiment, {"strategies": ["head", "bitfit", "head"]})
    err = run_fails(capsys, tmp_path, ["compare", str(exp)])
    lines = [n for n, line in enumerate(exp.read_text().splitlines(), 1) if line.strip() == "- head"]
    assert len(err.strip().splitlines()) == 1
    assert f"{exp}, line {lines[1]}: sweep.strategies.2 has the id 'head' of sweep.strategies.0 (line {lines[0]})" in err
    assert "distinct ids" in err and "its own `id:`" in err and "remove the duplicate" in err and "isolation" not in err  # no dump of the sweep


def test_search_values_that_print_alike_make_one_clear_error(tmp_path, tiny_bert_dir, tiny_sentiment, capsys):
    exp = sweep_file(tmp_path, tiny_bert_dir, tiny_sentiment,
                     {"strategies": [{"name": "head", "search": {"train.learning_rate": [0.001, 0.001]}}]})
    err = run_fails(capsys, tmp_path, ["compare", str(exp)])
    assert f"line {line_of(exp, 'search:')}: sweep.strategies.0.search makes cells with the same id" in err
    assert "head-kall-learning_rate=0.001-seed42" in err


def test_sweep_max_length_beyond_the_model_stops_before_any_cell(tmp_path, tiny_bert_dir, tiny_sentiment, capsys, no_weights):
    exp = sweep_file(tmp_path, tiny_bert_dir, tiny_sentiment,
                     {"strategies": ["head", {"name": "bitfit", "model": {"max_length": 512}}]})
    err = run_fails(capsys, tmp_path, ["compare", str(exp)])
    raw = yaml.safe_load(exp.read_text())
    assert raw["sweep"]["strategies"][1]["model"] == {"max_length": 512}
    assert "sweep cell bitfit-kall-seed42" in err and f"line {line_of(exp, 'max_length: 512')}" in err
    assert "model.max_length is 512" in err
