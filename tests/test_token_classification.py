"""task.type token_classification (NER): IOB2 data and its repair, word-piece alignment, entity metrics
by seqeval against hand counts, the head strategies end to end on a tiny random encoder (compare,
report, evaluate, predict), and the in-context extraction strategy's parsing and run."""

from __future__ import annotations

import json
import random
import warnings

import pytest
import yaml

from conftest import experiment_yaml, write_jsonl
from tunelab.cli import main
from tunelab.config import TaskConfig
from tunelab.data.tokens import repair_iob2, tag_names
from tunelab.data.validate import normalise_records
from tunelab.errors import DataError
from tunelab.metrics import compute_metrics
from tunelab.metrics_ner import Entity, entities, tags_of
from tunelab.readouts.tokens import IGNORE, aligned_labels, encode_tagged, word_tags

TAGS = tag_names(["PER", "LOC"])  # O, B-LOC, I-LOC, B-PER, I-PER
NER_TASK = {"type": "token_classification", "label_names": ["PER", "LOC"]}
NER_METRICS = ["entity_f1", "entity_precision", "entity_recall", "per_type_f1"]


@pytest.fixture
def tiny_ner(tmp_path) -> dict:
    """A learnable tagging task: names (PER, two words) and cities (LOC) in fixed slots."""
    rng = random.Random(0)
    people, places = ["alice", "bob", "carol", "dave"], ["paris", "london", "rome", "berlin"]
    rows = [{"tokens": [rng.choice(people), "smith", "visited", rng.choice(places), "today"],
             "tags": ["B-PER", "I-PER", "O", "B-LOC", "O"]} for _ in range(24)]
    return {split: str(write_jsonl(tmp_path / f"{split}.jsonl", part))
            for split, part in (("train", rows[:12]), ("dev", rows[12:18]), ("test", rows[18:]))}


def ner_yaml(tmp_path, model_dir, data, strategy: dict, **sections):
    return experiment_yaml(tmp_path / "exp.yaml", model_dir, data, strategy, task=NER_TASK, metrics=NER_METRICS, **sections)


# --------------------------------------------------------------------------------------------- data


def test_invalid_iob2_is_repaired_with_a_warning_naming_the_line(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", [
        {"tokens": ["Peter", "Blackburn"], "tags": ["B-PER", "I-PER"]},
        {"tokens": ["in", "New", "York"], "tags": ["O", "I-LOC", "I-LOC"]},
        {"tokens": ["Peter", "Paris"], "tags": ["B-PER", "I-LOC"]},
    ])
    from tunelab.data.loaders import load_records

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        examples = normalise_records(load_records(str(path)), TaskConfig(**NER_TASK), "train", TAGS)
    assert [e["tags"] for e in examples] == [["B-PER", "I-PER"], ["O", "B-LOC", "I-LOC"], ["B-PER", "B-LOC"]]
    assert examples[1]["target"] == "O B-LOC I-LOC" and examples[1]["text"] == "in New York"
    message = " ".join(str(w.message) for w in caught)
    assert f"{path}:2 (token 1)" in message and f"{path}:3 (token 1)" in message and f"{path}:1" not in message


@pytest.mark.parametrize("record,expected", [
    ({"tokens": ["a", "b"], "tags": ["O"]}, "2 tokens but 1 tags"),
    ({"tokens": ["a"], "tags": ["X-PER"]}, "tag 'X-PER' of token 0 ('a') is not IOB2"),
    ({"tokens": ["a"], "tags": ["B-ORG"]}, "tag 'B-ORG' of token 0 is not in the tag set"),
    ({"tokens": "a b", "tags": ["O", "O"]}, "must be a non-empty list of words"),
    ({"tokens": ["a b"], "tags": ["O"]}, "each token must be one word"),
])
def test_bad_records_name_file_and_line(tmp_path, record, expected):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"tokens": ["ok"], "tags": ["O"]}, record])
    from tunelab.data.loaders import load_records

    with pytest.raises(DataError) as err:
        normalise_records(load_records(str(path)), TaskConfig(**NER_TASK), "test", TAGS)
    assert str(err.value).startswith(f"{path}:2: ") and expected in str(err.value)


