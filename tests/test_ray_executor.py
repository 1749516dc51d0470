"""`sweep.executor: ray` on a real Ray cluster (a head and a worker node, each its own processes).

Ray replaces a loopback node address with the machine's interface address (ray-project/ray#26293),
and tests may talk to loopback only: the cluster, and the sweep that uses it, run inside a network
namespace of their own that has nothing but `lo` (`unshare --net`, as root). Where one cannot be
made, the cluster tests skip with the reason.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from conftest import experiment_yaml, write_jsonl
from tunelab.cli import main

pytest.importorskip("ray", reason="Ray is not installed (the lock installs it: make install)")
BIN = Path(sys.executable).parent


def sweep_file(folder: Path, model_dir, data, **sweep) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = experiment_yaml(folder / "exp.yaml", model_dir, data, {"name": "head"}, output_dir=str(folder / "runs"))
    raw = yaml.safe_load(path.read_text())
    raw["train"].update(epochs=2, eval_strategy="no")
    raw["sweep"] = {"strategies": ["head", "bitfit"], "seeds": [1, 2], **sweep}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cell_results(root: Path) -> dict:
    """cell id → (test metrics, predicted labels): what a leaderboard is built from."""
    results = {}
    for metrics in sorted(root.glob("*/metrics.json")):
        predictions = [json.loads(line)["prediction"] for line in (metrics.parent / "predictions.jsonl").open()]
        results[metrics.parent.name] = (json.loads(metrics.read_text())["test"], predictions)
    return results


# ----------------------------------------------------------------------------------- before any cell


def test_unreachable_ray_address_exits_2_before_any_cell(tmp_path, tiny_bert_dir, tiny_sentiment, capsys):
    port = free_port()  # nothing listens there
    path = sweep_file(tmp_path, tiny_bert_dir, tiny_sentiment, executor="ray", ray_address=f"127.0.0.1:{port}")
    assert main(["compare", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"127.0.0.1:{port}' cannot be reached" in err and "ray start --head" in err and "line" in err
    assert not (tmp_path / "runs").exists()  # no sweep directory, no cell


def test_executor_option_and_bad_resources_are_checked(tmp_path, tiny_bert_dir, tiny_sentiment, capsys):
    path = sweep_file(tmp_path, tiny_bert_dir, tiny_sentiment, resources={"num_cpus": 0})
    assert main(["compare", str(path)]) == 2
    assert "sweep.resources.num_cpus" in capsys.readouterr().err
    path = sweep_file(tmp_path, tiny_bert_dir, tiny_sentiment)
    assert main(["compare", str(path), "--executor", "dask"]) == 2
    assert "'dask' is not one of" in capsys.readouterr().err


def test_missing_ray_says_how_to_install_it(tmp_path, tiny_bert_dir, tiny_sentiment, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    path = sweep_file(tmp_path, tiny_bert_dir, tiny_sentiment)
    assert main(["compare", str(path), "--executor", "ray"]) == 2
    assert "pip install 'tunelab[ray]'" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


# ----------------------------------------------------------------------------------- a real cluster


@pytest.fixture(scope="module")
def netns():
    """Skip unless a network namespace with only loopback can be made here."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs `unshare` and `ip` (util-linux, iproute2) to run Ray on loopback only")
    probe = subprocess.run(["unshare", "--net", "sh", "-c", "ip link set lo up"], capture_output=True, text=True)
    if probe.returncode:
        pytest.skip(f"cannot make a network namespace (needs root): {probe.stderr.strip()}")


CLUSTER = """\
set -u
trap '"{bin}/ray" stop --force > /dev/null 2>&1' EXIT  # no Ray process outlives the test, whatever happens
ip link set lo up
export RAY_USAGE_STATS_ENABLED=0
"{bin}/ray" start --head --port={port} --num-cpus=1 --include-dashboard=false --temp-dir={tmp} > {tmp}/head.log 2>&1
setsid "{bin}/ray" start --address=127.0.0.1:{port} --num-cpus=1 --block > {tmp}/worker.log 2>&1 &
worker=$!
"{bin}/python" - <<'WAIT'
import ray, time
ray.init(address="127.0.0.1:{port}", log_to_driver=False)
while len([n for n in ray.nodes() if n["Alive"]]) < 2:
    time.sleep(0.2)
WAIT
# 1. a sweep asking for a GPU no node has: refused before any cell
"{bin}/tunelab" compare {gpu_exp} --out {gpu_root} > {tmp}/refused.log 2>&1
echo "refused exit $?"
cat {tmp}/refused.log
# 2. the sweep, and the worker machine dies (every process of it at once) while it trains a cell: the
# first cell whose log says it started in a process of the worker node's session (`setsid`: Ray
# gives each worker process its own process group, but they stay in the session), not yet finished.
"{bin}/tunelab" compare {exp} --out {root} > {tmp}/sweep.log 2>&1 &
sweep=$!
victim=""
while [ -z "$victim" ] && kill -0 $sweep 2> /dev/null; do
  for log in {root}/logs/*.log; do
    [ -e "$log" ] || continue
    id=$(basename "$log" .log)
    pid=$(grep -o 'started in process [0-9]*' "$log" | tail -1 | grep -o '[0-9]*$')
    if [ -n "$pid" ] && [ ! -e "{root}/$id/metrics.json" ] && [ "$(ps -o sid= -p "$pid" | tr -d ' ')" = "$worker" ]; then
      victim=$id
    fi
  done
  sleep 0.1
done
pkill -9 -s $worker
echo "worker killed while running $victim"
wait $sweep
echo "sweep exit $?"
cat {tmp}/sweep.log
"""


