"""The sweep's cache of pretrained-LM scores (`tunelab.prompts.score_cache`) on a tiny random Llama:
a cell that scores prompts another cell scored reads them instead of computing, gets exactly the same
numbers, and is charged the computing time; anything the scores depend on changes the key."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from conftest import tiny_llama_config
from test_prompt_strategies import tiny_lm_dir  # noqa: F401
from test_sweep import sweep_yaml
from tunelab import scoring
from tunelab.config import load_experiment
from tunelab.prompts import score_cache
from tunelab.sweep import run_sweep

TEMPLATE = "{{ text }} It was"


def prompting_sweep(tmp_path, tiny_bert_dir, tiny_sentiment, lm_dir, reuse: bool, name: str):
    """zero_shot, the same calibrated, and a prompt_ensemble whose first template is the base prompt: the
    last two score nothing on test that zero_shot did not (calibration rescales afterwards)."""
    lm = {"name": str(lm_dir), "max_length": 32}
    (tmp_path / name).mkdir()
    path = sweep_yaml(tmp_path / name, tiny_bert_dir, tiny_sentiment, {"k_shot": [2], "seeds": [1, 2], "reuse_scores": reuse,
        "strategies": [{"name": "zero_shot", "model": lm},
                       {"name": "zero_shot", "id": "calibrated", "settings": {"calibrate": True}, "model": lm},
                       {"name": "prompt_ensemble", "settings": {"templates": [TEMPLATE, "Review: {{ text }}"]}, "model": lm,
                        "prompt_variants": False}]},
        prompt={"template": TEMPLATE, "verbalizer": {"negative": " bad", "positive": " good"}, "use_chat_template": False})
    raw = yaml.safe_load(path.read_text())
    raw["data"].pop("dev")  # drawn from train per seed, as under the LM-BFF protocol
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture
def computed(monkeypatch):
    """Every scoring the model really runs: its whole prompts, per call."""
    calls, original = [], scoring.score_requests

    def spy(model, tokenizer, requests, **kwargs):
        calls.append(tuple(kwargs.get("shared_prefix", "") + r.context for r in requests))
        return original(model, tokenizer, requests, **kwargs)

    monkeypatch.setattr(scoring, "score_requests", spy)
    monkeypatch.setattr("tunelab.prompts.engine.score_requests", spy)  # the engine's path without a cache
    return calls


def outputs(root, cell: str) -> tuple[list[dict], dict]:
    rows = [json.loads(line) for line in (root / cell / "predictions.jsonl").read_text().splitlines()]
    return rows, json.loads((root / cell / "costs.json").read_text())


def test_cells_read_scores_another_cell_computed_and_get_the_same_results(tmp_path, tiny_bert_dir, tiny_sentiment,
                                                                          tiny_lm_dir, computed):  # noqa: F811
    off = run_sweep(load_experiment(prompting_sweep(tmp_path, tiny_bert_dir, tiny_sentiment, tiny_lm_dir, False, "off")))
    without = list(computed)
    computed.clear()
    on = run_sweep(load_experiment(prompting_sweep(tmp_path, tiny_bert_dir, tiny_sentiment, tiny_lm_dir, True, "on")))
    assert on.failed == off.failed == [] and on.ran == off.ran == 3
    assert not (off.root / score_cache.CACHE_DIR).exists() and any((on.root / score_cache.CACHE_DIR).rglob("*.json"))

    # Every distinct scoring ran once: the calibrated cell's test and dev prompts and the ensemble's first
    # template were zero_shot's; only the second template (and the content-free "N/A" inputs) were new.
    assert len(computed) == len(set(computed)) and len(computed) < len(without)
    assert set(computed) == set(without)
    test_prompts = tuple(json.loads(line)["text"] + " It was" for line in open(tiny_sentiment["test"]))
    assert computed.count(test_prompts) == 1  # the base prompt on the test split: once in the whole sweep,
    assert without.count(test_prompts) == 3  # once per cell without reuse

    for cell in ("zero_shot-k2-seed1", "calibrated-k2-seed1", "prompt_ensemble-k2-seed1"):
        (rows_on, costs_on), (rows_off, _) = outputs(on.root, cell), outputs(off.root, cell)
        assert rows_on == rows_off  # the same predictions and label scores, to the last bit
    # the reading cell is charged what computing its scores took, and says so
    _, calibrated = outputs(on.root, "calibrated-k2-seed1")
    _, plain = outputs(on.root, "zero_shot-k2-seed1")
    assert calibrated["eval_seconds_reused"] > 0 and calibrated["eval_seconds"] >= calibrated["eval_seconds_reused"]
    assert "eval_seconds_reused" not in plain


def test_a_cell_run_alone_keeps_no_scores(tmp_path, tiny_bert_dir, tiny_sentiment, tiny_lm_dir):  # noqa: F811
    from tunelab.run import execute, prepare

    path = prompting_sweep(tmp_path, tiny_bert_dir, tiny_sentiment, tiny_lm_dir, True, "alone")
    raw = yaml.safe_load(path.read_text())
    raw["model"] = raw.pop("sweep")["strategies"][0]["model"]
    raw["strategy"] = {"name": "zero_shot"}
    raw["data"]["k_shot"] = 2
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    execute(prepare(load_experiment(path)), tmp_path / "run")
    assert not list(tmp_path.rglob(score_cache.CACHE_DIR))


def tiny_lm(seed: int):
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(tiny_llama_config()).eval()


def test_the_key_holds_weights_tokenizer_and_threads(bert_tokenizer, monkeypatch):
    model = tiny_lm(0)
    key = score_cache.model_key(model, bert_tokenizer)
    assert score_cache.model_key(tiny_lm(0), bert_tokenizer) == key  # the same weights, loaded again
    assert score_cache.model_key(tiny_lm(1), bert_tokenizer) != key
    with torch.no_grad():
        model.model.norm.weight[3] += 1e-6  # one weight of one layer, barely
    assert score_cache.model_key(model, bert_tokenizer) != key
    other_tokenizer = bert_tokenizer.__class__.from_pretrained(bert_tokenizer.name_or_path)
    other_tokenizer.add_tokens(["tunelabword"])
    assert score_cache.model_key(tiny_lm(0), other_tokenizer) != key
    monkeypatch.setattr(torch, "get_num_threads", lambda: 97)  # threads can change float sums
    assert score_cache.model_key(tiny_lm(0), bert_tokenizer) != key


def test_prompts_and_batch_size_name_the_entry_and_a_broken_entry_is_computed_again(tmp_path, bert_tokenizer, computed):
    model = tiny_lm(0)
    cache = score_cache.ScoreCache(tmp_path, score_cache.model_key(model, bert_tokenizer))
    requests = [scoring.ScoreRequest("a fine film It was", [" good", " bad"]), scoring.ScoreRequest("dull It was", [" good"])]
    first = cache.score(model, bert_tokenizer, requests, shared_prefix="", batch_size=2)
    clock = score_cache.Stopwatch()
    assert cache.score(model, bert_tokenizer, requests, shared_prefix="", batch_size=2) == first and len(computed) == 1
    assert clock.reused > 0
    cache.score(model, bert_tokenizer, requests, shared_prefix="", batch_size=1)  # other batches: other float sums
    cache.score(model, bert_tokenizer, requests[:1], shared_prefix="", batch_size=2)
    cache.score(model, bert_tokenizer, requests, shared_prefix="Q: ", batch_size=2)
    assert len(computed) == 4
    entry = cache.path_for(requests, "", 2)
    entry.write_text('{"seconds": 1.0, "scores": [[[')  # e.g. a disk that filled up mid-write elsewhere
    assert cache.score(model, bert_tokenizer, requests, shared_prefix="", batch_size=2) == first and len(computed) == 5
    assert json.loads(entry.read_text())["scores"][0][0] == [first[0][0].logprob_sum, first[0][0].num_tokens]


def test_scores_that_cannot_be_kept_are_still_returned(tmp_path, bert_tokenizer, monkeypatch):
    model = tiny_lm(0)
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache directory should go")
    cache = score_cache.ScoreCache(blocker, score_cache.model_key(model, bert_tokenizer))
    requests = [scoring.ScoreRequest("a fine film It was", [" good", " bad"])]
    with pytest.warns(UserWarning, match="could not keep scores"):
        rows = cache.score(model, bert_tokenizer, requests, shared_prefix="", batch_size=2)
    assert rows == scoring.score_requests(model, bert_tokenizer, requests, batch_size=2)


def test_a_cell_waits_for_scores_a_cell_beside_it_is_computing(tmp_path, bert_tokenizer, computed):
    """`sweep.workers`: two cells side by side needing the same scores compute them once; the second waits on the
    entry's lock and reads what the first wrote."""
    import threading

    model = tiny_lm(0)
    cache = score_cache.ScoreCache(tmp_path, score_cache.model_key(model, bert_tokenizer))
    requests = [scoring.ScoreRequest("a fine film It was", [" good", " bad"])]
    expected = scoring.score_requests(model, bert_tokenizer, requests, batch_size=2)
    path, result = cache.path_for(requests, "", 2), {}
    with score_cache.claimed(path):  # the other cell holds the entry while it computes
        reader = threading.Thread(target=lambda: result.update(
            rows=cache.score(model, bert_tokenizer, requests, shared_prefix="", batch_size=2)))
        reader.start()
        reader.join(1.0)
        assert reader.is_alive() and "rows" not in result  # waiting, not computing a second time
        score_cache.write_entry(path, expected, 5.0)
    reader.join(30)
    assert result["rows"] == expected and len(computed) == 1
