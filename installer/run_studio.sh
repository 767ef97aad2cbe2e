#!/usr/bin/env bash
# Install AlignStudio into ./.venv (once) and open the studio on the demo model and demo data.
# Extra arguments go to `alignstudio`, e.g. `bash installer/run_studio.sh --method orpo`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
if ! .venv/bin/python -c "import backend, PySide6, torch, trl" 2>/dev/null; then
    .venv/bin/python -m pip install -q --upgrade pip
    if ! command -v nvidia-smi >/dev/null 2>&1; then
        # No NVIDIA GPU: the small CPU build is enough (a CUDA build would add ~5 GB).
        .venv/bin/python -m pip install -q "torch==2.13.0" || true
    fi
    .venv/bin/python -m pip install -q -e .
fi
exec .venv/bin/alignstudio --demo "$@"
