"""Extractive QA (`task.type: extractive_qa`): SQuAD metrics, answer offsets, sliding windows and span
decoding, bad input, and a tiny compare of a span-head strategy against a prompting strategy."""

from __future__ import annotations

import json
import numpy as np
import pytest
import yaml

from conftest import write_jsonl
from tunelab.errors import DataError
from tunelab.metrics import compute_metrics
from tunelab.metrics_qa import normalize_answer, token_f1
from tunelab.readouts.span import best_answer, encode_windows, token_positions

# --------------------------------------------------------------------------- SQuAD metrics


@pytest.mark.parametrize("text, normalised", [
    ("The Denver Broncos!", "denver broncos"),          # lowercase, article, punctuation
    ("  a   tale of  an apple ", "tale of apple"),      # articles as words, whitespace collapsed
    ("Anatomy theatre", "anatomy theatre"),             # an/the inside a word stay
    ("U.S.-based", "usbased"),                           # punctuation dropped, not turned into spaces
    ("the", ""),
])
def test_squad_normalisation(text, normalised):
    assert normalize_answer(text) == normalised


def test_squad_em_and_f1_on_hand_made_cases():
    # token F1 by hand: "denver broncos team" vs "denver broncos": P = 2/3, R = 1, F1 = 0.8
    assert token_f1("Denver Broncos team", "the Denver Broncos") == pytest.approx(0.8)
    assert token_f1("cat cat", "cat") == pytest.approx(2 * 0.5 * 1 / 1.5)  # a repeated token counts once
    assert token_f1("", "x") == 0.0 and token_f1("the", "a") == 0.0    # nothing left after normalising
    predictions = ["Denver Broncos", "Carolina", "1990s"]
    references = [["Broncos", "the Denver Broncos."], ["Carolina Panthers"], ["2000"]]
    scores = compute_metrics(["squad_em", "squad_f1"], predictions, references)
    assert scores["squad_em"] == pytest.approx(1 / 3)                   # best of the references: the 2nd
    assert scores["squad_f1"] == pytest.approx((1.0 + 2 / 3 + 0.0) / 3)  # Carolina: P 1, R 1/2


# --------------------------------------------------------------------------- offsets and windows

QUESTION = "who won the game?"


def long_example(answer: str, words_before: int, words_after: int = 10) -> dict:
    context = " ".join(f"w{i}" for i in range(words_before)) + f" then {answer} won it. " + \
        " ".join(f"v{i}" for i in range(words_after))
    return {"text": QUESTION, "text_pair": context, "target": answer, "answer_start": context.index(answer),
            "answer_texts": [answer], "_source": "qa.jsonl:7"}


def context_text(window, first: int, last: int, context: str) -> str:
    return context[window.offsets[first][0] : window.offsets[last][1]]


def test_token_positions_follow_the_character_offsets():
    offsets = [None, None, (0, 3), (4, 10), (10, 11), (12, 18), None]  # [CLS] q [SEP]? then "The Denver, Broncos"
    assert token_positions(offsets, 4, 18) == (3, 5)
    assert token_positions(offsets, 4, 10) == (3, 3)
    assert token_positions(offsets, 11, 18) == (5, 5)   # a start on the space between tokens: the next token
    assert token_positions(offsets, 0, 25) == (0, 0)    # the window does not hold the whole answer


def test_a_short_context_is_one_window_labelled_on_its_answer_tokens(bert_tokenizer):
    example = long_example("Denver Broncos", 3)
    features, windows = encode_windows(bert_tokenizer, [example], 64, 16)
    assert len(features) == 1
    first, last = features[0]["start_positions"], features[0]["end_positions"]
    assert context_text(windows[0], first, last, example["text_pair"]) == "Denver Broncos"
    assert all(span is None for span in windows[0].offsets[: len(bert_tokenizer(QUESTION)["input_ids"])])  # the question


def test_an_answer_in_the_second_window_is_found(bert_tokenizer):
    example = long_example("Denver Broncos", 40)
    features, windows = encode_windows(bert_tokenizer, [example], 48, 8)
    assert len(windows) >= 2 and features[0]["start_positions"] == 0  # window 1 does not hold it
    holding = [n for n, f in enumerate(features) if f["start_positions"]]
    assert holding and holding[0] >= 1
    logits = [(np.zeros(len(f["input_ids"])), np.zeros(len(f["input_ids"]))) for f in features]
    n = holding[0]
    logits[n][0][features[n]["start_positions"]] = 5.0
    logits[n][1][features[n]["end_positions"]] = 5.0
    logits[0][0][0] = logits[0][1][0] = 50.0   # [CLS] and question tokens are never an answer
    logits[0][0][1] = logits[0][1][2] = 40.0
    best = best_answer(logits, windows, example["text_pair"], max_answer_length=10)
    assert best["prediction"] == "Denver Broncos"
    assert best["outputs"]["answer_start"] == example["answer_start"]


