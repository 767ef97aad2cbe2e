"""Turn a .gguf file into a plain safetensors folder once, so later loads take seconds.

transformers' GGUF loader dequantizes every tensor on each load (~30 s for a
270M model); loading the converted folder takes ~3 s.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path


STALE_WORK_SECONDS = 3600


def make_work_dir(parent: Path, prefix: str) -> Path:
    """A private scratch folder next to the cache entry it will become.

    A worker stopped or killed mid-conversion never reaches its clean-up, and its
    scratch folder holds hundreds of megabytes; folders of that kind older than
    any conversion takes are removed here. Younger ones may belong to a
    conversion running in another studio, and are left alone."""
    parent.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for old in parent.glob(prefix + "*"):
        try:
            if old.is_dir() and now - old.stat().st_mtime > STALE_WORK_SECONDS:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            pass
    return Path(tempfile.mkdtemp(prefix=prefix, dir=parent))


def is_converted(folder: Path) -> bool:
    return (folder / "config.json").exists() and any(folder.glob("*.safetensors"))


def convert_gguf_to_folder(gguf_path: str | Path, folder: str | Path, log=print) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from backend.models.chat_templates import ensure_chat_template

    gguf_path, folder = Path(gguf_path), Path(folder)
    if is_converted(folder):
        return folder
    work = make_work_dir(folder.parent, ".convert-")
    try:
        log(f"Converting {gguf_path.name} to safetensors (once; this can take a minute)...")
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32
        )
        # save_pretrained refuses a model that still carries its GGUF quantizer;
        # the weights are already dequantized, so the quantizer is only bookkeeping.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.is_quantized = False
        ensure_chat_template(tokenizer)
        out = work / "model"
        # bf16 halves the cache; the weights came from 4-6 bit blocks, so bf16
        # rounding loses nothing that matters.
        model.to(torch.bfloat16).save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(out, folder)  # atomic: a half-converted folder is never visible
        log(f"Converted model cached in {folder}")
        return folder
    finally:
        shutil.rmtree(work, ignore_errors=True)
