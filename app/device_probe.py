"""Ask a child process which device the worker will train on.

Finding out needs torch (about 1.5 s to import, and CUDA initialisation on top),
which the GUI process never imports; ``python -m backend.core.device_info`` prints
one JSON line instead, and QProcess reads it without blocking the window.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from PySide6.QtCore import QObject, QProcess, QProcessEnvironment, QTimer, Signal

from backend.core.paths import PROJECT_ROOT as _PROJECT_ROOT


def describe_device(info: dict | None) -> str:
    """One line for the status bar."""
    if not info:
        return "Device: unknown"
    if info.get("error"):
        return "Device: unknown (hover for why)"
    if info.get("kind") == "cuda":
        memory = info.get("memory_mb")
        size = f" · {memory / 1024:.0f} GB" if memory else ""
        bf16 = " · bf16" if info.get("bf16") else ""
        return f"GPU: {info.get('name', 'CUDA device')}{size}{bf16}"
    if info.get("kind") == "mps":
        return "Apple GPU (MPS)"
    memory = info.get("memory_mb")
    size = f" · {memory / 1024:.0f} GB RAM" if memory else ""
    return f"CPU{size} (no CUDA GPU found: training works, slowly)"


class DeviceProbe(QObject):
    """Runs the probe once and reports its JSON."""

    sig_device_found = Signal(object)
    """A dict from ``backend.core.device_info`` (kind, name, memory_mb, bf16), or {"error": ...}."""

    def __init__(self, parent=None, timeout_ms: int = 90_000):
        super().__init__(parent)
        self._process: QProcess | None = None
        self._timeout = QTimer(self)
        self._timeout.setSingleShot(True)
        self._timeout.setInterval(timeout_ms)
        self._timeout.timeout.connect(self._on_timeout)
        self.info: dict | None = None

    def start(self) -> None:
        proc = QProcess(self)
        env = QProcessEnvironment.systemEnvironment()
        env.insert("PYTHONPATH", os.pathsep.join(p for p in (str(_PROJECT_ROOT), env.value("PYTHONPATH")) if p))
        proc.setProcessEnvironment(env)
        proc.setProcessChannelMode(QProcess.ProcessChannelMode.SeparateChannels)
        proc.finished.connect(self._on_finished)
        proc.errorOccurred.connect(self._on_error)
        self._process = proc
        proc.start(sys.executable, ["-m", "backend.core.device_info"])
        self._timeout.start()

    def is_running(self) -> bool:
        return self._process is not None and self._process.state() != QProcess.ProcessState.NotRunning

    def stop(self) -> None:
        if self.is_running():
            self._process.kill()
            self._process.waitForFinished(2000)

    def _report(self, info: dict) -> None:
        self._timeout.stop()
        self.info = info
        self.sig_device_found.emit(info)

    def _on_finished(self, code: int, _status) -> None:
        if self.info is not None:
            return
        out = bytes(self._process.readAllStandardOutput()).decode("utf-8", errors="replace")
        for line in reversed(out.strip().splitlines()):
            try:
                info = json.loads(line)
            except ValueError:
                continue
            if isinstance(info, dict):
                self._report(info)
                return
        err = bytes(self._process.readAllStandardError()).decode("utf-8", errors="replace").strip()
        reason = err.splitlines()[-1][:160] if err else f"probe exited with code {code}"
        self._report({"error": reason})

    def _on_error(self, error) -> None:
        if error == QProcess.ProcessError.FailedToStart and self.info is None:
            self._report({"error": "could not start the device probe"})

    def _on_timeout(self) -> None:
        if self.info is None:
            self.stop()
            self._report({"error": "the device probe did not answer"})
