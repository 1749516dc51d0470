"""prompt_ensemble on a tiny random Llama: the average of per-template calibrated distributions."""

from __future__ import annotations

import json

import numpy as np
import pytest

from test_prompt_strategies import TEMPLATE, data_dir, experiment, predictions, run, tiny_lm_dir  # noqa: F401
from tunelab.errors import ConfigError
from tunelab.run import load_run

OTHER = "{{ text }} Overall, it was"


def test_ensemble_averages_calibrated_template_distributions(tmp_path, tiny_lm_dir, data_dir):  # noqa: F811
    config = experiment(tmp_path, tiny_lm_dir, data_dir, {"name": "prompt_ensemble", "templates": [TEMPLATE, OTHER]})
    result = run(config, tmp_path / "run")
    written = predictions(tmp_path / "run")
    # the reported accuracy is the share of written predictions that match their labels
    assert result["test"]["accuracy"] == pytest.approx(np.mean([p["prediction"] == p["label"] for p in written]))
    costs = json.loads((tmp_path / "run" / "costs.json").read_text())
    assert costs["trainable_params"] == 0 and len(costs["templates"]) == 2 and "accuracy" in costs["best_dev"]

    # Each member alone is a calibrated zero-shot plan; the ensemble's scores are their mean.
    _, _, predictor = load_run(tmp_path / "run")
    assert [p.settings.template for p in predictor.plans] == [TEMPLATE, OTHER]
    assert all(p.calibration is not None for p in predictor.plans)
    examples = [{"text": p["text"]} for p in written]
    members = predictor.distributions(examples)  # (T, N, L)
    labels = predictor.plans[0].labels
    expected = members.mean(axis=0)
    got = np.array([[p["scores"][label] for label in labels] for p in written])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)
    assert [p["prediction"] for p in written] == [labels[i] for i in expected.argmax(axis=1)]
    # and the ensemble is not just one of its members
    assert not np.allclose(members[0], members[1])


@pytest.mark.parametrize("strategy, message", [
    ({"name": "prompt_ensemble", "templates": [TEMPLATE]}, "strategy.templates"),
    ({"name": "prompt_ensemble", "templates": [TEMPLATE, OTHER], "k": -1}, "strategy.k"),
])
def test_bad_ensemble_settings(tmp_path, tiny_lm_dir, data_dir, strategy, message):  # noqa: F811
    from tunelab.run import prepare

    with pytest.raises(ConfigError, match=message):
        prepare(experiment(tmp_path, tiny_lm_dir, data_dir, strategy))
