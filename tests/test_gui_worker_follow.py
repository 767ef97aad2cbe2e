"""The plumbing the worker dialogs (Export, Evaluate rewards, Generate preference data) share:
a worker's events reach the GUI thread, and a worker that ignores Stop is killed after the grace."""

from __future__ import annotations

import os
import sys
import threading

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from app.background_call import EventRelay, follow_worker_events, stop_worker  # noqa: E402
from backend.core.events import RunFailed, WorkerWarning  # noqa: E402
from backend.training.client import TrainingRun, spawn_worker  # noqa: E402

# Says two things, then hangs without reading its stdin: a Stop never reaches it.
HUNG_WORKER = ("import sys, time\n"
               "from backend.core.events import WorkerWarning\n"
               "for n in (1, 2):\n"
               "    print(WorkerWarning(message=f'hello {n}').to_json(), flush=True)\n"
               "print('a library printing to stdout', flush=True)\n"
               "time.sleep(120)\n")


def test_events_reach_the_gui_thread_and_a_hung_worker_is_killed_after_the_grace(qtbot, tmp_path):
    worker = TrainingRun(tmp_path, spawn_worker([sys.executable, "-c", HUNG_WORKER], dict(os.environ),
                                                tmp_path / "worker.log"))
    relay = EventRelay()
    received: list[tuple[object, bool]] = []
    relay.sig_event.connect(lambda event: received.append((event, threading.current_thread() is threading.main_thread())))
    ended = []
    follow_worker_events(worker, relay, owner=relay, on_end=lambda: ended.append(True))
    qtbot.waitUntil(lambda: len(received) == 2, timeout=20_000)
    assert [e.message for e, _ in received] == ["hello 1", "hello 2"]
    assert all(isinstance(e, WorkerWarning) for e, _ in received)
    assert all(on_gui for _, on_gui in received)

    stop_worker(worker, grace_ms=300)
    qtbot.waitUntil(lambda: bool(ended), timeout=20_000)
    assert worker.process.returncode is not None and worker.process.returncode < 0  # killed by a signal
    last, on_gui = received[-1]
    assert isinstance(last, RunFailed) and on_gui  # the stream's own word on the silent death
