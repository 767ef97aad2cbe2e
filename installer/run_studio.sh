#!/usr/bin/env bash
# Install AlignStudio into ./.venv (once) and open the studio on the demo model and demo data.
# Extra arguments go to `alignstudio`, e.g. `bash installer/run_studio.sh --method orpo`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi

# Installed already? Asking Python to import torch and trl would cost ~2 s on every
# start; finding the modules without importing them costs ~50 ms. The stamp holds a
# hash of pyproject.toml, so changed dependencies are installed on the next start.
STAMP=.venv/.alignstudio-installed
WANT=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ] || ! .venv/bin/python -c '
import importlib.util, sys
needed = ("backend", "app", "PySide6", "pyqtgraph", "torch", "transformers", "trl", "peft", "bitsandbytes", "datasets")
sys.exit(any(importlib.util.find_spec(m) is None for m in needed))' 2>/dev/null; then
    .venv/bin/python -m pip install -q --upgrade pip
    if ! command -v nvidia-smi >/dev/null 2>&1; then
        # No NVIDIA GPU: the small CPU build is enough (a CUDA build would add ~5 GB).
        .venv/bin/python -m pip install -q "torch==2.13.0" || true
    fi
    .venv/bin/python -m pip install -q -e . -c installer/constraints.txt
    # GGUF/Ollama export only; the studio works without it, so a failure here is not fatal.
    bash installer/install_llama_converter.sh || echo "llama.cpp's converter was not installed: GGUF export is off." >&2
    echo "$WANT" > "$STAMP"
fi

# The window needs a display and the X11 client libraries that PySide6's wheels leave to
# the system. Qt's own error names only the first missing library; ask for all at once.
PLATFORM=${QT_QPA_PLATFORM:-xcb}
PLATFORM=${PLATFORM%%;*}
if [ "$PLATFORM" = xcb ] && [ -z "${DISPLAY:-}" ]; then
    if [ -n "${WAYLAND_DISPLAY:-}" ]; then
        PLATFORM=wayland
    else
        echo "AlignStudio needs a graphical display, and none is set (DISPLAY is empty)." >&2
        echo "Run it from a desktop session, over 'ssh -X', or on a virtual screen: xvfb-run -a bash installer/run_studio.sh" >&2
        echo "Without a display, the same training runs headless: .venv/bin/alignstudio train --help" >&2
        exit 1
    fi
fi
MISSING=$(.venv/bin/python installer/qt_system_libs.py "$PLATFORM")
if [ -n "$MISSING" ]; then
    SUDO=""
    [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo"
    if command -v apt-get >/dev/null 2>&1 && { [ "$(id -u)" = 0 ] || [ -n "$SUDO" ]; }; then
        echo "Installing the system libraries the window needs: $MISSING"
        # shellcheck disable=SC2086  # one word per package
        $SUDO apt-get update -qq && $SUDO apt-get install -y -qq $MISSING >/dev/null || true
        MISSING=$(.venv/bin/python installer/qt_system_libs.py "$PLATFORM")
    fi
    if [ -n "$MISSING" ]; then
        echo "The window cannot open: Qt's '$PLATFORM' display plugin needs system libraries that are not installed." >&2
        echo "On Debian or Ubuntu:  sudo apt-get install $MISSING" >&2
        echo "(Other systems: install the packages that provide these libraries.)" >&2
        exit 1
    fi
fi
exec .venv/bin/alignstudio --demo "$@"
