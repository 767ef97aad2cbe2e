"""Ctrl-C for the command line's long jobs (training, export, generation): the first asks the
worker to stop and keep what it finished, the second ends it at once."""

from __future__ import annotations

import signal
import sys


def install_two_stage_stop(process, message: str, stream=None):
    """Ctrl-C calls ``process.request_stop()`` and prints ``message``; a second Ctrl-C calls
    ``process.kill()``. Returns the previous handler, to restore with ``signal.signal``."""
    count = 0

    def on_sigint(signum, frame):
        nonlocal count
        count += 1
        if count == 1:
            print(f"\n{message}", file=stream or sys.stdout, flush=True)
            process.request_stop()
        else:
            process.kill()

    return signal.signal(signal.SIGINT, on_sigint)
