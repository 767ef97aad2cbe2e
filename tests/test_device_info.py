"""The device description the window reads from ``python -m backend.core.device_info``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
KEYS = {"kind", "name", "memory_mb", "free_mb", "bf16", "torch_version", "cuda_version"}


def test_describe_device_on_this_machine():
    torch = pytest.importorskip("torch")
    from backend.core.device_info import describe_device

    info = describe_device()
    assert set(info) == KEYS
    assert info["torch_version"] == torch.__version__
    assert info["memory_mb"] > 0 and info["free_mb"] > 0 and info["name"]
    if torch.cuda.is_available():
        assert info["kind"] == "cuda" and isinstance(info["bf16"], bool)
    else:
        # The CI and development machines have no GPU.
        assert info["kind"] in ("cpu", "mps") and info["bf16"] is False


def test_module_prints_one_json_line_and_imports_torch_lazily():
    proc = subprocess.run([sys.executable, "-m", "backend.core.device_info"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1
    info = json.loads(lines[0])
    assert set(info) == KEYS and info["memory_mb"] > 0
    code = "import sys, backend.core.device_info; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=60, check=False).returncode == 0
