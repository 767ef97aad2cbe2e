"""Run a plain function on the thread pool and get its result back on the GUI thread; follow and
stop a worker process from a dialog."""

from __future__ import annotations

import traceback
from typing import Any, Callable

import shiboken6
from PySide6.QtCore import QObject, QRunnable, QThreadPool, QTimer, Signal


class _Relay(QObject):
    done = Signal(object)
    failed = Signal(object, str)


class _Call(QRunnable):
    def __init__(self, fn: Callable[[], Any], relay: _Relay):
        super().__init__()
        self._fn = fn
        self._relay = relay

    def run(self):
        try:
            result = self._fn()
        except Exception as exc:
            self._relay.failed.emit(exc, traceback.format_exc())
            return
        self._relay.done.emit(result)


_live: set[_Relay] = set()


def call_in_background(fn: Callable[[], Any], on_done: Callable[[Any], None],
                       on_error: Callable[[BaseException, str], None] | None = None,
                       owner: QObject | None = None, pool: QThreadPool | None = None) -> None:
    """``fn`` runs on the pool; ``on_done(result)`` or ``on_error(exc, tb)`` run on the GUI thread.

    With an ``owner``, a result that arrives after the owner was destroyed (a
    closed window) is dropped instead of touching dead widgets.
    """
    relay = _Relay()
    _live.add(relay)  # the relay must outlive this call until a result is delivered

    def owner_gone() -> bool:
        return owner is not None and not shiboken6.isValid(owner)

    def release():
        # deleteLater destroys the relay here, on the GUI thread, rather than whenever
        # the garbage collector reaches its reference cycle, possibly on a pool thread.
        _live.discard(relay)
        relay.deleteLater()

    def finish_ok(result):
        release()
        if not owner_gone():
            on_done(result)

    def finish_error(exc, tb):
        release()
        if owner_gone():
            return
        if on_error is not None:
            on_error(exc, tb)
        else:
            print(tb)

    relay.done.connect(finish_ok)
    relay.failed.connect(finish_error)
    (pool or QThreadPool.globalInstance()).start(_Call(fn, relay))


class EventRelay(QObject):
    """Carries a worker's events from the pool thread that reads them to the GUI thread: create
    it there (parented to the dialog) and connect ``sig_event``; the signal is queued across."""

    sig_event = Signal(object)


def follow_worker_events(worker, relay: EventRelay, owner: QObject, on_end: Callable[[], None]) -> None:
    """Read a worker's blocking ``events()`` on the pool; each event reaches the GUI thread
    through ``relay.sig_event``, and ``on_end()`` runs there once the stream is over, whatever
    ended it. The worker's pipes are closed then."""

    def follow():
        for event in worker.events():
            if shiboken6.isValid(relay):
                relay.sig_event.emit(event)
        worker.close()

    call_in_background(follow, on_done=lambda _none: on_end(), on_error=lambda _exc, _tb: on_end(), owner=owner)


def stop_worker(worker, grace_ms: int) -> None:
    """Ask a worker (a TrainingRun or one of its kind) to stop at its next safe point, and kill
    it with its children if it still runs ``grace_ms`` later: a hung worker must not hold the GPU."""
    worker.request_stop()
    QTimer.singleShot(grace_ms, lambda: worker.kill() if worker.is_running() else None)
