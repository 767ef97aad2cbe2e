"""Event-loop helpers shared by the screenshot scripts: wait for a condition, let paints settle."""

from __future__ import annotations

import time


def wait_for(app, predicate, timeout: float, what: str) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return
        app.processEvents()
        time.sleep(0.01)
    raise TimeoutError(f"timed out waiting for {what}")


def settle(app, seconds: float = 0.6) -> None:
    """Process events for a while so deferred layouts and plot redraws land in the grab."""
    end = time.time() + seconds
    while time.time() < end:
        app.processEvents()
        time.sleep(0.01)


def build_tiny_model_in_background(root, model_dir):
    """Start building the tiny random Llama in a child process (the window's process never
    imports torch); ``.wait()`` on the result before training on it."""
    import os
    import subprocess
    import sys

    return subprocess.Popen(
        [sys.executable, "-c",
         f"from backend.testing.tiny_model import build_tiny_model; build_tiny_model({str(model_dir)!r})"],
        cwd=root, env=dict(os.environ, PYTHONPATH=str(root)), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
