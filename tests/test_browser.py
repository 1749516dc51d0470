"""In a real headless browser (Debian's chromium through chromedriver, see tests/browser.py; skipped
with the reason where either is missing): the live board while a sweep runs, and screenshots of a
report at desktop and phone widths (saved under the test's tmp dir: pytest prints where on failure,
and `--basetemp DIR` keeps them somewhere known)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from browser import browser, png_size
from conftest import cpu_only_env


def test_board_counts_finished_cells_while_a_sweep_runs(tmp_path, tiny_bert_dir, tiny_sentiment):
    from test_board import start_board, stop  # here: that module skips where Flask is missing
    from test_sweep import sweep_yaml

    path = sweep_yaml(tmp_path, tiny_bert_dir, tiny_sentiment, {"strategies": ["head", "bitfit"], "seeds": [1]})
    root = tmp_path / "runs" / "tiny"
    with browser() as page:  # before the sweep: a missing browser skips without running anything
        sweep = subprocess.Popen([sys.executable, "-m", "tunelab.cli", "compare", str(path)], env=cpu_only_env(),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
        board = None
        try:
            deadline = time.monotonic() + 180
            while not (root / "sweep.json").is_file():
                assert sweep.poll() is None, f"the sweep stopped before it began: {sweep.stderr.read()}"
                assert time.monotonic() < deadline, "the sweep wrote no sweep.json in 3 minutes"
                time.sleep(0.05)
            # The plan exists and cells run. Pause the sweep (its whole process group) while the board and
            # the page start, so the page must see cells finish rather than a sweep already done.
            os.killpg(sweep.pid, signal.SIGSTOP)
            planned = len(json.loads((root / "sweep.json").read_text())["cells"])
            board, url = start_board(root)
            page.open(url)
            first = page.wait_for("const t = document.getElementById('finished').textContent;"
                                  "return /^\\d+$/.test(t) ? Number(t) : null")
            assert first is not None and first < planned, (first, planned)
            page.js("window.sameDocument = true")  # gone if the page reloaded: the count must update in place
            os.killpg(sweep.pid, signal.SIGCONT)
            seen = [first]
            while seen[-1] < planned:
                assert time.monotonic() < deadline + 180, f"the page showed {seen} of {planned} finished cells"
                time.sleep(0.3)
                value = int(page.js("return document.getElementById('finished').textContent"))
                if value != seen[-1]:
                    seen.append(value)
            assert seen == sorted(seen) and seen[-1] == planned > seen[0]
            assert page.js("return window.sameDocument === true")
            assert sweep.wait(timeout=120) == 0, sweep.stderr.read()
            # the leaderboard and the plots redrew when the last cell finished
            rows = page.wait_for("const rows = document.querySelectorAll('#leaderboard tbody tr');"
                                 "return rows.length === 2 ? [...rows].map(r => r.cells[0].textContent) : null")
            assert rows == ["head", "bitfit"]
            assert page.wait_for("const imgs = [...document.querySelectorAll('#plots img')];"
                                 "return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 200)")
            # a phone-width screen scrolls the leaderboard inside its box, never the whole page sideways
            (tmp_path / "board-1400px.png").write_bytes(page.screenshot(1400))
            (tmp_path / "board-420px.png").write_bytes(page.screenshot(420))
            assert page.js("return document.documentElement.scrollWidth") <= 421
            # the playground: a finished cell's saved predictor answers a typed sentence
            page.js("document.getElementById('cell').value = 'head-kall-seed1';"
                    "document.getElementById('text').value = 'good fine great';"
                    "document.querySelector('#playground button').click()")
            answer = page.wait_for("const t = document.getElementById('answer').textContent;"
                                   "return t.startsWith('prediction:') || t.includes('rror') ? t : null", timeout=120)
            assert answer.split()[1] in ("negative", "positive"), answer
        finally:
            if sweep.poll() is None:
                os.killpg(sweep.pid, signal.SIGCONT)
                os.killpg(sweep.pid, signal.SIGTERM)
                sweep.wait(timeout=60)
            if board is not None:
                stop(board)


# --------------------------------------------------------------------------------------------- report


def demo_shaped_report(tmp_path) -> Path:
    """A report with the demo's rows (examples/demo.yaml: 9 strategies and prompt variants, 3 seeds),
    built by today's report code from synthetic stored results, so the screenshots follow the report."""
    from test_report import cell, write_sweep
    from tunelab.report import build_report

    rows = [("head", "fine-tuning", 770, [0.83, 0.86, 0.84]), ("full", "fine-tuning", 22_570_000, [0.69, 0.96, 0.82]),
            ("bitfit", "fine-tuning", 26_498, [0.76, 0.97, 0.86]),
            ("lora", "parameter-efficient", 74_498, [0.86, 0.93, 0.9]),
            ("prompt_tuning", "parameter-efficient", 4_610, [0.73, 0.84, 0.78]),
            ("few_shot", "prompting", 0, [0.8, 0.95, 0.87]), ("pet", "prompting", 134_520_000, [0.96, 0.95, 0.97])]
    cells = [cell(name, seed, acc, family=family, params=params)
             for name, family, params, accs in rows for seed, acc in zip((1, 2, 3), accs)]
    cells += [cell("zero_shot", 1, acc, variant=v, family="prompting", params=0) for v, acc in (("review", 0.9), ("it_was", 0.5))]
    return build_report(write_sweep(tmp_path / "demo", cells)).html


