"""`tunelab data check`: counts, balance, token lengths, duplicates and every problem with its line;
exit 0 when a run could use the data, 2 when not (one clear report, no traceback)."""

from __future__ import annotations

import json

from tunelab.cli import main


def write(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def row(text, label):
    return json.dumps({"text": text, "label": label})


def check(capsys, *argv):
    code = main(["data", "check", *map(str, argv)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_clean_data_reports_counts_balance_and_token_percentiles(tmp_path, capsys):
    train = write(tmp_path / "train.jsonl", [row(f"good film {i}", "pos") for i in range(6)]
                  + [row(f"bad film number {i}", "neg") for i in range(2)])
    code, out, err = check(capsys, train)
    assert code == 0, err
    assert f"train: {train}: 8 valid examples" in out
    assert "label balance: neg 2 (25.0%), pos 6 (75.0%)" in out
    # "good film 0" is [CLS] good film 0 [SEP]: 5 tokens; "bad film number 0": 6
    assert "tokens (minilm-l6 tokenizer, special tokens included): p50 5, p90 6, p95 6, p99 6, max 6" in out
    assert "usable: no problems found" in out and "duplicates" not in out


def test_every_problem_is_listed_with_its_line_and_unusable_data_exits_2(tmp_path, capsys):
    train = write(tmp_path / "train.jsonl", [
        row("a fine film", "pos"),          # 1
        row("a dull film", "neg"),          # 2
        row("a fine film", "pos"),          # 3: duplicate of line 1
        row("   ", "neg"),                  # 4: empty text
        '{"text": "broken", "label": ',     # 5: not JSON
        json.dumps({"text": "no label"}),   # 6: missing label
        row("a dull film", "pos"),          # 7: duplicate of line 2 (with another label)
    ])
    test = write(tmp_path / "test.jsonl", [row("a fine film", "pos"), row("so-so", "meh")])
    code, out, err = check(capsys, train, "--test", test)
    assert code == 2 and "Traceback" not in out + err
    for expected in (f"{train}:3 repeats {train}:1", f"{train}:7 repeats {train}:2 with another label ('pos', there 'neg')",
                     f"{train}:4: field 'text' is empty", f"{train}:5: invalid JSON",
                     f"{train}:6: missing field 'label'", f"{test}:2: label 'meh' is not in the label set",
                     f"{test}:1 (test) repeats {train}:1 (train)"):
        assert expected in out, expected
    assert "problems (4), each with its line:" in out and "not usable" in out
    listed = out[out.index("problems (4)"):]
    assert listed.index(f"{train}:4:") < listed.index(f"{train}:5:") < listed.index(f"{train}:6:")  # file order


def test_duplicates_alone_leave_the_data_usable(tmp_path, capsys):
    train = write(tmp_path / "train.jsonl", [row("same text", "pos"), row("other", "neg"), row("same text", "pos")])
    code, out, _ = check(capsys, train)
    assert code == 0 and "duplicates: 1 text(s) repeat an earlier one:" in out and "usable: no problems" in out


def test_csv_fields_are_detected_and_a_short_row_named(tmp_path, capsys):
    rows = [f"review {i},{'pos' if i % 2 else 'neg'}" for i in range(24)]
    rows[2] = "meh"  # line 4: the polarity is missing
    data = write(tmp_path / "d.csv", ["review,polarity", *rows])
    code, out, _ = check(capsys, data)
    assert code == 2
    assert "label field: 'polarity' (the only field with a few repeated values)" in out
    assert f"{data}:4: field 'polarity' is missing in this row" in out


def test_sentence_pairs_are_one_text_for_duplicates_and_lengths(tmp_path, capsys):
    rows = [{"premise": "a man sleeps", "hypothesis": h, "label": label}
            for h, label in (("someone rests", "entailment"), ("someone runs", "contradiction"))]
    train = write(tmp_path / "train.jsonl", [json.dumps(r) for r in rows + rows[:1]])
    code, out, err = check(capsys, train)
    assert code == 0, err
    assert "text fields: 'premise' and 'hypothesis', a sentence pair" in out
    # one repeat: line 3 of line 1; line 2 shares line 1's premise but not its hypothesis
    assert f"duplicates: 1 text(s)" in out and f"{train}:3 repeats {train}:1" in out
    # [CLS] a man sleeps [SEP] someone rests [SEP]: 8 tokens, both texts counted
    assert "p50 8" in out and "max 8" in out


def test_a_directory_or_missing_file_is_one_error_line_naming_its_option(tmp_path, capsys):
    train = write(tmp_path / "train.jsonl", [row("a fine film", "pos"), row("a dull film", "neg")])
    for argv, expected in (([tmp_path], f"DATA {tmp_path} is a directory; name a data file"),
                           ([train, "--test", tmp_path], f"--test {tmp_path} is a directory"),
                           ([tmp_path / "nope.jsonl"], f"DATA {tmp_path / 'nope.jsonl'}: file not found")):
        code, out, err = check(capsys, *argv)
        assert code == 2 and err.startswith(f"error: {expected}") and err.count("\n") == 1
        assert not out and "experiment file" not in err
