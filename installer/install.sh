#!/usr/bin/env bash
# Install AlignStudio as a desktop application (Linux, macOS), from this source folder.
#
#   bash installer/install.sh [--prefix DIR] [--bin-dir DIR] [--apps-dir DIR] [--with-llama-cpp]
#
# - an environment of its own in PREFIX/env (default ~/.local/share/alignstudio);
# - PyTorch by hardware: the default (CUDA) build where an NVIDIA GPU answers, else the CPU
#   build (set ALIGNSTUDIO_TORCH to a pip requirement to choose, e.g. "torch==2.13.0");
# - the studio itself with the versions the test suite passed with (installer/constraints.txt);
# - the `alignstudio` command in BIN_DIR (default ~/.local/bin);
# - on Linux a menu entry (freedesktop .desktop file and icon) in APPS_DIR
#   (default ~/.local/share/applications);
# - PREFIX/uninstall.sh, which removes all of the above and keeps your runs (~/AlignStudio).
# - with --with-llama-cpp: llama-cpp-python (compiled here, several minutes; generation several
#   times faster on a CPU) and llama.cpp's GGUF and LoRA converters.
set -euo pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
DATA_HOME=${XDG_DATA_HOME:-$HOME/.local/share}
PREFIX=$DATA_HOME/alignstudio
BIN_DIR=$HOME/.local/bin
APPS_DIR=$DATA_HOME/applications
ICONS_DIR=$DATA_HOME/icons/hicolor/scalable/apps
WITH_LLAMA_CPP=0
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) PREFIX=$2; shift 2 ;;
        --bin-dir) BIN_DIR=$2; shift 2 ;;
        --apps-dir) APPS_DIR=$2; ICONS_DIR=$2/icons; shift 2 ;;
        --with-llama-cpp) WITH_LLAMA_CPP=1; shift ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
done
PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    echo "AlignStudio needs Python 3.10 or newer; '$PY' is $("$PY" --version 2>&1). Set PYTHON=/path/to/python3.x." >&2
    exit 2
fi

mkdir -p "$PREFIX" "$BIN_DIR"
PREFIX=$(cd "$PREFIX" && pwd)
ENV=$PREFIX/env
echo "Installing AlignStudio into $ENV"
[ -x "$ENV/bin/python" ] || "$PY" -m venv "$ENV"
"$ENV/bin/python" -m pip install -q --upgrade pip

if [ -n "${ALIGNSTUDIO_TORCH:-}" ]; then
    TORCH=$ALIGNSTUDIO_TORCH
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    TORCH="torch"  # PyPI's default build carries CUDA
else
    TORCH=""
fi
if [ -n "$TORCH" ]; then
    echo "PyTorch: $TORCH"
    "$ENV/bin/python" -m pip install -q "$TORCH"
else
    # No NVIDIA GPU: PyTorch's CPU build (about 200 MB instead of several GB). Where its
    # index cannot be reached, pip's default source is used.
    echo "PyTorch: the CPU build (no NVIDIA GPU found)"
    "$ENV/bin/python" -m pip install -q torch --index-url https://download.pytorch.org/whl/cpu --timeout 15 --retries 1 \
        || "$ENV/bin/python" -m pip install -q "torch==2.13.0" || "$ENV/bin/python" -m pip install -q torch
fi
"$ENV/bin/python" -m pip install -q "$SRC" -c "$SRC/installer/constraints.txt"
if [ "$WITH_LLAMA_CPP" = 1 ]; then
    echo "llama.cpp: compiling llama-cpp-python (several minutes)"
    "$ENV/bin/python" -m pip install -q "$SRC[llamacpp]" -c "$SRC/installer/constraints.txt"
    PYTHON="$ENV/bin/python" bash "$SRC/installer/install_llama_converter.sh" --lora
fi

ln -sf "$ENV/bin/alignstudio" "$BIN_DIR/alignstudio"
ICON=$("$ENV/bin/python" -c 'from app.studio_app import app_icon_path; print(app_icon_path())' 2>/dev/null \
       || echo "$SRC/resources/icons/alignstudio.svg")
INSTALLED=("$BIN_DIR/alignstudio")
if [ "$(uname -s)" = Linux ]; then
    mkdir -p "$APPS_DIR" "$ICONS_DIR"
    cp "$ICON" "$ICONS_DIR/alignstudio.svg"
    cat > "$APPS_DIR/alignstudio.desktop" <<DESKTOP
[Desktop Entry]
Type=Application
Version=1.5
Name=AlignStudio
GenericName=Language model fine-tuning
Comment=Fine-tune and preference-align a language model without writing code
Exec="$ENV/bin/alignstudio" %f
Icon=$ICONS_DIR/alignstudio.svg
Terminal=false
Categories=Development;Science;ArtificialIntelligence;
Keywords=LLM;DPO;LoRA;fine-tuning;alignment;
StartupWMClass=AlignStudio
DESKTOP
    INSTALLED+=("$APPS_DIR/alignstudio.desktop" "$ICONS_DIR/alignstudio.svg")
    command -v update-desktop-database >/dev/null 2>&1 && update-desktop-database -q "$APPS_DIR" 2>/dev/null || true
fi

{
    echo '#!/usr/bin/env bash'
    echo '# Remove AlignStudio as installed by installer/install.sh. Your runs and settings stay.'
    echo 'set -euo pipefail'
    for file in "${INSTALLED[@]}"; do printf 'rm -f %q\n' "$file"; done
    printf 'rm -rf %q\n' "$ENV"
    printf 'rm -f %q\n' "$PREFIX/uninstall.sh"
    printf 'rmdir %q 2>/dev/null || true\n' "$PREFIX"
    echo 'echo "AlignStudio removed. Your runs are still in ${ALIGNSTUDIO_HOME:-$HOME/AlignStudio}."'
} > "$PREFIX/uninstall.sh"
chmod +x "$PREFIX/uninstall.sh"

MISSING=$("$ENV/bin/python" "$SRC/installer/qt_system_libs.py" xcb || true)
echo "Installed. Start it from the application menu or with: $BIN_DIR/alignstudio"
case ":$PATH:" in *":$BIN_DIR:"*) ;; *) echo "($BIN_DIR is not on your PATH.)" ;; esac
[ -n "$MISSING" ] && echo "Before the window can open on this system: sudo apt-get install $MISSING"
echo "To remove it: bash $PREFIX/uninstall.sh"
