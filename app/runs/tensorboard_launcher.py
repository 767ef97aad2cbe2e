"""TensorBoard on one run folder, started from the Runs tab and stopped with the window.

TensorBoard is a separate program with its own web server: it is started as a
child process (never through a shell) on a free local port, its output goes to
a log file in the run folder, and the browser is pointed at it once it answers.
One at a time: opening another run stops the previous one.
"""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from backend.training.tracking import tensorboard_command, tensorboard_dir

TENSORBOARD_LOG = "tensorboard.log"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def why_no_tensorboard(run_dir: str | Path) -> str:
    """Why the Runs tab cannot open TensorBoard on this run, or "" when it can."""
    if tensorboard_command(run_dir, 0) is None:
        return "TensorBoard is not installed: pip install tensorboard"
    if not any(tensorboard_dir(run_dir).rglob("events.out.tfevents.*")):
        return ("This run wrote no TensorBoard files (its Trackers setting left TensorBoard out, "
                "or it was trained before TensorBoard was installed).")
    return ""


class TensorBoardLauncher:
    def __init__(self):
        self.process: subprocess.Popen | None = None
        self.url = ""
        self.run_dir: Path | None = None

    def start(self, run_dir: str | Path) -> str:
        """Start TensorBoard on ``run_dir``; returns its address (it may take a few seconds to answer)."""
        self.stop()
        self.run_dir = Path(run_dir)
        port = free_port()
        command = tensorboard_command(run_dir, port)
        if command is None:
            raise RuntimeError(why_no_tensorboard(run_dir))
        command += ["--host", "127.0.0.1"]
        with (self.run_dir / TENSORBOARD_LOG).open("ab") as log:
            self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                            start_new_session=True)
        self.url = f"http://127.0.0.1:{port}/"
        return self.url

    def answering(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(self.url, timeout=0.5):
                return True
        except OSError:
            return False

    def wait_until_answering(self, timeout: float) -> bool:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.answering():
                return True
            if self.process is None or self.process.poll() is not None:
                return False
            time.sleep(0.2)
        return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self.process = None
        self.url = ""
