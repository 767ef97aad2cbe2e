"""What the training will run on: GPU or CPU, its name and memory.

The window needs this at start to estimate memory, but it must never import
torch (about 1.5 s, and a CUDA context it would then hold). So the window runs
``python -m backend.core.device_info`` in a subprocess, which prints one JSON line;
importing this module imports nothing heavy, torch is imported inside
:func:`describe_device`.
"""

from __future__ import annotations

import json
import platform
import sys

_MB = 2**20


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    # /proc/cpuinfo is Linux only; platform.processor() is empty on many Linux
    # builds but is the best there is on macOS and Windows.
    return platform.processor() or platform.machine() or "CPU"


def _system_memory_mb() -> tuple[float | None, float | None]:
    import psutil

    vm = psutil.virtual_memory()
    return vm.total / _MB, vm.available / _MB


def describe_device() -> dict:
    """The device a training run would use, as a plain JSON-able dict.

    Keys: kind ("cuda", "mps" or "cpu"), name, memory_mb (GPU total, else system
    RAM), free_mb (GPU free, else RAM available), bf16, torch_version, cuda_version.
    Only the first CUDA device is described: training runs on one device.
    """
    import torch

    info: dict = {
        "kind": "cpu",
        "name": _cpu_name(),
        "memory_mb": None,
        "free_mb": None,
        "bf16": False,
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(kind="cuda", name=props.name, memory_mb=props.total_memory / _MB)
        try:
            free, _total = torch.cuda.mem_get_info(0)
            info["free_mb"] = free / _MB
        except RuntimeError:
            # Some drivers refuse mem_get_info (e.g. under MIG); total is still right.
            pass
        info["bf16"] = bool(torch.cuda.is_bf16_supported())
        return info
    mps = getattr(torch.backends, "mps", None)
    total, available = _system_memory_mb()
    if mps is not None and mps.is_available():
        # Apple GPUs share system memory, so RAM is the limit there too.
        info.update(kind="mps", name=f"Apple GPU ({platform.machine()})")
    # The trainers are told bf16=False off CUDA (TRL raises otherwise), so the
    # estimate must assume fp32 even where the CPU could do bf16.
    info.update(memory_mb=total, free_mb=available)
    return info


def main() -> int:
    try:
        info = describe_device()
    except Exception as exc:  # noqa: BLE001 - the window shows the reason instead of waiting forever
        info = {"error": f"{type(exc).__name__}: {exc}"}
    sys.stdout.write(json.dumps(info) + "\n")
    sys.stdout.flush()
    return 0 if "error" not in info else 1


if __name__ == "__main__":
    sys.exit(main())
