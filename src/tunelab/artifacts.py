"""A run directory's saved artifact (weights, adapter, prompt plan): the one message for "it is not there".

`tunelab evaluate` / `predict` / `export` rebuild a predictor from a run directory. When the artifact
is missing — deleted by hand, or never written because a sweep ran with `sweep.save_artifacts: false`
(which leaves a `NO_ARTIFACT` note instead) — the user needs the same three things whichever
strategy made the run: which directory, which file, and how to get the weights back.
Strategies call `require_artifact` before loading any base weights.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from tunelab.errors import UserError

NO_ARTIFACT_FILE = "NO_ARTIFACT"
"""Written instead of the artifact by a sweep cell with `sweep.save_artifacts: false` (sweep/cell.py)."""


class MissingArtifactError(UserError):
    """A finished run directory lacks the artifact its strategy needs to predict."""


def rerun_hint(run_dir: Path) -> str:
    return (f"to get them, re-run with artifacts: `tunelab run {Path(run_dir) / 'config.yaml'} --out NEW_DIR`, "
            f"or the sweep with sweep.save_artifacts: true into a new --out")


def check_artifact_kept(run_dir: Path) -> None:
    """Refuse at once (before any weights load) a run that says it kept no artifact."""
    run_dir = Path(run_dir)
    if (run_dir / NO_ARTIFACT_FILE).is_file():
        raise MissingArtifactError(
            f"{run_dir} kept no weights: it is a sweep cell run with sweep.save_artifacts: false "
            f"(see {run_dir / NO_ARTIFACT_FILE}), which keeps results but not the trained weights; {rerun_hint(run_dir)}")


def missing_artifact(run_dir: Path, missing: str | Path) -> MissingArtifactError:
    """The error for a run directory without its artifact; `missing` names what the strategy looked for."""
    run_dir = Path(run_dir)
    return MissingArtifactError(
        f"{run_dir} is incomplete: {relative(missing, run_dir)} is missing, the saved weights (or prompt plan) that "
        f"evaluate and predict load; it was deleted, or never written (as with sweep.save_artifacts: false); "
        f"{rerun_hint(run_dir)}")


def relative(missing: str | Path, run_dir: Path) -> str:
    """`delta.safetensors` rather than the full path when it lies inside the run directory."""
    try:
        return str(Path(missing).relative_to(run_dir))
    except ValueError:
        return str(missing)


def require_artifact(run_dir: Path, *names: str) -> Path:
    """The first of `names` (files or folders in `run_dir`) that exists; MissingArtifactError when none does."""
    run_dir = Path(run_dir)
    for name in names:
        if (run_dir / name).exists():
            return run_dir / name
    raise missing_artifact(run_dir, " or ".join(names))


@contextlib.contextmanager
def reading_weights(run_dir: Path, weights: Path):
    """Around a load of `weights` (a safetensors file of `run_dir`): a file safetensors cannot read — an
    interrupted copy, a truncated download, bytes written over it — is named, with how to get it back."""
    from safetensors import SafetensorError

    try:
        yield
    except SafetensorError as err:
        raise MissingArtifactError(
            f"{Path(run_dir)} is damaged: {relative(weights, Path(run_dir))} cannot be read ({err}); it was cut short "
            f"or overwritten, so copy the run directory again, or {rerun_hint(run_dir)}") from None