@pytest.fixture(scope="module")
def cluster_run(netns, tiny_bert_dir, tmp_path_factory) -> dict:
    """One real cluster (head + worker node) in its own network namespace, two sweeps on it."""
    base = tmp_path_factory.mktemp("ray")
    data = tiny_data(base)
    port = 6379 + os.getpid() % 1000
    exp = sweep_file(base / "ok", tiny_bert_dir, data, executor="ray", retries=2, ray_address=f"127.0.0.1:{port}")
    gpu_exp = sweep_file(base / "gpu", tiny_bert_dir, data, executor="ray", ray_address=f"127.0.0.1:{port}",
                         resources={"num_cpus": 1, "num_gpus": 1})
    tmp = Path(tempfile.mkdtemp(prefix="tlray-", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    run = {"exp": exp, "root": base / "ray-sweep", "gpu_root": base / "gpu-sweep"}
    script = CLUSTER.format(bin=BIN, port=port, tmp=tmp, gpu_exp=gpu_exp, **run)
    try:
        done = subprocess.run(["unshare", "--net", "bash", "-c", script], capture_output=True, text=True, timeout=600)
    finally:
        # On a timeout subprocess.run kills only `unshare`: the script's `ray stop` trap never runs, and the
        # cluster's daemons (each names the temp dir on its command line) would outlive the test.
        subprocess.run(["pkill", "-9", "-f", str(tmp)], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
    return {**run, "output": done.stdout + done.stderr}


def tiny_data(folder: Path) -> dict:
    good = ["good fine great", "great nice good", "nice good lovely", "lovely great fine"]
    bad = ["bad awful poor", "poor terrible bad", "awful bad dull", "dull poor awful"]
    rows = [{"text": t, "label": "positive"} for t in good] + [{"text": t, "label": "negative"} for t in bad]
    return {"train": str(write_jsonl(folder / "train.jsonl", rows)), "test": str(write_jsonl(folder / "test.jsonl", rows))}


def test_resources_no_node_can_give_exit_2_before_any_cell(cluster_run):
    output = cluster_run["output"]
    assert "refused exit 2" in output, output[-3000:]
    assert "asks for 1 CPU and 1 GPU" in output and "no node of the Ray cluster" in output and "sweep.resources" in output
    assert not cluster_run["gpu_root"].exists()


def test_ray_sweep_survives_a_dead_worker_and_matches_the_local_executor(cluster_run, tmp_path):
    output, exp, ray_root = cluster_run["output"], cluster_run["exp"], cluster_run["root"]
    assert "sweep exit 0" in output, output[-3000:]
    victim = output.split("worker killed while running ")[1].split()[0]
    victim_log = (ray_root / "logs" / f"{victim}.log").read_text()
    assert victim_log.count(f"cell {victim} started") == 2  # killed mid-training, then run again elsewhere

    # The same sweep on the local executor (its own directory), then compare cell by cell.
    local_root = tmp_path / "local-sweep"
    assert main(["compare", str(exp), "sweep.isolation=none", "--executor", "local", "--out", str(local_root)]) == 0
    on_ray, local = cell_results(ray_root), cell_results(local_root)
    assert len(local) == 4 and on_ray.keys() == local.keys()
    for cell_id, (metrics, predictions) in local.items():
        assert on_ray[cell_id][1] == predictions, cell_id
        assert on_ray[cell_id][0] == pytest.approx(metrics, abs=1e-6), cell_id

    # No cell trained to completion twice: one "finished" line per cell log, even for the retried one.
    for cell_id in local:
        assert (ray_root / "logs" / f"{cell_id}.log").read_text().count(f"cell {cell_id} finished") == 1
    assert json.loads((ray_root / "sweep.json").read_text())["executor"] == "ray"
    # Resuming (any executor) finds every cell finished and runs none.
    assert main(["compare", str(exp), "--executor", "local", "--out", str(ray_root)]) == 0
    assert cell_results(ray_root) == on_ray