LEGIBILITY = """
const vw = window.innerWidth, table = document.querySelector('table.leaderboard');
const box = (e) => e.getBoundingClientRect();
const imgs = [...document.querySelectorAll('img')];
const heading = [...document.querySelectorAll('h2')].find(h => /^recommend/i.test(h.textContent));
const recommendation = document.getElementById('recommendation') || heading;
let scroller = table && table.parentElement;
while (scroller && scroller !== document.body && !/auto|scroll/.test(getComputedStyle(scroller).overflowX)) scroller = scroller.parentElement;
return {
  viewport: vw, pageWidth: document.documentElement.scrollWidth,
  tableRows: table ? table.tBodies[0].rows.length : 0,
  firstColumnRight: table ? Math.max(...[...table.tBodies[0].rows].map(r => box(r.cells[0]).right)) : null,
  tableFont: table ? parseFloat(getComputedStyle(table.tBodies[0].rows[0].cells[0]).fontSize) : null,
  tableScrolls: !!scroller && scroller !== document.body,
  images: imgs.map(i => ({loaded: i.complete && i.naturalWidth > 0, natural: i.naturalWidth, shown: box(i).width, right: box(i).right})),
  recommendation: recommendation ? {top: box(recommendation).top, visible: box(recommendation).height > 0} : null,
  leaderboardTop: table ? box(table).top : null,
};
"""


@pytest.mark.parametrize("width", [1400, 420])
def test_report_screenshots_are_legible_at_desktop_and_phone_width(tmp_path, width):
    report = demo_shaped_report(tmp_path)
    with browser(width=width) as page:
        page.open(report.as_uri())
        png = page.screenshot(width)
        page.js("window.scrollTo(0, 0)")
        facts = page.js(LEGIBILITY)
    shot = tmp_path / f"report-{width}px.png"
    shot.write_bytes(png)
    w, h = png_size(png)
    # the whole page, exactly as wide as asked; a blank or failed render compresses to a few kB
    assert (w, facts["viewport"]) == (width, width) and h > 1500 and len(png) > 50_000, (w, h, len(png), shot)
    assert facts["tableRows"] == 9  # the leaderboard is there, one row per strategy and prompt variant
    assert facts["firstColumnRight"] <= width  # the strategy names are on screen, not cut off
    assert facts["tableFont"] >= 12  # CSS pixels at scale 1: readable without zooming
    assert len(facts["images"]) >= 2 and all(i["loaded"] for i in facts["images"])
    for image in facts["images"]:
        assert image["right"] <= width + 1  # a plot never runs off the screen ...
        # ... nor shrinks much below its own size when there is room (at 420 px: as wide as the page allows)
        assert image["shown"] >= min(0.95 * image["natural"], 0.75 * width)
    if facts["tableScrolls"]:  # a report that puts the leaderboard in a scroll box keeps the page itself still
        assert facts["pageWidth"] <= width + 1
    if facts["recommendation"] is not None:  # a report with a recommendation shows it first, before the table
        assert facts["recommendation"]["visible"] and facts["recommendation"]["top"] < facts["leaderboardTop"]
