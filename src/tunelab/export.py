"""`tunelab export RUN --out DIR`: a finished LoRA/IA3 run as a plain model directory (merged weights
+ tokenizer) that loads with `from_pretrained` and no PEFT.

Its own top-level module because it reloads a run (`run.load_run`): no strategy module may import
that layer.
"""

from __future__ import annotations

from pathlib import Path

from tunelab.errors import UserError
from tunelab.run import load_run


def export_merged(run_dir: Path, out: Path) -> Path:
    """Fold a finished LoRA/IA3 run's delta into the base weights; write a plain model directory."""
    out = Path(out)
    if out.exists():
        raise UserError(f"{out} already exists; choose another --out or remove it")
    config, strategy, predictor = load_run(Path(run_dir))
    if not getattr(strategy, "mergeable", False):
        raise UserError(
            f"strategy '{config.strategy.name}' cannot be merged into the base weights; export works for lora and ia3 "
            f"(prompt and prefix methods add tokens, adapters add layers)"
        )
    merged = predictor.model.merge_and_unload()
    merged.save_pretrained(out, safe_serialization=True)
    predictor.loaded.tokenizer.save_pretrained(out)
    return out
