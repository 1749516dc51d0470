"""Experiment files: typed schema, unknown keys named with line and suggestion, dotted overrides."""

from pathlib import Path

import pytest

from tunelab.config import dump_config, load_experiment, validate_experiment
from tunelab.errors import ConfigError
from tunelab.run import prepare


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_misspelled_key_names_key_line_and_closest(tmp_path):
    path = write(tmp_path, "name: x\ntrain:\n  epochs: 2\n  learnig_rate: 0.1\n")
    with pytest.raises(ConfigError) as err:
        load_experiment(path)
    message = str(err.value)
    assert "line 4" in message and "'train.learnig_rate'" in message and "'train.learning_rate'" in message


def test_misspelled_section(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'strategy'"):
        load_experiment(write(tmp_path, "stratgy:\n  name: full\n"))


def test_wrong_type_names_key(tmp_path):
    with pytest.raises(ConfigError, match=r"line 2: 'train.batch_size'"):
        load_experiment(write(tmp_path, "train:\n  batch_size: many\n"))


def test_overrides_are_parsed_as_yaml_values(tmp_path):
    path = write(tmp_path, "train:\n  epochs: 2\n")
    config = load_experiment(path, ["train.learning_rate=2e-5", "train.progress_bar=false", "model.name=smollm2-135m"])
    assert config.train.learning_rate == pytest.approx(2e-5)
    assert config.train.progress_bar is False and config.model.name == "smollm2-135m"


def test_misspelled_override_is_an_error_that_names_it(tmp_path):
    with pytest.raises(ConfigError, match="command-line override 'train.lr=1'"):
        load_experiment(write(tmp_path, "name: x\n"), ["train.lr=1"])


def test_override_without_equals(tmp_path):
    with pytest.raises(ConfigError, match="section.key=value"):
        load_experiment(write(tmp_path, "name: x\n"), ["train.epochs"])


def test_invalid_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_experiment(write(tmp_path, "train: [unclosed\n"))
    with pytest.raises(ConfigError, match="not found"):
        load_experiment(tmp_path / "nope.yaml")


def test_data_paths_are_relative_to_the_experiment_file(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "train.jsonl").write_text('{"text": "a", "label": "x"}\n')
    config = load_experiment(write(tmp_path, "data:\n  train: d/train.jsonl\n"))
    assert Path(config.data.train) == (tmp_path / "d" / "train.jsonl").resolve()


def test_strategy_settings_are_checked_by_the_strategy(tmp_path, tiny_sentiment):
    text = f"strategy:\n  name: partial\n  freeze_layerz: 1\ndata:\n  train: {tiny_sentiment['train']}\n  test: {tiny_sentiment['test']}\n"
    config = load_experiment(write(tmp_path, text))
    with pytest.raises(ConfigError) as err:
        prepare(config)
    assert "line 3" in str(err.value) and "'strategy.freeze_layers'" in str(err.value)


def test_unknown_strategy_suggests_closest(tmp_path, tiny_sentiment):
    config = validate_experiment({"strategy": {"name": "bitfitt"}, "data": {"test": tiny_sentiment["test"]}})
    with pytest.raises(ConfigError, match="did you mean 'bitfit'"):
        prepare(config)


def test_unknown_metric_is_caught_before_training(tiny_sentiment):
    config = validate_experiment({"metrics": ["acuracy"], "data": {"test": tiny_sentiment["test"]}})
    with pytest.raises(ConfigError, match="accuracy"):
        prepare(config)


def test_resolved_config_round_trips():
    import yaml

    config = validate_experiment({"name": "x", "strategy": {"name": "partial", "freeze_layers": 2}})
    again = validate_experiment(yaml.safe_load(dump_config(config)))
    assert again == config and again.strategy.options() == {"freeze_layers": 2}
