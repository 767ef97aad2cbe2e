"""Which weights the generation worker decodes with.

Training on a CPU runs in fp32 (TRL refuses bf16 there), and the worker loads
the model the way the run trained it. For decoding, bf16 halves the bytes read
per token, and a CPU with native bf16 arithmetic (AVX512-BF16 or AMX on x86,
the BF16 extension on Arm) generates about twice as fast in it: on the 2-core
machine this was written on, Gemma 3 270M gave 9 tok/s in fp32, 12 in 4-bit
and 18 in bf16 with plain ``generate``. A CPU without it converts bf16 in
software, which can be slower than fp32, so "auto" keeps fp32 there.

Only unquantized weights are cast: 4-bit and 8-bit weights are what a QLoRA
run trained against and stay as they are; on a GPU the loader already picked
bf16 or fp16. On a CPU ``fp32`` keeps the weights as loaded, so greedy answers
and log-probs are exactly those of the training precision; bf16 rounds the
logits, so summed log-probs (and the implicit rewards made of them) move a
little: choose fp32 for the numbers training logged.

Imports torch; runs in the worker only.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

DTYPE_CHOICES = ("auto", "fp32", "bf16")
# Read when a load request leaves the choice unset, so a user (or a test) can pin it for every load.
DTYPE_ENV = "ALIGNSTUDIO_GENERATION_DTYPE"


class PrecisionChoiceError(ValueError):
    pass


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The CPU feature flags the kernel reports (x86 "flags", Arm "Features")."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return set()
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return flags


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    flags = cpu_flags(cpuinfo)
    if flags & {"avx512_bf16", "amx_bf16", "bf16"}:
        return True
    # Apple silicon from M2 on has BF16; macOS has no /proc/cpuinfo to say so.
    return cpuinfo is None and platform.system() == "Darwin" and platform.machine() == "arm64"


def requested_dtype(value: str | None) -> str:
    """The choice a load request made, the environment's when it made none."""
    choice = (value or os.environ.get(DTYPE_ENV) or "auto").strip().lower()
    if choice not in DTYPE_CHOICES:
        source = "the load request's dtype" if value else DTYPE_ENV
        raise PrecisionChoiceError(f"{source} is {choice!r}; it must be one of {', '.join(DTYPE_CHOICES)}.")
    return choice


def decode_dtype_name(choice: str, device: str, quantization: str, native_bf16: bool) -> str | None:
    """The dtype to cast the loaded model to ("bf16" or "fp32"), or None to leave it."""
    if quantization in ("4bit", "8bit"):
        return None
    if choice == "auto":
        return "bf16" if device == "cpu" and native_bf16 else None
    return choice


def apply_decode_precision(loaded, choice: str | None) -> str:
    """Cast ``loaded``'s unquantized weights (adapter included) for decoding and make
    ``loaded.precision`` say so. Returns the label of the precision now in use."""
    import torch

    from backend.training.trainer_builders import Precision

    choice = requested_dtype(choice)
    precision = loaded.precision
    target = decode_dtype_name(choice, precision.device, loaded.spec.quantization,
                               cpu_has_native_bf16() if precision.device == "cpu" else True)
    if target is not None:
        dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[target]
        if any(p.dtype != dtype for p in loaded.model.parameters() if p.is_floating_point()):
            loaded.model.to(dtype)
        loaded.precision = Precision(precision.device, dtype, bf16=target == "bf16", fp16=False)
    return loaded.precision.label
