"""The playground: a typed sentence → a finished cell's saved predictor.

Predictors load on first use and stay cached (a second sentence answers in milliseconds); a cell
saved without its weights (`sweep.save_artifacts: false`) is refused with tunelab's own message
before anything loads.
"""

from __future__ import annotations

import threading
from pathlib import Path


class Playground:
    def __init__(self):
        self._loaded: dict[Path, tuple] = {}
        self._lock = threading.Lock()  # one load per run, and torch modules are not shared mid-load

    def predict(self, run_dir: Path, text: str) -> dict:
        from tunelab.predict import parse_line
        from tunelab.run import predict_examples

        with self._lock:
            config, predictor = self._load(run_dir)
            example = parse_line(text, config.task, "the playground")
            output = predict_examples(run_dir, predictor, [example])[0]
        return {"text": example["text"], **output}

    def _load(self, run_dir: Path) -> tuple:
        if run_dir not in self._loaded:
            from tunelab.run import load_predictor, read_run

            config, strategy = read_run(run_dir)  # refuses a cell kept without weights, before loading
            self._loaded[run_dir] = (config, load_predictor(strategy, run_dir))
        return self._loaded[run_dir]