def test_an_answer_crossing_a_window_edge_is_learnt_and_found_in_the_next_window(bert_tokenizer):
    """Find a context length where the answer straddles window 1's end: window 1 labels [CLS], the
    overlapping window 2 holds it whole, and decoding over both returns the whole answer."""
    answer = "Denver Broncos of Colorado"
    for words in range(10, 40):
        example = long_example(answer, words)
        features, windows = encode_windows(bert_tokenizer, [example], 40, 12)
        spans = [span for span in windows[0].offsets if span]
        start, end = example["answer_start"], example["answer_start"] + len(answer)
        if spans[-1][1] > start and spans[-1][1] < end:
            break
    else:
        pytest.fail("no context length put the answer across the first window's edge")
    assert (features[0]["start_positions"], features[0]["end_positions"]) == (0, 0)
    first, last = features[1]["start_positions"], features[1]["end_positions"]
    assert context_text(windows[1], first, last, example["text_pair"]) == answer
    logits = [(np.zeros(len(f["input_ids"])), np.zeros(len(f["input_ids"]))) for f in features]
    tail = [i for i, span in enumerate(windows[0].offsets) if span and span[0] >= start]  # the cut-off part
    logits[0][0][tail[0]], logits[0][1][tail[-1]] = 3.0, 3.0
    logits[1][0][first], logits[1][1][last] = 4.0, 4.0
    assert best_answer(logits, windows, example["text_pair"], max_answer_length=10)["prediction"] == answer
    # max_answer_length counts tokens: a limit below the answer's length rules the whole answer out
    assert best_answer(logits, windows, example["text_pair"], max_answer_length=last - first)["prediction"] != answer


def test_without_a_stride_a_long_context_is_an_error_naming_the_line(bert_tokenizer):
    with pytest.raises(DataError, match=r"qa.jsonl:7: .*strategy.stride is null"):
        encode_windows(bert_tokenizer, [long_example("Denver Broncos", 60)], 48, None)
    with pytest.raises(DataError, match=r"qa.jsonl:7: the question takes .* lower strategy.stride"):
        encode_windows(bert_tokenizer, [long_example("Denver Broncos", 60)], 20, 16)


def test_an_offset_that_does_not_match_its_text_names_file_line_and_the_right_offset(tmp_path):
    from tunelab.config import TaskConfig
    from tunelab.data import load_split

    context = "The game was won by the Denver Broncos in 2016."
    rows = [{"question": "who?", "context": context, "answers": {"text": ["Denver Broncos"], "answer_start": [24]}},
            {"question": "who?", "context": context, "answers": {"text": ["Denver Broncos"], "answer_start": [20]}}]
    path = write_jsonl(tmp_path / "qa.jsonl", rows)
    with pytest.raises(DataError, match=r"qa.jsonl:2: answers.answer_start\[0\] = 20 .*'the Denver Bro'.* occurs: 24"):
        load_split(str(path), TaskConfig(type="extractive_qa"), "train", None)
    examples = load_split(str(write_jsonl(tmp_path / "ok.jsonl", rows[:1])), TaskConfig(type="extractive_qa"), "train", None)
    assert examples[0]["target"] == "Denver Broncos" and examples[0]["text_pair"] == context


# --------------------------------------------------------------------------- end to end on tiny models

FILLER = ["the match was played in a large stadium", "many fans came from far away", "it rained in the evening",
          "the coach spoke to reporters after it", "tickets were sold out for weeks"]
TEAMS = ["Denver Broncos", "Carolina Panthers", "New England Patriots", "Seattle Seahawks", "Green Bay Packers",
         "Dallas Cowboys", "Miami Dolphins", "Chicago Bears"]


def qa_rows(n: int, offset: int = 0) -> list[dict]:
    rows = []
    for i in range(n):
        team = TEAMS[(i + offset) % len(TEAMS)]
        before = " ".join(FILLER[: 1 + (i % 4)])  # contexts of several lengths: some need two windows
        context = f"{before}. In the end the {team} won the title. {FILLER[(i + 2) % 5]}."
        rows.append({"id": str(i), "question": f"Which team won title number {i}?", "context": context,
                     "answers": {"text": [team, f"the {team}"], "answer_start": [context.index(team), context.index(f"the {team}")]}})
    return rows


@pytest.fixture
def qa_data(tmp_path) -> dict:
    return {"train": str(write_jsonl(tmp_path / "train.jsonl", qa_rows(16))),
            "test": str(write_jsonl(tmp_path / "test.jsonl", qa_rows(6, offset=3)))}