def test_bad_data_exits_2_before_training_and_writes_nothing(tmp_path, tiny_bert_dir, tiny_ner, capsys):
    data = dict(tiny_ner, test=str(write_jsonl(tmp_path / "bad.jsonl", [{"tokens": ["a", "b"], "tags": ["O"]}])))
    out = tmp_path / "runs" / "x"
    assert main(["run", str(ner_yaml(tmp_path, tiny_bert_dir, data, {"name": "head"})), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "bad.jsonl:1: 2 tokens but 1 tags" in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("sections,expected", [
    ({"metrics": ["accuracy"]}, "accuracy cannot score tag sequences; use metrics: [entity_f1"),
    ({"train": {"label_smoothing": 0.1}}, "train.label_smoothing works on a label (or the text) per example"),
])
def test_options_that_cannot_score_or_train_tags_are_refused_with_the_line(tmp_path, tiny_bert_dir, tiny_ner, capsys,
                                                                          sections, expected):
    path = experiment_yaml(tmp_path / "exp.yaml", tiny_bert_dir, tiny_ner, {"name": "head"}, task=NER_TASK,
                           **{"metrics": NER_METRICS, **sections})
    assert main(["run", str(path), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert f"{path}, line " in err and expected in err


def test_tag_set_from_entity_types_or_the_data():
    assert tag_names(["PER", "LOC"]) == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    assert tag_names(["B-PER", "I-PER", "O", "B-MISC"]) == ["O", "B-MISC", "I-MISC", "B-PER", "I-PER"]
    assert repair_iob2(["I-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-LOC"]) == (
        ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-LOC"], [0, 3])


# --------------------------------------------------------------------------------------------- word pieces


def test_only_the_first_piece_of_each_word_carries_its_tag(bert_tokenizer):
    example = {"tokens": ["Blackburn", "visited", "Zwingmann", "."], "tags": ["B-PER", "O", "B-LOC", "O"]}
    feature = encode_tagged(bert_tokenizer, [example], TAGS, max_length=32)[0]
    pieces = bert_tokenizer.convert_ids_to_tokens(feature["input_ids"])
    assert len(pieces) > len(example["tokens"]) + 2  # the names split into several pieces
    expected, seen = [], set()
    for piece, word in zip(pieces, bert_tokenizer(example["tokens"], is_split_into_words=True).word_ids()):
        first = word is not None and word not in seen
        expected.append(TAGS.index(example["tags"][word]) if first else IGNORE)
        seen.add(word)
        if word is not None and not first:
            assert piece.startswith("##")  # a continuation piece is the one ignored
    assert feature["labels"] == expected
    assert aligned_labels([None, 0, 0, 1, None], [3, 0]) == [IGNORE, 3, IGNORE, 0, IGNORE]


def test_words_are_read_at_their_first_piece_and_cut_words_are_outside():
    import numpy as np

    logits = np.zeros((5, len(TAGS)))
    logits[1, TAGS.index("B-PER")] = logits[2, TAGS.index("B-LOC")] = logits[3, TAGS.index("I-PER")] = 1
    # pieces: [CLS] w0 w0 w1 [SEP]; word 2 was cut by max_length; word 1's I-PER continues PER
    assert word_tags(logits, [None, 0, 0, 1, None], 3, TAGS) == ["B-PER", "I-PER", "O"]


# --------------------------------------------------------------------------------------------- metrics


GOLD = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O", "B-PER"], ["O", "O"]]
PRED = [["B-PER", "O", "O", "B-LOC"], ["B-ORG", "O", "B-LOC"], ["B-MISC", "O"]]
# By hand: gold entities PER(0-2) LOC(3) | ORG(0) PER(2) = 4; predicted PER(0-1) LOC(3) | ORG(0) LOC(2) | MISC(0) = 5;
# exact matches (type and both boundaries): LOC(3) in sentence 1 and ORG(0) in sentence 2 = 2.


def test_entity_metrics_agree_with_hand_counts():
    result = compute_metrics(["entity_precision", "entity_recall", "entity_f1", "per_type_f1"],
                             [" ".join(p) for p in PRED], GOLD, labels=tag_names(["PER", "LOC", "ORG", "MISC"]))
    precision, recall = 2 / 5, 2 / 4
    assert result["entity_precision"] == pytest.approx(precision)
    assert result["entity_recall"] == pytest.approx(recall)
    assert result["entity_f1"] == pytest.approx(2 * precision * recall / (precision + recall))
    # PER: 0 of 2 found, 1 predicted; LOC: 1 of 1 found, 2 predicted (P 1/2, R 1) → 2/3; ORG: 1; MISC: 0 (a false positive)
    assert {k: round(v, 6) for k, v in result.items() if k.startswith("f1_")} == {
        "f1_PER": 0.0, "f1_LOC": round(2 / 3, 6), "f1_ORG": 1.0, "f1_MISC": 0.0}


def test_strict_iob2_counts_an_entity_that_starts_with_i_as_no_entity():
    # seqeval's strict IOB2 mode: I-PER after O begins no valid entity (the tag readers repair before scoring)
    assert compute_metrics(["entity_recall"], ["I-PER I-PER O"], ["B-PER I-PER O"])["entity_recall"] == 0.0
    assert compute_metrics(["entity_recall"], [" ".join(repair_iob2(["I-PER", "I-PER", "O"])[0])],
                           ["B-PER I-PER O"])["entity_recall"] == 1.0


def test_spans_and_tags_round_trip():
    tags = ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-LOC", "O"]
    spans = entities(tags)
    assert spans == [Entity("PER", 0, 2), Entity("LOC", 3, 4), Entity("LOC", 4, 6)]
    assert tags_of(spans, len(tags)) == tags


# --------------------------------------------------------------------------------------------- end to end


def test_compare_head_and_lora_report_entity_f1_per_type(tmp_path, tiny_bert_dir, tiny_ner, capsys):
    path = ner_yaml(tmp_path, tiny_bert_dir, tiny_ner, {"name": "head"})
    raw = yaml.safe_load(path.read_text())
    raw["output_dir"] = str(tmp_path / "runs")
    raw["train"].update(epochs=4, learning_rate=5e-3)
    raw["sweep"] = {"isolation": "none", "seeds": [1], "strategies": ["head", "lora"]}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    assert main(["compare", str(path)]) == 0
    root = tmp_path / "runs" / "tiny"
    board = (root / "leaderboard.md").read_text()
    for column in ("entity_f1", "f1_PER", "f1_LOC"):
        assert column in board
    cells = {json.loads(p.read_text())["test"]["entity_f1"] for p in root.glob("*/metrics.json")}
    assert len(list(root.glob("*/metrics.json"))) == 2 and all(0.0 <= v <= 1.0 for v in cells)
    assert "f1_PER" in (root / "report.md").read_text()
    # the lora cell's saved adapter tags the test split as it did during the run
    lora = next(p.parent for p in root.glob("lora*/metrics.json"))
    stored = json.loads((lora / "metrics.json").read_text())["test"]
    capsys.readouterr()
    assert main(["evaluate", str(lora), "--data", tiny_ner["test"]]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"] == pytest.approx(stored, abs=1e-9)


def test_a_trained_tagger_learns_and_predict_prints_entities(tmp_path, tiny_bert_dir, tiny_ner, capsys):
    path = ner_yaml(tmp_path, tiny_bert_dir, tiny_ner, {"name": "full"}, train={"epochs": 6, "learning_rate": 3e-3})
    run = tmp_path / "run"
    assert main(["run", str(path), "--out", str(run)]) == 0
    metrics = json.loads((run / "metrics.json").read_text())["test"]
    assert metrics["entity_f1"] > 0.8  # the slots are trivially learnable; a random head scores near 0
    stored = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    assert all(len(r["prediction"].split()) == len(r["tokens"]) for r in stored)
    inputs = tmp_path / "in.txt"
    inputs.write_text(" ".join(stored[0]["tokens"]) + "\n" + json.dumps({"tokens": stored[1]["tokens"]}) + "\n")
    capsys.readouterr()
    assert main(["predict", str(run), "--data", str(inputs)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["prediction"] for r in rows] == [stored[0]["prediction"], stored[1]["prediction"]]
    assert rows[0]["entities"] == [{"text": " ".join(stored[0]["tokens"][e.start:e.end]), "type": e.type,
                                    "start": e.start, "end": e.end} for e in entities(stored[0]["prediction"])]


# --------------------------------------------------------------------------------------------- prompting


def test_generated_entity_lines_parse_back_to_spans():
    from tunelab.methods.entity_prompt import parse_entities

    tokens = ["Peter", "Blackburn", "met", "EU", "officials", "in", "Paris", "and", "paris", "."]
    text = ("Peter Blackburn: PER\n- EU: org\nParis: LOC\nBrussels: LOC\nofficials: FOOD\nnone\n"
            "Blackburn: ORG\nmet\n: PER")
    spans = parse_entities(text, tokens, ["LOC", "MISC", "ORG", "PER"])
    # both Paris occurrences exact-match once: 'Paris' exactly (index 6), not the lower-case one (exact match wins);
    # Brussels is not in the sentence, FOOD no type, Blackburn already taken
    assert spans == [Entity("PER", 0, 2), Entity("ORG", 3, 4), Entity("LOC", 6, 7)]
    assert parse_entities("paris: LOC", tokens, ["LOC"]) == [Entity("LOC", 8, 9)]
    assert parse_entities("PARIS: LOC", tokens, ["LOC"]) == [Entity("LOC", 6, 7), Entity("LOC", 8, 9)]


def test_few_shot_extraction_runs_saves_its_prompt_and_reloads(tmp_path, tiny_llama_dir, tiny_ner, capsys):
    path = ner_yaml(tmp_path, tiny_llama_dir, tiny_ner, {"name": "few_shot_ner", "k": 2, "generation": {"max_new_tokens": 6}},
                    model={"max_length": 200})
    run = tmp_path / "run"
    assert main(["run", str(path), "--out", str(run)]) == 0
    plan = json.loads((run / "entity_prompt.json").read_text())
    assert len(plan["demonstrations"]) == 2 and plan["types"] == ["LOC", "PER"] and "LOC (location)" in plan["instruction"]
    stored = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    assert all(len(r["prediction"].split()) == len(r["tokens"]) and "generation" in r for r in stored)
    capsys.readouterr()
    assert main(["prompt", str(path), "--n", "1"]) == 0
    shown = capsys.readouterr().out
    demo = plan["demonstrations"][0]
    assert f"Sentence: {demo['text']}\nEntities:\n" in shown and shown.count("Sentence:") == 3
    assert main(["evaluate", str(run), "--data", tiny_ner["test"]]) == 0
    stored_metrics = json.loads((run / "metrics.json").read_text())["test"]
    assert json.loads(capsys.readouterr().out)["metrics"] == pytest.approx(stored_metrics, abs=1e-9)
