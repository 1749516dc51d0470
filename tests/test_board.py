"""`tunelab board` without a browser (Flask's test client): the JSON the page polls is the report's
leaderboard of the stored results, counts follow cells as they finish, requests cannot read outside
the sweep directory, the playground runs a saved tiny run, and bad input exits 2."""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("flask", reason="the board extra (Flask) is not installed: pip install 'tunelab[board]'")

from conftest import cpu_only_env  # noqa: E402
from test_report import cell, write_sweep  # noqa: E402  (the synthetic sweeps of the report tests)
from tunelab.board.app import create_app  # noqa: E402
from tunelab.cli import main  # noqa: E402
from tunelab.report import build_report, load_results  # noqa: E402
from tunelab.report.leaderboard import build_leaderboard, metric_keys, table  # noqa: E402


def start_board(root: Path) -> tuple[subprocess.Popen, str]:
    """`tunelab board ROOT --port 0` in its own process; (process, its address from the first line)."""
    process = subprocess.Popen([sys.executable, "-m", "tunelab.cli", "board", str(root), "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=cpu_only_env())
    ready, _, _ = select.select([process.stdout], [], [], 120)
    line = process.stdout.readline() if ready else ""
    if not line.startswith("board: http://127.0.0.1:"):
        process.kill()
        pytest.fail(f"the board did not start: {line!r}")
    return process, line.split()[1]


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def test_the_command_serves_on_loopback_by_default(sweep):
    board, url = start_board(sweep)  # the real server (werkzeug), started as a user would
    try:
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(url + "api/summary", timeout=30) as response:
            assert json.loads(response.read())["finished"] == 4
        with urllib.request.urlopen(url, timeout=30) as response:
            assert b'id="finished"' in response.read()
    finally:
        stop(board)


def snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.stat().st_size) for p in root.rglob("*")}


@pytest.fixture
def sweep(tmp_path) -> Path:
    cells = [cell("head", s, a, params=100) for s, a in [(1, 0.6), (2, 0.7)]]
    cells += [cell("full", s, a, params=10**6) for s, a in [(1, 0.8), (2, 0.9)]]
    failure = {"id": "lora-k16-seed1", "group": "lora-k16", "strategy": "lora", "method": "lora", "k_shot": 16,
               "seed": 1, "error_type": "RuntimeError", "message": "boom"}
    pending = {"id": "bitfit-k16-seed1", "group": "bitfit-k16", "strategy": "bitfit", "method": "bitfit",
               "k_shot": 16, "seed": 1}
    root = write_sweep(tmp_path / "sweep", cells, failures=[failure], pending=[pending])
    (root / "logs").mkdir()
    (root / "logs" / "head-k16-seed1.log").write_text("epoch 1/2 dev: accuracy 0.5\nepoch 2/2 dev: accuracy 0.6\n")
    (root / "head-k16-seed1" / "logs.csv").write_text(
        "step,epoch,loss,learning_rate,eval_loss,eval_accuracy\n"
        "2,1.0,0.69,0.001,,\n2,1.0,,,0.68,0.5\n4,2.0,0.61,0.0005,,\n4,2.0,,,0.64,0.6\n")
    return root


@pytest.fixture
def client(sweep):
    return create_app(sweep).test_client()


def test_summary_is_the_reports_leaderboard_and_writes_nothing(sweep, client):
    before = snapshot(sweep)
    summary = client.get("/api/summary").get_json()
    assert (summary["planned"], summary["finished"], summary["failed"], summary["pending"]) == (6, 4, 1, 1)
    results = load_results(sweep)
    rows, _ = build_leaderboard(results)
    headers, body, best = table(rows, metric_keys(results))
    # the same table the report prints (one source of truth), best marks included
    assert summary["leaderboard"] == {"headers": headers, "rows": body, "best": [sorted(b) for b in best]}
    assert [r[0] for r in summary["leaderboard"]["rows"]] == ["full", "head"]  # ranked by the main metric
    states = {c["id"]: c["state"] for c in summary["cells"]}
    assert states["lora-k16-seed1"] == "failed" and states["bitfit-k16-seed1"] == "pending"
    assert states["full-k16-seed2"] == "finished"
    assert summary["plots"] == ["costs.png", "pareto.png", "seed_spread.png"]
    png = client.get("/api/plots/pareto.png")
    assert png.status_code == 200 and png.data.startswith(b"\x89PNG")
    assert client.get("/api/plots/metric_vs_k.png").status_code == 404  # one K: the report draws none either
    page = client.get("/").get_data(as_text=True)
    assert 'id="finished"' in page and "http" not in page.split("<script>")[1]  # nothing fetched from elsewhere
    for path in ("/api/cells/head-k16-seed1/log", "/api/cells/head-k16-seed1/curves.png",
                 "/api/cells/head-k16-seed1/files/metrics.json"):
        assert client.get(path).status_code == 200
    assert snapshot(sweep) == before  # no report, plot or cache file written into the sweep


def test_counts_and_plots_follow_cells_as_they_finish(sweep, client):
    first = client.get("/api/summary").get_json()
    plan = json.loads((sweep / "sweep.json").read_text())
    # the pending cell finishes: its directory appears (as run.execute renames it into place)
    finished = cell("bitfit", 1, 0.95, params=10)
    write_sweep(sweep.parent / "more", [finished])
    os.replace(sweep.parent / "more" / "bitfit-k16-seed1", sweep / "bitfit-k16-seed1")
    second = client.get("/api/summary").get_json()
    assert (second["finished"], second["pending"]) == (5, 0) and second["version"] != first["version"]
    assert [r[0] for r in second["leaderboard"]["rows"]] == ["bitfit", "full", "head"]  # ranked: 95, 85, 65
    assert client.get("/api/summary").get_json()["version"] == second["version"]  # stable while nothing changes
    assert json.loads((sweep / "sweep.json").read_text()) == plan


