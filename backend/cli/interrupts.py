"""Ctrl-C for the command line's long jobs (training, export, generation): the first asks the
worker to stop and keep what it finished, the second ends it at once."""

from __future__ import annotations

import signal
import sys
from typing import Any, Callable


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


def follow_events(process, stop_message: str, on_event: Callable[[Any], int | None], stream=None) -> int:
    """Hands each event of ``process.events()`` to ``on_event`` while Ctrl-C stops it in two
    stages, then restores Ctrl-C and closes ``process``. The exit code is the last one
    ``on_event`` returned; 1 when none did (the worker ended without saying how)."""
    previous = install_two_stage_stop(process, stop_message, stream)
    code = 1
    try:
        for event in process.events():
            said = on_event(event)
            if said is not None:
                code = said
    finally:
        signal.signal(signal.SIGINT, previous)
        process.close()
    return code


def failure_code(kind: str) -> int:
    """A worker's failure as an exit code: 2 for a request it refused, 1 for anything else."""
    return 2 if kind == "bad_request" else 1
