"""`tunelab init`: a ready experiment file from a user's data file — fields and labels detected (or a clear
exit 2 naming the option to pass), paths relative to the file, a sweep that passes every check a sweep
makes before training, no overwriting without --force, nothing written on bad input."""

from __future__ import annotations

import csv
import json
import re

import pytest
import yaml

from tunelab.cli import main
from tunelab.config import load_experiment
from tunelab.init_experiment import machine_workers

POSITIVE = ["a lovely film", "great acting and a warm story", "fun from start to end", "I smiled all the way",
            "a gem of a movie", "bright, kind and clever", "the best thing this year", "moving and funny"]
NEGATIVE = ["a dull mess", "tedious and far too long", "I walked out", "flat jokes and bad acting",
            "a waste of a good cast", "boring from the first scene", "nothing works here", "loud and empty"]


def jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def reviews(text="sentence", label="sentiment", pos="positive", neg="negative", repeat=3):
    """Sentiment rows under the given field names (each text made unique per repeat)."""
    return [{text: f"{t} ({i})", label: value} for i in range(repeat)
            for texts, value in ((POSITIVE, pos), (NEGATIVE, neg)) for t in texts]


def init(capsys, *argv):
    code = main(["init", *map(str, argv)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_detected_fields_and_a_sweep_over_every_family_that_passes_the_dry_run(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    data = jsonl(tmp_path / "data" / "reviews.jsonl", reviews(repeat=4))  # 32 per class: K=16 for train and dev
    test = jsonl(tmp_path / "data" / "held_out.jsonl", reviews(repeat=1))
    out = tmp_path / "exps" / "mine.yaml"
    code, stdout, err = init(capsys, data, "--test", test, "--out", out)
    assert code == 0, err
    assert "label field: 'sentiment'" in stdout and "text field: 'sentence'" in stdout
    assert "labels: negative, positive" in stdout and f"wrote {out} (13 cells)" in stdout
    raw = yaml.safe_load(out.read_text())
    assert raw["task"] == {"type": "classification", "text_field": "sentence", "label_field": "sentiment",
                           "label_names": ["negative", "positive"]}
    assert raw["data"]["train"] == "../data/reviews.jsonl"  # relative to the experiment file, not the shell
    config = load_experiment(out)
    assert config.data.train == str(data.resolve()) and config.data.test == str(test.resolve())
    assert config.data.k_shot == 16 and config.model.name == "minilm-l6"
    strategies = {entry["name"]: entry for entry in raw["sweep"]["strategies"]}
    assert set(strategies) == {"head", "full", "bitfit", "lora", "zero_shot", "few_shot", "pet"}
    assert all(strategies[s]["model"]["name"] == "smollm2-135m" for s in ("zero_shot", "few_shot", "pet"))
    assert "max_test" not in raw["data"]  # 16 test rows: all of them
    assert raw["sweep"]["workers"] == machine_workers()[0]  # sized to the machine: see the next test
    assert "scale up" in out.read_text()  # the comment says how
    # every check `tunelab compare` makes before training: data loaded and K-shot sampled, cells planned
    assert main(["compare", str(out), "--dry-run", "--out", str(tmp_path / "sweep")]) == 0, capsys.readouterr().err
    assert "13 cells: 0 finished, 13 to run" in capsys.readouterr().out


def test_records_with_a_rationale_get_a_commented_cot_entry_that_runs_uncommented(tmp_path, capsys):
    rows = [dict(r, rationale=f"It says {r['sentence']}.") for r in reviews(repeat=4)]
    data, test = jsonl(tmp_path / "train.jsonl", rows), jsonl(tmp_path / "test.jsonl", reviews(repeat=1))
    out = tmp_path / "exp.yaml"
    code, stdout, err = init(capsys, data, "--test", test, "--out", out)
    assert code == 0, err
    assert "records carry 'rationale': few-shot chain-of-thought (cot)" in stdout and "(13 cells)" in stdout
    text = out.read_text()
    assert "cot" not in [e["name"] for e in yaml.safe_load(text)["sweep"]["strategies"]]  # not run by default
    uncommented = text.replace("    # - {name: cot", "    - {name: cot")
    entry = [e for e in yaml.safe_load(uncommented)["sweep"]["strategies"] if e["name"] == "cot"]
    assert entry and entry[0]["settings"]["rationale_field"] == "rationale"
    out.write_text(uncommented)
    assert main(["compare", str(out), "--dry-run", "--out", str(tmp_path / "sweep")]) == 0, capsys.readouterr().err
    assert "15 cells: 0 finished, 15 to run" in capsys.readouterr().out
    # the dry run reads the entry: a field the records lack stops it
    out.write_text(uncommented.replace("rationale_field: rationale", "rationale_field: reasons"))
    assert main(["compare", str(out), "--dry-run", "--out", str(tmp_path / "sweep")]) == 2
    assert re.search(r"sweep cell cot-k16-seed1: .*exp.yaml, line \d+: .*no 'reasons' field.*set strategy.rationale_field",
                     capsys.readouterr().err)
    plain = tmp_path / "plain.yaml"
    assert init(capsys, jsonl(tmp_path / "plain.jsonl", reviews(repeat=4)), "--test", test, "--out", plain)[0] == 0
    assert "cot" not in plain.read_text()


def test_the_check_of_the_written_file_adds_no_warning_per_seed_to_inits_output(tmp_path, capsys):
    """init checks its file as a sweep would (every seed's splits loaded), whose data warnings (here a duplicate
    text) would repeat once per seed in init's output; the notes and `data check` are where init reports data."""
    import warnings

    rows = reviews(repeat=4)
    data = jsonl(tmp_path / "train.jsonl", rows + rows[:1])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, stdout, err = init(capsys, data, "--test", jsonl(tmp_path / "test.jsonl", reviews(repeat=1)),
                                 "--out", tmp_path / "exp.yaml")
    assert code == 0, err
    assert [str(w.message) for w in caught] == []
    assert main(["compare", str(tmp_path / "exp.yaml"), "--dry-run", "--out", str(tmp_path / "sweep")]) == 0


@pytest.mark.parametrize("cores, memory_gb, workers", [(2, 23, 2), (16, 64, 2), (1, 64, 1), (8, 8, 1)])
def test_workers_sized_to_the_machine(monkeypatch, cores, memory_gb, workers):
    import os

    page = 4096
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    monkeypatch.setattr(os, "sysconf", lambda name: page if name == "SC_PAGE_SIZE" else memory_gb * 2**30 // page)
    assert machine_workers() == (workers, f"this machine: {cores} cores, {memory_gb} GB")


def test_csv_label_found_as_the_only_field_of_few_values_and_k_fits_the_smallest_class(tmp_path, capsys):
    rows = reviews(text="review", label="polarity", pos="pos", neg="neg", repeat=1)[:13]  # 8 pos, 5 neg
    data = tmp_path / "train.csv"
    with open(data, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, ["id", "review", "polarity"])
        writer.writeheader()
        writer.writerows({"id": str(i), **row} for i, row in enumerate(rows))
    code, stdout, err = init(capsys, data, "--out", tmp_path / "exp.yaml")
    assert code == 0, err
    assert "label field: 'polarity' (the only field with a few repeated values)" in stdout
    assert "no --test: 20% of DATA (per class where it has classes) is held out as the test split" in stdout
    raw = yaml.safe_load((tmp_path / "exp.yaml").read_text())
    assert raw["data"]["k_shot"] == 2 and raw["sweep"]["k_shot"] == [2]  # 5 'neg' rows, 1 held out: 2 train + 2 dev
    assert raw["data"]["test_fraction"] == 0.2 and "test" not in raw["data"]
    assert raw["task"]["text_field"] == "review" and raw["name"] == tmp_path.name  # "train" names its folder instead
    assert main(["compare", str(tmp_path / "exp.yaml"), "--dry-run", "--out", str(tmp_path / "sweep")]) == 0


def test_integer_labels_leave_the_prompting_strategies_out(tmp_path, capsys):
    data = jsonl(tmp_path / "train.jsonl", reviews(text="text", label="label", pos=1, neg=0))
    code, stdout, err = init(capsys, data, "--out", tmp_path / "exp.yaml")
    assert code == 0, err
    raw = yaml.safe_load((tmp_path / "exp.yaml").read_text())
    assert raw["task"]["label_names"] == ["0", "1"] and "prompt" not in raw
    assert {e["name"] for e in raw["sweep"]["strategies"]} == {"head", "full", "bitfit", "lora"}
    assert "prompting strategies are left out" in stdout


@pytest.mark.parametrize("rows, option", [
    ([{"title": f"a man sleeps {i}", "summary": f"someone rests {i}", "label": "yes" if i % 2 else "no"}
      for i in range(12)], "--text-field"),
    ([{"text": f"row {i}", "topic": "a" if i % 2 else "b", "mood": "x" if i % 3 else "y"} for i in range(12)],
     "--label-field"),
], ids=["two text fields", "two label candidates"])
def test_an_undecidable_field_exits_2_naming_the_option_and_writes_nothing(tmp_path, capsys, rows, option):
    data = jsonl(tmp_path / "train.jsonl", rows)
    out = tmp_path / "new" / "exp.yaml"
    code, _, err = init(capsys, data, "--out", out)
    assert code == 2 and option in err and err.startswith("error: ") and "Traceback" not in err
    assert not out.parent.exists()
    field = "title" if option == "--text-field" else "topic"
    assert init(capsys, data, "--out", out, option, field)[0] == 0


def test_refuses_to_overwrite_without_force(tmp_path, capsys):
    data = jsonl(tmp_path / "train.jsonl", reviews(text="text", label="label"))
    out = tmp_path / "exp.yaml"
    out.write_text("# mine\n")
    code, _, err = init(capsys, data, "--out", out)
    assert code == 2 and "already exists" in err and "--force" in err
    assert out.read_text() == "# mine\n"
    assert init(capsys, data, "--out", out, "--force")[0] == 0
    assert load_experiment(out).task.text_field == "text"


def test_bad_data_exits_2_with_its_lines_and_writes_nothing(tmp_path, capsys):
    rows = reviews(text="text", label="label")
    rows[4]["text"] = "   "
    data = jsonl(tmp_path / "train.jsonl", rows)
    out = tmp_path / "exp.yaml"
    code, _, err = init(capsys, data, "--out", out)
    assert code == 2 and f"{data}:5: field 'text' is empty" in err and "tunelab data check" in err
    assert not out.exists() and not list(tmp_path.glob(".*"))  # no staging or probe file left either
    assert init(capsys, tmp_path / "missing.jsonl", "--out", out)[0] == 2 and not out.exists()


def nli_rows(first="premise", second="hypothesis", repeat=4):
    """Entailment pairs: each premise twice, with an entailed and a contradicting hypothesis."""
    return [{first: f"{p} ({i})", second: h, "label": label} for i in range(repeat)
            for p in POSITIVE for h, label in (("someone is happy", "entailment"), ("someone is sad", "contradiction"))]


@pytest.mark.parametrize("first, second, given", [
    ("premise", "hypothesis", []), ("sentence1", "sentence2", []), ("text", "text_pair", []),
    ("question", "sentence", []),  # QNLI's names: `sentence` alone would have been taken as the only text
    ("claim", "evidence", ["--text-field", "claim", "--text-pair-field", "evidence"]),
])
def test_sentence_pairs_make_a_pair_experiment_whose_prompt_reads_both_texts(tmp_path, capsys, first, second, given):
    data = jsonl(tmp_path / "train.jsonl", nli_rows(first, second))
    out = tmp_path / "exp.yaml"
    code, stdout, err = init(capsys, data, "--out", out, *given)
    assert code == 0, err
    assert f"text fields: {first!r} and {second!r}, a sentence pair" in stdout
    raw = yaml.safe_load(out.read_text())
    assert raw["task"]["type"] == "pair_classification"
    assert (raw["task"]["text_field"], raw["task"]["text_pair_field"]) == (first, second)
    assert raw["prompt"]["template"].startswith("{{ text }}\n{{ text_pair }}\n")
    assert main(["compare", str(out), "--dry-run", "--out", str(tmp_path / "sweep")]) == 0, capsys.readouterr().err
    # the prompting entries' prompt, as the LM reads it: the second text is in it
    code = main(["prompt", str(out), "--entry", "zero_shot", "--n", "1"])
    shown = capsys.readouterr()
    assert code == 0, shown.err
    assert re.search(r"\(\d\)\nsomeone is (happy|sad)\nQuestion: contradiction or entailment\?\nAnswer:", shown.out)


def test_a_missing_or_repeated_pair_field_exits_2(tmp_path, capsys):
    data = jsonl(tmp_path / "train.jsonl", nli_rows())
    code, _, err = init(capsys, data, "--out", tmp_path / "exp.yaml", "--text-pair-field", "hypotesis")
    assert code == 2 and "--text-pair-field 'hypotesis' is not a field" in err and "hypothesis" in err
    code, _, err = init(capsys, data, "--out", tmp_path / "exp.yaml", "--text-field", "premise", "--text-pair-field", "premise")
    assert code == 2 and "name the same field" in err and not (tmp_path / "exp.yaml").exists()


def ner_rows(n=12, words="tokens", tags="tags"):
    people = ["Anna", "Omar", "Lena", "Ravi"]
    return [{words: [people[i % 4], "visited", "Paris", str(i)], tags: ["B-PER", "O", "B-LOC", "O"]} for i in range(n)]


def qa_rows(n=12):
    rows = []
    for i in range(n):
        context = f"The museum {i} opened in {1900 + i} and holds {i + 3} paintings."
        rows.append({"id": str(i), "question": f"When did museum {i} open?", "context": context,
                     "answers": {"text": [str(1900 + i)], "answer_start": [context.index(str(1900 + i))]}})
    return rows


@pytest.mark.parametrize("rows, task, fields, metric, entries", [
    (ner_rows(), "token_classification", {}, "entity_f1", {"head", "full", "lora", "few_shot_ner"}),
    (ner_rows(words="words", tags="ner_tags"), "token_classification", {"tokens_field": "words", "tags_field": "ner_tags"},
     "entity_f1", {"head", "full", "lora", "few_shot_ner"}),
    (qa_rows(), "extractive_qa", {}, "squad_f1", {"span-full", "span-lora", "few-shot-smollm2"}),
], ids=["conll", "other field names", "squad"])
def test_named_entity_and_qa_data_get_their_own_experiment(tmp_path, capsys, rows, task, fields, metric, entries):
    data = jsonl(tmp_path / "train.jsonl", rows)
    test = jsonl(tmp_path / "test.jsonl", rows[:4])
    out = tmp_path / "exp.yaml"
    code, stdout, err = init(capsys, data, "--test", test, "--out", out)
    assert code == 0, err
    raw = yaml.safe_load(out.read_text())
    assert raw["task"] == {"type": task, **fields}
    assert raw["data"]["k_shot"] == 6 and raw["data"]["dev_k_shot"] == 6  # 12 records: half for train, the rest for dev
    assert metric in raw["metrics"] and {e.get("id", e["name"]) for e in raw["sweep"]["strategies"]} == entries
    assert f"wrote {out} ({2 * len(entries)} cells)" in stdout
    # the data is loaded, every record normalised and K drawn, as `compare` does before training
    assert main(["compare", str(out), "--dry-run", "--out", str(tmp_path / "sweep")]) == 0, capsys.readouterr().err


def test_a_bad_tagged_record_or_a_field_option_exits_2_and_writes_nothing(tmp_path, capsys):
    rows = ner_rows()
    rows[6]["tags"] = rows[6]["tags"][:3]
    data = jsonl(tmp_path / "train.jsonl", rows)
    out = tmp_path / "exp.yaml"
    code, _, err = init(capsys, data, "--out", out)
    assert code == 2 and f"{data}:7: 4 tokens but 3 tags" in err and not out.exists()
    data = jsonl(tmp_path / "train.jsonl", ner_rows())
    code, _, err = init(capsys, data, "--out", out, "--label-field", "tags")
    assert code == 2 and "--label-field: field options name classification fields" in err and not out.exists()
    assert main(["data", "check", str(data)]) == 2
    assert f"`tunelab init {data}` checks every record" in capsys.readouterr().err


DAYS = [{"question": f"Which day follows day {i}?", "choices": [f"day {i + 1}", f"day {i - 1}", f"day {i + 7}"],
         "label": f"day {i + 1}"} for i in range(12)]


def test_multiple_choice_questions_get_an_experiment_that_prompts_and_trains(tmp_path, capsys):
    """Their answers are free text too (one per record), but each is one of the record's choices: not generation."""
    data = jsonl(tmp_path / "train.jsonl", DAYS)
    out = tmp_path / "exp.yaml"
    code, stdout, err = init(capsys, data, "--out", out)
    assert code == 0, err
    raw = yaml.safe_load(out.read_text())
    assert raw["task"] == {"type": "multiple_choice", "text_field": "question", "choices_field": "choices"}
    # 12 questions, 2 held out as the test split (no --test): 5 + 5 of the 10 left
    assert (raw["data"]["k_shot"], raw["data"]["dev_k_shot"]) == (5, 5) and raw["metrics"] == ["accuracy"]
    entries = {entry["id"]: entry for entry in raw["sweep"]["strategies"]}
    assert set(entries) == {"zero-shot", "zero-shot-per-char", "few-shot", "pet-choices-lora"}
    assert entries["zero-shot-per-char"]["settings"] == {"length_norm": "char"}
    assert entries["pet-choices-lora"] == {"name": "pet_choices", "id": "pet-choices-lora",
                                           "settings": {"train": "lora", "delta": {"r": 8}}}
    # a 64-token context and three short choices a question: 2,048 tokens a step hold more than 8, at most 8
    assert raw["train"]["batch_size"] == 8 and "gradient_accumulation_steps" not in raw["train"]
    assert entries["few-shot"]["settings"]["k"] == 3
    assert "{{ choices | join(', ') }}" in raw["prompt"]["template"]
    assert "text field: 'question'" in stdout and "K = 5 questions (train) and 5 (dev)" in stdout
    assert load_experiment(out).task.type == "multiple_choice"
    same_length = [{**row, "choices": [f"day {i:02d}" for i in (n + 1, n + 2, n + 3)], "label": f"day {n + 1:02d}"}
                   for n, row in enumerate(DAYS)]
    code, stdout, err = init(capsys, jsonl(tmp_path / "dates.jsonl", same_length), "--out", tmp_path / "dates.yaml")
    assert code == 0, err
    raw = yaml.safe_load((tmp_path / "dates.yaml").read_text())
    assert [entry["id"] for entry in raw["sweep"]["strategies"]] == ["zero-shot", "few-shot", "pet-choices-lora"]
    assert "zero-shot per character left out: every choice has the same length" in stdout
    assert main(["data", "check", str(data)]) == 2
    err = capsys.readouterr().err
    assert "holds multiple-choice questions" in err and f"`tunelab init {data}` checks every record" in err


def test_a_multiple_choice_record_whose_answer_is_no_choice_is_named(tmp_path, capsys):
    rows = [dict(row) for row in DAYS]
    rows[3] = {**rows[3], "label": "day 99"}
    data = jsonl(tmp_path / "train.jsonl", rows)
    code, _, err = init(capsys, data, "--out", tmp_path / "exp.yaml")
    assert code == 2 and f"{data}:4" in err and "'day 99' is not one of its choices" in err
    assert not (tmp_path / "exp.yaml").exists()
    code, _, err = init(capsys, jsonl(tmp_path / "ok.jsonl", DAYS), "--out", tmp_path / "exp.yaml", "--label-field", "label")
    assert code == 2 and "--label-field: " in err and "multiple-choice" in err and not (tmp_path / "exp.yaml").exists()


SUMS = [{"text": f"What is {i} plus {2 * i + 7}?", "label": str(3 * i + 7), "idx": i} for i in range(40)]
ARTICLES = [{"body": " ".join(f"the council met on day {i} and talked about roads parks and the budget".split() * 3),
             "summary": f"council meets on day {i} to discuss the town budget and its roads"} for i in range(30)]


@pytest.mark.parametrize("rows, sizes, fields, metrics, template", [
    (SUMS, (16, 16), {"text_field": "text", "target_field": "label"}, ["exact_match"], "Question: {{ text }}\nAnswer:"),
    (ARTICLES, (12, 12), {"text_field": "body", "target_field": "summary"}, ["rouge1", "rouge2", "rougeL"],
     "Input: {{ text }}\nOutput:"),
], ids=["short answers", "summaries"])
def test_text_to_generate_gets_a_generation_experiment(tmp_path, capsys, rows, sizes, fields, metrics, template):
    """K and dev K of what the held-out test split leaves (20%, no --test): dev at most 16, half when fewer; K at most
    32 of the rest; the metric by answer length."""
    data = jsonl(tmp_path / "train.jsonl", rows)
    out = tmp_path / "exp.yaml"
    code, stdout, err = init(capsys, data, "--out", out)
    assert code == 0, err
    raw = yaml.safe_load(out.read_text())
    assert raw["task"] == {"type": "generation", **fields} and raw["metrics"] == metrics
    assert raw["prompt"]["template"] == template and raw["model"]["name"] == "smollm2-135m"
    assert (raw["data"]["k_shot"], raw["data"]["dev_k_shot"]) == sizes
    entries = {entry["id"]: entry for entry in raw["sweep"]["strategies"]}
    assert set(entries) == {"zero-shot", "few-shot", "sft-lora"}
    assert entries["sft-lora"]["settings"]["train"] == "lora"
    generation = entries["zero-shot"]["settings"]["generation"]
    assert generation["stop"] == ["\n"] and generation == entries["sft-lora"]["settings"]["generation"]
    assert generation["max_new_tokens"] < raw["model"]["max_length"]
    assert f"wrote {out} (5 cells)" in stdout and "text to generate" in stdout
    config = load_experiment(out)
    assert config.task.type == "generation"


def test_answers_longer_than_the_model_can_take_leave_few_shot_out(tmp_path, capsys):
    rows = [{"text": " ".join(["word"] * 1200) + f" {i}", "target": f"a long article number {i} about words"}
            for i in range(12)]
    data = jsonl(tmp_path / "train.jsonl", rows)
    code, stdout, err = init(capsys, data, "--out", tmp_path / "exp.yaml")
    assert code == 0, err
    raw = yaml.safe_load((tmp_path / "exp.yaml").read_text())
    assert {entry["id"] for entry in raw["sweep"]["strategies"]} == {"zero-shot", "sft-lora"}
    assert "few-shot left out" in stdout and raw["model"]["max_length"] >= 1200


def test_a_generation_record_without_its_answer_is_named_and_nothing_is_written(tmp_path, capsys):
    rows = [dict(row) for row in SUMS]
    rows[5] = {"text": "What is 1 plus 1?", "idx": 5}
    data = jsonl(tmp_path / "train.jsonl", rows)
    code, _, err = init(capsys, data, "--out", tmp_path / "exp.yaml")
    assert code == 2 and f"{data}:6" in err and "'label'" in err and "Traceback" not in err
    assert not (tmp_path / "exp.yaml").exists()
    code, _, err = init(capsys, jsonl(tmp_path / "ok.jsonl", SUMS), "--out", tmp_path / "exp.yaml", "--text-pair-field", "idx")
    assert code == 2 and "--text-pair-field" in err and not (tmp_path / "exp.yaml").exists()


def test_data_check_on_text_to_generate_points_to_init(tmp_path, capsys):
    data = jsonl(tmp_path / "train.jsonl", SUMS)
    assert main(["data", "check", str(data)]) == 2
    err = capsys.readouterr().err
    assert "most records a value of their own" in err and f"`tunelab init {data}` writes a generation experiment" in err


@pytest.mark.parametrize("names, words, pet", [
    (["search_creative_work", "search_screening_event", "play_music"],
     {"search_creative_work": "creative work", "search_screening_event": "screening event", "play_music": "play music"},
     True),
    (["good_film", "good_film_again"], {"good_film": "good film", "good_film_again": "good film again"}, False),
], ids=["shared first word dropped", "no distinct first token: pet_choices instead"])
def test_label_words_start_with_distinct_tokens_for_pet_else_pet_choices_trains(tmp_path, capsys, names, words, pet):
    rows = [{"text": f"example {i} of {name}", "label": name} for i in range(4) for name in names]
    data = jsonl(tmp_path / "train.jsonl", rows)
    code, stdout, err = init(capsys, data, "--out", tmp_path / "exp.yaml")
    assert code == 0, err
    raw = yaml.safe_load((tmp_path / "exp.yaml").read_text())
    assert raw["prompt"]["verbalizer"] == words
    trained = [e["name"] for e in raw["sweep"]["strategies"] if e["name"].startswith("pet")]
    assert trained == (["pet"] if pet else ["pet_choices"])
    assert ("label words shortened" in stdout) is pet and ("pet_choices instead of pet" in stdout) is not pet


@pytest.mark.parametrize("rows, hint", [(reviews(text="text", label="label"), True), (ner_rows(), False)],
                         ids=["classification", "named entities"])
def test_lines_that_are_no_records_are_all_listed_and_nothing_is_written(tmp_path, capsys, rows, hint):
    lines = [json.dumps(r) for r in rows]
    lines[2], lines[5] = '{"text": "broken', "{also broken"
    data = tmp_path / "train.jsonl"
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    code, _, err = init(capsys, data, "--out", tmp_path / "exp.yaml")
    assert code == 2 and "the data has 2 problem(s); nothing written" in err
    assert f"{data}:3: invalid JSON" in err and f"{data}:6: invalid JSON" in err
    assert ("tunelab data check" in err) is hint and not (tmp_path / "exp.yaml").exists()


@pytest.mark.parametrize("words, batch, accumulation", [(5, 8, None), (700, 2, 2), (1500, 1, 4)])
def test_long_prompts_train_with_fewer_examples_a_step(tmp_path, capsys, words, batch, accumulation):
    """sft's memory grows with batch × length: long prompts take fewer examples a step, accumulated to 4 an update."""
    rows = [{"text": " ".join(["word"] * words) + f" {i}", "target": f"a text number {i} about the words in it"}
            for i in range(12)]
    code, _, err = init(capsys, jsonl(tmp_path / "train.jsonl", rows), "--out", tmp_path / "exp.yaml")
    assert code == 0, err
    train = yaml.safe_load((tmp_path / "exp.yaml").read_text())["train"]
    assert train["batch_size"] == batch and train.get("gradient_accumulation_steps") == accumulation


def test_a_test_file_that_is_data_or_repeats_its_texts_is_named_in_a_note(tmp_path, capsys):
    rows = reviews(repeat=4)
    data = jsonl(tmp_path / "train.jsonl", rows)
    code, stdout, err = init(capsys, data, "--test", data, "--out", tmp_path / "same.yaml")
    assert code == 0, err
    assert "--test is DATA itself" in stdout and "leave --test out to hold 20% of DATA out" in stdout
    test = jsonl(tmp_path / "test.jsonl", rows[:3] + [{"sentence": "an unseen review", "sentiment": "positive"}])
    code, stdout, err = init(capsys, data, "--test", test, "--out", tmp_path / "overlap.yaml")
    assert code == 0, err
    assert "3 of the 4 test texts are also in DATA" in stdout and "DATA itself" not in stdout
    code, stdout, err = init(capsys, data, "--test", jsonl(tmp_path / "clean.jsonl", [{"sentence": "new", "sentiment": "negative"}]),
                             "--out", tmp_path / "clean.yaml")
    assert code == 0 and "also in DATA" not in stdout and "held out" not in stdout, err


@pytest.mark.parametrize("stem", ["train", "test", "validation"])
def test_a_split_named_file_names_the_experiment_after_its_folder(tmp_path, capsys, stem):
    """AG News ships only test.jsonl: init on it held part out and named the sweep `test`, not `agnews`."""
    (tmp_path / "agnews").mkdir()
    data = jsonl(tmp_path / "agnews" / f"{stem}.jsonl", reviews(repeat=4))
    code, _, err = init(capsys, data, "--out", tmp_path / "exp.yaml")
    assert code == 0, err
    assert yaml.safe_load((tmp_path / "exp.yaml").read_text())["name"] == "agnews"