def qa_experiment(tmp_path, tiny_bert_dir, tiny_llama_dir, data: dict, **changes) -> object:
    config = {
        "name": "tiny-qa",
        "model": {"name": str(tiny_bert_dir), "max_length": 40},
        "task": {"type": "extractive_qa"},
        "data": {**data, "k_shot": 6, "dev_k_shot": 4},
        "strategy": {"name": "span", "train": "full", "stride": 12},
        "prompt": {"template": "Context: {{ context }}\nQuestion: {{ question }}\nAnswer:"},
        "train": {"epochs": 1, "batch_size": 4, "learning_rate": 1e-3, "progress_bar": False, "log_to": ["csv"]},
        "metrics": ["squad_f1", "squad_em"],
        "output_dir": str(tmp_path / "runs"),
        "sweep": {"isolation": "none", "seeds": [1], "strategies": [
            {"name": "span", "settings": {"train": "lora", "stride": 12}, "train": {"learning_rate": 1e-2}},
            {"name": "generate", "settings": {"k": 1, "generation": {"max_new_tokens": 4, "stop": ["\n"]}},
             "model": {"name": str(tiny_llama_dir), "max_length": 200}},
        ]},
    }
    for key, value in changes.items():
        config[key] = {**config[key], **value} if isinstance(value, dict) else value
    path = tmp_path / "qa.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def test_compare_span_head_against_prompting_then_evaluate_and_predict(tmp_path, tiny_bert_dir, tiny_llama_dir,
                                                                        qa_data, capsys):
    from tunelab.cli import main

    path = qa_experiment(tmp_path, tiny_bert_dir, tiny_llama_dir, qa_data)
    assert main(["compare", str(path)]) == 0
    root = tmp_path / "runs" / "tiny-qa"
    board = (root / "leaderboard.csv").read_text()
    assert "span" in board and "generate" in board and "squad_f1" in board and "squad_em" in board
    span_run = next(p for p in root.iterdir() if p.name.startswith("span-") and p.is_dir())
    metrics = json.loads((span_run / "metrics.json").read_text())
    assert set(metrics["test"]) == {"squad_f1", "squad_em"} and metrics["num_train"] == 6
    predictions = [json.loads(line) for line in (span_run / "predictions.jsonl").read_text().splitlines()]
    for row in predictions:  # a span head answers with the context's own characters
        start = row["outputs"]["answer_start"]
        assert row["prediction"] == row["context"][start : start + len(row["prediction"])]
    assert (span_run / "adapter" / "adapter_config.json").is_file()

    capsys.readouterr()
    assert main(["evaluate", str(span_run), "--data", qa_data["test"]]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["metrics"] == pytest.approx(metrics["test"])  # the saved adapter reproduces the run

    generate_run = next(p for p in root.iterdir() if p.name.startswith("generate-") and p.is_dir())
    assert main(["evaluate", str(generate_run), "--data", qa_data["test"]]) == 0  # the prompting side reloads too
    generated = json.loads((generate_run / "metrics.json").read_text())["test"]
    assert json.loads(capsys.readouterr().out)["metrics"] == pytest.approx(generated)

    question = {"question": "Which team won?", "context": "In the end the Chicago Bears won the title."}
    inputs = write_jsonl(tmp_path / "questions.jsonl", [question])
    assert main(["predict", str(span_run), "--data", str(inputs)]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["text"] == "Which team won?" and row["prediction"] and row["prediction"] in question["context"]


def test_bad_offset_and_long_context_without_stride_exit_2_before_anything_is_written(tmp_path, tiny_bert_dir,
                                                                                     tiny_llama_dir, qa_data, capsys):
    from tunelab.cli import main

    rows = qa_rows(16)
    rows[4]["answers"]["answer_start"][0] += 1
    bad = dict(qa_data, train=str(write_jsonl(tmp_path / "bad.jsonl", rows)))
    assert main(["run", str(qa_experiment(tmp_path, tiny_bert_dir, tiny_llama_dir, bad))]) == 2
    assert "bad.jsonl:5: answers.answer_start[0]" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()

    path = qa_experiment(tmp_path, tiny_bert_dir, tiny_llama_dir, qa_data, strategy={"stride": None})
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert "strategy.stride is null" in err and ".jsonl:" in err and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("change", ["head", "adapter"])  # delta and bottleneck-adapter artifacts (lora: the compare)
def test_the_span_head_trains_with_other_model_changes_and_its_artifact_reloads(tmp_path, tiny_bert_dir, tiny_llama_dir,
                                                                                qa_data, change, capsys):
    from tunelab.cli import main

    path = qa_experiment(tmp_path, tiny_bert_dir, tiny_llama_dir, qa_data)
    run_dir = tmp_path / "run"
    assert main(["run", str(path), f"strategy.train={change}", "--out", str(run_dir)]) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())["test"]
    costs = json.loads((run_dir / "costs.json").read_text())
    assert 0 < costs["trainable_params"] < costs["total_params"]  # the change chose a part of the model
    capsys.readouterr()
    assert main(["evaluate", str(run_dir), "--data", qa_data["test"]]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"] == pytest.approx(metrics)


def test_metrics_that_cannot_take_several_gold_answers_are_refused_before_any_weight_loads(tmp_path, tiny_bert_dir,
                                                                                          tiny_llama_dir, qa_data, capsys):
    from tunelab.cli import main

    path = qa_experiment(tmp_path, tiny_bert_dir, tiny_llama_dir, qa_data, metrics=["squad_f1", "accuracy"])
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert "qa.yaml, line" in err and "not accuracy" in err and "metrics: [squad_f1, squad_em]" in err