def test_cell_log_curves_and_files(client):
    assert client.get("/api/cells/head-k16-seed1/log").get_data(as_text=True).endswith("accuracy 0.6\n")
    assert client.get("/api/cells/bitfit-k16-seed1/log").get_data(as_text=True) == ""  # not started: no log yet
    curves = client.get("/api/cells/head-k16-seed1/curves").get_json()
    assert curves == {"loss": [[1.0, 0.69], [2.0, 0.61]], "eval_loss": [[1.0, 0.68], [2.0, 0.64]],
                      "eval_accuracy": [[1.0, 0.5], [2.0, 0.6]]}  # learning rate and step are not curves
    assert client.get("/api/cells/full-k16-seed1/curves").get_json() == {}  # no logs.csv
    assert client.get("/api/cells/full-k16-seed1/curves.png").status_code == 404
    text = client.get("/api/cells/head-k16-seed1/files/metrics.json").get_data(as_text=True)
    assert json.loads(text)["test"]["accuracy"] == 0.6


@pytest.mark.parametrize("path", [
    "/api/cells/../log",                                   # normalised away by the client: not a cell route
    "/api/cells/..%2F..%2Fetc/log",                         # an encoded slash never reaches a cell id
    "/api/cells/../files/sweep.json",
    "/api/cells/head-k16-seed1/files/..%2Fsweep.json",
    "/api/cells/head-k16-seed1/files/NO_SUCH",              # not one of the served file names
    "/api/cells/logs/files/config.yaml",                    # a folder in the sweep that is not a cell
    "/api/cells/nope/log",
    "/api/cells/head-k16-seed1/files/link.yaml",
])
def test_requests_cannot_leave_the_sweep_directory(sweep, client, path):
    assert client.get(path).status_code == 404


def test_a_symlink_out_of_the_sweep_is_not_followed(sweep, client, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET")
    target = sweep / "head-k16-seed1" / "config.yaml"
    target.symlink_to(secret)
    response = client.get("/api/cells/head-k16-seed1/files/config.yaml")
    assert response.status_code == 404 and b"TOP-SECRET" not in response.data
    assert "outside the sweep" in response.get_json()["error"]


# --------------------------------------------------------------------------------------------- playground


@pytest.fixture
def tiny_runs(tmp_path, tiny_bert_dir, tiny_sentiment):
    """A real one-cell sweep on a tiny model, with its weights, and a copy of the cell without them."""
    from test_sweep import sweep_yaml
    from tunelab.config import load_experiment
    from tunelab.sweep import run_sweep

    path = sweep_yaml(tmp_path, tiny_bert_dir, tiny_sentiment, {"strategies": ["head"]})
    root = run_sweep(load_experiment(path)).root
    build_report(root)
    return root


def test_playground_predicts_with_a_saved_run_and_keeps_it_loaded(tiny_runs, monkeypatch):
    import tunelab.run

    loads = []
    original = tunelab.run.load_predictor
    monkeypatch.setattr(tunelab.run, "load_predictor", lambda *a: loads.append(a) or original(*a))
    client = create_app(tiny_runs).test_client()
    for text in ("good fine great", '{"text": "awful bad poor"}'):  # plain text, or a JSON line like `predict`
        response = client.post("/api/predict", json={"cell": "head-kall-seed42", "text": text})
        assert response.status_code == 200, response.get_json()
        answer = response.get_json()
        assert answer["prediction"] in ("negative", "positive") and answer["text"] in text
    assert len(loads) == 1  # loaded on first use, then cached
    bad = client.post("/api/predict", json={"cell": "head-kall-seed42", "text": "  "})
    assert bad.status_code == 400 and "sentence" in bad.get_json()["error"]
    assert client.post("/api/predict", json={"cell": "../x", "text": "hi"}).status_code == 404


def test_playground_refuses_a_cell_kept_without_weights(tmp_path, tiny_bert_dir, tiny_sentiment):
    from test_sweep import sweep_yaml
    from tunelab.config import load_experiment
    from tunelab.sweep import run_sweep

    path = sweep_yaml(tmp_path, tiny_bert_dir, tiny_sentiment, {"strategies": ["head"], "save_artifacts": False})
    root = run_sweep(load_experiment(path)).root
    client = create_app(root).test_client()
    summary = client.get("/api/summary").get_json()
    assert summary["cells"] == [{"id": "head-kall-seed42", "group": "head-kall", "state": "finished", "artifact": False}]
    response = client.post("/api/predict", json={"cell": "head-kall-seed42", "text": "good"})
    assert response.status_code == 409 and "kept no weights" in response.get_json()["error"]


# --------------------------------------------------------------------------------------------- bad input


def test_a_folder_that_is_not_a_sweep_exits_2(tmp_path, capsys):
    assert main(["board", str(tmp_path)]) == 2
    assert "is not a sweep directory (no sweep.json)" in capsys.readouterr().err
    assert main(["board", str(tmp_path / "missing")]) == 2
    assert "is not a directory" in capsys.readouterr().err


def test_a_busy_port_exits_2(sweep, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["board", str(sweep), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port}" in err and "--port" in err
