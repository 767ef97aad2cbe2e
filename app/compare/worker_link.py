"""The Compare tab's line to its generation worker: one process, typed Qt signals.

``GenerationSession`` already reads the worker's stdout on a thread of its own
and queues the events, so no QThread is needed here: a QTimer on the GUI thread
drains the queue about 20 times a second and re-emits each event as a signal.
Consecutive token deltas for the same pane are merged first, so a fast worker
costs one text insertion per pane per tick rather than one per token.

Releasing the worker (the user left the tab, or training is about to need the
memory) closes the session on a plain thread: ``close()`` may wait a few
seconds for a model load that cannot be interrupted, and the window must not
wait with it. Requests still in flight are answered with a cancelled
``RequestFinished`` at once, so every view re-enables its buttons the usual way.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QTimer, Signal

from backend.generation.protocol import (
    BatchRowReady,
    BatchSummaryReady,
    BestOfNReportReady,
    BestOfNRequest,
    BestOfNRowReady,
    GenerationDone,
    GenerationError,
    GenerationEvent,
    ModelReady,
    RequestFinished,
    ResponsesScored,
    TokenStreamed,
    WorkerExited,
    WorkerStatus,
)

# Events handled per tick at most; the rest wait for the next tick so a flood
# of tokens never holds the GUI thread for long.
_MAX_EVENTS_PER_TICK = 2000
_TICK_BUDGET_S = 0.03
POLL_INTERVAL_MS = 50

STATES = ("off", "loading", "ready", "failed")


def load_key(spec: dict[str, Any]) -> tuple:
    """What a load asks for, comparable: the same key means nothing needs loading."""
    return tuple(sorted((k, str(v)) for k, v in spec.items() if v not in (None, "")))


class CompareWorkerLink(QObject):
    """Owns at most one generation worker; every method is called on the GUI thread."""

    sig_state_changed = Signal(str)
    """off (no worker) | loading | ready (a model serves requests) | failed (nothing loaded)."""

    sig_busy_changed = Signal(bool)
    """Whether a generate/chat/batch request is in flight."""

    sig_ready = Signal(object)
    """ModelReady: a load finished; carries prompt style, beta, held-out row counts."""

    sig_status = Signal(object)
    """WorkerStatus: a slow step began (loading the model or the adapter, scoring...)."""

    sig_token = Signal(object)
    """TokenStreamed: new text for one side (deltas of one tick already merged)."""

    sig_done = Signal(object)
    """GenerationDone: one side finished; its text replaces the streamed deltas."""

    sig_scored = Signal(object)
    """ResponsesScored: log-probs under both models and the implicit reward of each answer."""

    sig_batch_row = Signal(object)
    """BatchRowReady: one row of a batch compare is complete."""

    sig_batch_summary = Signal(object)
    """BatchSummaryReady: a batch compare finished (or was stopped) and was summarised."""

    sig_best_of_n_row = Signal(object)
    """BestOfNRowReady: one prompt's N answers, ranked."""

    sig_best_of_n_report = Signal(object)
    """BestOfNReportReady: a best-of-N request finished: best-of-N against the single answer."""

    sig_error = Signal(object)
    """GenerationError: something failed; carries a message and a hint a user can act on."""

    sig_finished = Signal(object)
    """RequestFinished: the last event of every request (real, or synthesised on release)."""

    sig_exited = Signal(object)
    """WorkerExited: the worker process is gone; ``unexpected`` says whether that was a crash."""

    def __init__(self, parent: QObject | None = None, log_path: str | None = None):
        super().__init__(parent)
        self._log_path = log_path
        self._session = None
        self._state = "off"
        self._ready: ModelReady | None = None
        self._previous_ready: ModelReady | None = None
        self._load_id = ""
        self._load_key: tuple = ()
        self._load_failed_fatally = False
        self._requests: dict[str, str] = {}  # request id -> op, for requests not finished yet
        self._closing: list[threading.Thread] = []
        self._loading_since: float | None = None
        # Set by the window: asks the user before a model may run its own code; returns
        # "ok", "granted" (a new grant: the worker must be restarted to get it) or "refused".
        self.confirm_code: Callable[[str], str] | None = None
        self._timer = QTimer(self)
        self._timer.setInterval(POLL_INTERVAL_MS)
        self._timer.timeout.connect(self.poll)

    # ------------------------------------------------------------------ state
    def state(self) -> str:
        return self._state

    def ready_event(self) -> ModelReady | None:
        """The ModelReady of what is loaded now, or None."""
        return self._ready if self._state == "ready" else None

    def is_busy(self) -> bool:
        return any(op != "load" for op in self._requests.values())

    def is_running(self) -> bool:
        return self._session is not None and self._session.is_running()

    def pid(self) -> int | None:
        return self._session.pid if self._session is not None else None

    def loaded_key(self) -> tuple:
        return self._load_key

    def loading_seconds(self) -> float:
        return time.monotonic() - self._loading_since if self._loading_since is not None else 0.0

    def log_path(self) -> str:
        return str(self._session.log_path) if self._session is not None else ""

    def _set_state(self, state: str) -> None:
        if state != self._state:
            self._state = state
            self.sig_state_changed.emit(state)

    # ---------------------------------------------------------------- loading
    def load(self, spec: dict[str, Any]) -> bool:
        """Load ``spec`` (run_dir | adapter_dir [+ model] | model). Returns False when
        the spec was refused at once; the reason then arrives as ``sig_error``.

        The same spec already loaded (or loading) is a no-op. A different one
        reuses the running worker, which keeps the base weights when only the
        adapter changes."""
        key = load_key(spec)
        if self._session is not None and not self._session.is_running():
            # Died, and its exit not drained yet: settle its open requests before starting anew.
            self.release()
        if self._session is not None and key == self._load_key \
                and self._state in ("loading", "ready"):
            return True
        from backend.models.adapter_loading import AdapterLoadError, resolve_load_spec

        try:
            resolved = resolve_load_spec(**spec)
        except AdapterLoadError as exc:
            self._emit_local_error("bad_adapter", str(exc),
                                   "Pick a finished run, its adapter/ folder or one of its checkpoints.")
            return False
        answer = self.confirm_code(resolved.model) if self.confirm_code else "ok"
        if answer == "refused":
            self._emit_local_error("not_allowed", "The model was not loaded: you did not allow it to run code.",
                                   "Pick it again to be asked again, or pick another model.")
            return False
        if answer == "granted" and self._session is not None:
            self.release()  # grants reach a worker only when it is launched
        self._previous_ready = self._ready if self._state == "ready" else None
        self._ready = None
        self._load_key = key
        self._load_failed_fatally = False
        self._loading_since = time.monotonic()
        try:
            if self._session is None or not self._session.is_running():
                self._start_session()
            self._load_id = self._session.load(**spec, request_id=f"load-{int(time.monotonic() * 1000)}")
        except Exception as exc:  # noqa: BLE001 - a failed start is reported, never raised into Qt
            self._loading_since = None
            self._load_key = ()
            self._emit_local_error("crash", f"The generation worker could not be started: {exc}",
                                   "Check that the studio's Python environment is complete.")
            self._set_state("failed")
            return False
        self._requests[self._load_id] = "load"
        self._set_state("loading")
        return True

    def _start_session(self) -> None:
        from app.train.training_supervisor import lower_priority
        from backend.generation.client import GenerationSession

        self._session = GenerationSession.start(log_path=self._log_path)
        lower_priority(self._session.pid)
        self._timer.start()

    # --------------------------------------------------------------- requests
    def _send(self, op: str, call: Callable[[Any], str]) -> str | None:
        if self._state != "ready" or self._session is None:
            self._emit_local_error("no_model", "No model is loaded yet.",
                                   "Pick a run first; it loads once and stays loaded while this tab is open.")
            return None
        from backend.generation.client import SessionClosed

        try:
            request_id = call(self._session)
        except SessionClosed as exc:
            self._emit_local_error("crash", str(exc), "Pick the run again to start a new worker.")
            return None
        was_busy = self.is_busy()
        self._requests[request_id] = op
        if not was_busy:
            self.sig_busy_changed.emit(True)
        return request_id

    def generate(self, prompt: Any, side: str, sampling: dict[str, Any]) -> str | None:
        return self._send("generate", lambda s: s.generate(prompt, side=side, sampling=sampling, score=True))

    def chat(self, messages: list[dict[str, Any]], side: str, sampling: dict[str, Any]) -> str | None:
        return self._send("chat", lambda s: s.chat(messages, side=side, sampling=sampling))

    def batch_compare(self, rows: list[dict[str, Any]] | None, n: int, sampling: dict[str, Any],
                      generate: bool = True) -> str | None:
        return self._send("batch_compare", lambda s: s.batch_compare(rows=rows, n=n, sampling=sampling,
                                                                      generate=generate))

    def best_of_n(self, **fields: Any) -> str | None:
        """A best-of-N request (``BestOfNRequest``'s fields)."""
        return self._send("best_of_n", lambda s: s.send(BestOfNRequest(**fields)))

    def cancel(self, request_id: str) -> None:
        if self._session is not None and request_id:
            self._session.cancel(request_id)

    # ------------------------------------------------------------------ events
    def poll(self) -> None:
        """Drain the session's queue (the timer calls this; tests may too)."""
        session = self._session
        if session is None:
            self._timer.stop()
            return
        started = time.perf_counter()
        batch: list[GenerationEvent] = []
        while len(batch) < _MAX_EVENTS_PER_TICK and time.perf_counter() - started < _TICK_BUDGET_S:
            event = session.read_event(0)
            if event is None:
                break
            batch.append(event)
        for event in _merge_tokens(batch):
            if session is not self._session:
                return  # released while handling this batch
            self._dispatch(event)

    def _dispatch(self, event: GenerationEvent) -> None:
        if isinstance(event, TokenStreamed):
            self.sig_token.emit(event)
        elif isinstance(event, GenerationDone):
            self.sig_done.emit(event)
        elif isinstance(event, ResponsesScored):
            self.sig_scored.emit(event)
        elif isinstance(event, BatchRowReady):
            self.sig_batch_row.emit(event)
        elif isinstance(event, BatchSummaryReady):
            self.sig_batch_summary.emit(event)
        elif isinstance(event, BestOfNRowReady):
            self.sig_best_of_n_row.emit(event)
        elif isinstance(event, BestOfNReportReady):
            self.sig_best_of_n_report.emit(event)
        elif isinstance(event, WorkerStatus):
            self.sig_status.emit(event)
        elif isinstance(event, ModelReady):
            if event.request_id == self._load_id:
                self._ready = event
                self._loading_since = None
                self._set_state("ready")
                self.sig_ready.emit(event)
        elif isinstance(event, GenerationError):
            if event.request_id == self._load_id and event.fatal:
                self._load_failed_fatally = True
            self.sig_error.emit(event)
        elif isinstance(event, RequestFinished):
            self._finish(event)
        elif isinstance(event, WorkerExited):
            self._on_exited(event)

    def _finish(self, event: RequestFinished) -> None:
        op = self._requests.pop(event.request_id, None)
        if op == "load" and event.request_id == self._load_id and self._state == "loading":
            self._loading_since = None
            # A load that failed before touching the old model leaves it serving.
            if self._previous_ready is not None and not self._load_failed_fatally:
                self._ready = self._previous_ready
                self._set_state("ready")
            else:
                self._load_key = ()
                self._set_state("failed")
        self.sig_finished.emit(event)
        if op not in (None, "load") and not self.is_busy():
            self.sig_busy_changed.emit(False)

    def _on_exited(self, event: WorkerExited) -> None:
        self._drop_session()
        self.sig_exited.emit(event)

    def _drop_session(self) -> None:
        """Forget the session and answer its open requests as cancelled."""
        self._timer.stop()
        self._session = None
        self._ready = None
        self._previous_ready = None
        self._load_key = ()
        self._loading_since = None
        open_requests, self._requests = self._requests, {}
        was_busy = any(op != "load" for op in open_requests.values())
        for request_id, op in open_requests.items():
            self.sig_finished.emit(RequestFinished(request_id=request_id, op=op, ok=False, cancelled=True))
        self._set_state("off")
        if was_busy:
            self.sig_busy_changed.emit(False)

    def _emit_local_error(self, kind: str, message: str, hint: str) -> None:
        self.sig_error.emit(GenerationError(kind=kind, message=message, hint=hint))

    # ---------------------------------------------------------------- release
    def release(self) -> int | None:
        """Close the worker without blocking; returns the pid being released (None if none).
        Its memory (all of it, GPU included) is returned when the process exits."""
        session = self._session
        if session is None:
            return None
        pid = session.pid
        self._drop_session()
        thread = threading.Thread(target=_close_quietly, args=(session,), name="release-generation-worker",
                                  daemon=True)
        thread.start()
        self._closing = [t for t in self._closing if t.is_alive()] + [thread]
        return pid

    def wait_released(self, timeout: float = 15.0) -> bool:
        """Block until released workers have exited (for shutdown paths and tests)."""
        deadline = time.monotonic() + timeout
        for thread in self._closing:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._closing = [t for t in self._closing if t.is_alive()]
        return not self._closing


def _close_quietly(session) -> None:
    # The process is gone or going either way; a failure here has no one to tell.
    with contextlib.suppress(Exception):
        session.close()


def _merge_tokens(events: list[GenerationEvent]) -> list[GenerationEvent]:
    """Join the token deltas of each (request, side, row) into one event.

    Both sides decode in lockstep, so their tokens interleave; merging per key
    rather than per run of neighbours is what makes a tick cost one insertion
    per pane. Any other event flushes the pending tokens first, so a pane always
    has its tokens before its ``done``."""
    out: list[GenerationEvent] = []
    pending: dict[tuple, TokenStreamed] = {}
    for event in events:
        if isinstance(event, TokenStreamed):
            key = (event.request_id, event.side, event.row)
            last = pending.get(key)
            pending[key] = event if last is None else TokenStreamed(
                request_id=event.request_id, side=event.side, text=last.text + event.text, index=event.index,
                row=event.row)
            continue
        out.extend(pending.values())
        pending.clear()
        out.append(event)
    out.extend(pending.values())
    return out
