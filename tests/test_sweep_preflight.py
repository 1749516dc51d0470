"""A sweep prepares each distinct strategy set-up before its first cell (sweep/preflight.py): a mistake every cell
of an entry shares — pet label words the model cannot tell apart, a template field the data lacks — stops
`tunelab compare` with exit 2 naming the cell and the line to fix, before any weights load or any cell runs."""

from __future__ import annotations

import textwrap

import pytest

import tunelab.models
from tunelab.cli import main
from tunelab.sweep.preflight import cell_lines


@pytest.fixture
def no_weights_load(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("model weights were loaded before the bad set-up was reported")

    monkeypatch.setattr(tunelab.models, "auto_class_for", refuse)


def sweep_file(tmp_path, llama_dir, data: dict, prompt: str, strategies: str, prompts: str = "") -> tuple:
    """An experiment file whose lines are known: returns (path, {marker: line number})."""
    text = textwrap.dedent(f"""\
        name: tiny
        output_dir: {tmp_path / 'runs'}
        model: {{name: {llama_dir}, max_length: 32}}
        task: {{type: classification, label_names: [negative, positive]}}
        data: {{train: {data['train']}, dev: {data['dev']}, test: {data['test']}}}
        train: {{epochs: 1, batch_size: 4, progress_bar: false, log_to: [csv]}}
        metrics: [accuracy]
        """) + prompt + "sweep:\n  seeds: [1, 2]\n  save_artifacts: false\n" + prompts + "  strategies:\n" + strategies
    path = tmp_path / "exp.yaml"
    path.write_text(text, encoding="utf-8")
    lines = {text.strip().split(":")[0]: n for n, text in enumerate(text.splitlines(), start=1)}
    return path, lines


CLASHING = 'prompt:\n  template: "{{ text }} It was"\n  verbalizer: {negative: " not good", positive: " not bad"}\n'


def test_clashing_pet_words_stop_the_sweep_before_any_cell_naming_the_verbalizer_line(
        tmp_path, llama_dir, tiny_sentiment, capsys, no_weights_load):
    path, lines = sweep_file(tmp_path, llama_dir, tiny_sentiment, CLASHING, "    - name: pet\n")
    assert main(["compare", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: sweep cell pet-kall-seed1: ") and "Traceback" not in err
    assert f"exp.yaml, line {lines['verbalizer']}: label words ' not good' (negative) and ' not bad' (positive)" in err
    assert "start with the same token" in err
    assert not (tmp_path / "runs").exists()  # no sweep directory, no cell ran


def test_a_template_field_the_data_lacks_stops_the_sweep(tmp_path, llama_dir, tiny_sentiment, capsys, no_weights_load):
    prompt = 'prompt:\n  template: "{{ review }} It was"\n  verbalizer: {negative: " bad", positive: " good"}\n'
    path, _ = sweep_file(tmp_path, llama_dir, tiny_sentiment, prompt, "    - name: pet\n")
    assert main(["compare", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: sweep cell pet-kall-seed1: ") and "review" in err
    assert not (tmp_path / "runs").exists()


def test_a_prompt_variants_clash_is_named_by_the_variants_line(tmp_path, llama_dir, tiny_sentiment, capsys,
                                                               no_weights_load):
    prompt = 'prompt:\n  template: "{{ text }} It was"\n  verbalizer: {negative: " bad", positive: " good"}\n'
    prompts = ('  prompts:\n    fine: {template: "{{ text }} It was"}\n'
               '    clash: {template: "{{ text }} It was", verbalizer: {negative: " not good", positive: " not bad"}}\n')
    path, lines = sweep_file(tmp_path, llama_dir, tiny_sentiment, prompt, "    - name: pet\n", prompts)
    assert main(["compare", str(path)]) == 2
    err = capsys.readouterr().err
    assert "sweep cell pet-kall-clash-seed1: " in err and f"exp.yaml, line {lines['clash']}: label words" in err


def test_a_pattern_ensembles_clashing_pattern_is_named(tmp_path, llama_dir, tiny_sentiment, capsys, no_weights_load):
    prompt = 'prompt:\n  template: "{{ text }} It was"\n  verbalizer: {negative: " bad", positive: " good"}\n'
    entry = ('    - name: pet_ensemble\n      settings:\n        patterns:\n'
             '          - {template: "{{ text }} It was"}\n'
             '          - {template: "{{ text }} All in all", verbalizer: {negative: " not good", positive: " not bad"}}\n')
    path, _ = sweep_file(tmp_path, llama_dir, tiny_sentiment, prompt, entry)
    assert main(["compare", str(path)]) == 2
    err = capsys.readouterr().err
    assert "sweep cell pet_ensemble-kall-seed1: " in err and "pattern 2: " in err and "start with the same token" in err


def test_a_good_sweep_passes_the_preflight_and_runs(tmp_path, llama_dir, tiny_sentiment, capsys):
    prompt = 'prompt:\n  template: "{{ text }} It was"\n  verbalizer: {negative: " bad", positive: " good"}\n'
    path, _ = sweep_file(tmp_path, llama_dir, tiny_sentiment, prompt, "    - name: pet\n")
    assert main(["compare", str(path)]) == 0
    assert "2 cell(s) failed" not in capsys.readouterr().err
    assert (tmp_path / "runs" / "tiny" / "pet-kall-seed2" / "metrics.json").is_file()


def test_cell_lines_follow_the_sweep_entry_the_variant_and_the_search():
    lines = {("model", "name"): 3, ("prompt", "verbalizer"): 8, ("strategy", "name"): 9,
             ("sweep", "prompts", "b", "verbalizer"): 12,
             ("sweep", "strategies", 0, "name"): 14, ("sweep", "strategies", 1, "name"): 15,
             ("sweep", "strategies", 1, "model", "name"): 16, ("sweep", "strategies", 1, "settings", "r"): 17,
             ("sweep", "strategies", 1, "search", "train.learning_rate"): 18}
    second = cell_lines(lines, 1, "b")
    assert second[("model", "name")] == 16 and second[("strategy", "r")] == 17 and second[("strategy", "name")] == 15
    assert second[("train", "learning_rate")] == 18 and second[("prompt", "verbalizer")] == 12
    first = cell_lines(lines, 0, None)
    assert first[("model", "name")] == 3 and first[("strategy", "name")] == 14 and first[("prompt", "verbalizer")] == 8
    assert ("strategy", "r") not in first
