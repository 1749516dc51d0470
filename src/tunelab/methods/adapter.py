"""`adapter`: bottleneck adapters (Houlsby et al. 2019 / Pfeiffer et al. 2020) inserted into a frozen
model, the classification head trained alongside. The classification read-out with the `adapter`
model change (`tunelab.model_changes.adapter`); PEFT has no bottleneck adapters: they live in
`tunelab.adapters`, whose docstring documents the saved format (`<run_dir>/adapter/`:
`adapter_model.safetensors` + `adapter_config.json`)."""

from __future__ import annotations

from tunelab.adapters import AdapterSettings
from tunelab.methods.classifier import ClassifierStrategy
from tunelab.methods.registry import register
from tunelab.model_changes.adapter import ADAPTER_DIR  # noqa: F401 (re-exported: artifact name)


@register("adapter", "bottleneck adapters (Houlsby or Pfeiffer) in a frozen model + the head",
          family="parameter-efficient")
class AdapterStrategy(ClassifierStrategy):
    Settings = AdapterSettings
    change_name = "adapter"
