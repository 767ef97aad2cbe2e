"""Follow a training worker from a thread of its own and re-emit its events as Qt signals.

``TrainingRun.events()`` blocks on the worker's stdout, so it cannot run on the
GUI thread. The supervisor is a QObject living on a QThread: it starts the run,
iterates its events and emits one typed signal per event; Qt queues those
signals to the GUI thread. Stopping goes the other way without the thread: the
stop request writes to the worker's stdin, which is safe from any thread.
"""

from __future__ import annotations

import atexit
import threading
import traceback
import weakref
from dataclasses import dataclass

from PySide6.QtCore import QObject, QThread, Signal, Slot

from backend.core.events import (
    CheckpointSaved,
    EvalLog,
    EvalProgress,
    PhaseChanged,
    RunFailed,
    RunFinished,
    RunStarted,
    SampleBatch,
    TrainLog,
    WorkerWarning,
)
from backend.runs.config import ConfigError


WORKER_NICENESS = 5


@dataclass(frozen=True)
class ResumeRequest:
    """Continue the run in ``run_dir`` from its last checkpoint (instead of starting a new run)."""

    run_dir: str
    granted: object = None  # the run's config with the permissions the user granted for this resume


def lower_priority(pid: int, niceness: int = WORKER_NICENESS) -> None:
    """Let the window win the CPU from the worker when both want it.

    On a CPU-only machine torch keeps every core busy, and an equal-priority GUI
    thread then waits up to a few hundred milliseconds for its turn. A batch job
    at a lower priority loses nothing when the GUI is idle (nearly always).
    Processes the worker starts later inherit the priority, which is relative to the
    window's own (see lower_process_priority and spawn_worker).
    """
    from backend.training.client import lower_process_priority

    lower_process_priority(pid, niceness)


class TrainingSupervisor(QObject):
    """Owns at most one TrainingRun at a time; lives on a worker QThread."""

    sig_launched = Signal(str, str)
    """The worker process exists; carries the run folder and the path of its log file."""

    sig_run_started = Signal(object)
    """RunStarted: the model and data are ready and the first step is about to run."""

    sig_phase = Signal(object)
    """PhaseChanged: loading the model, preparing data, evaluating, saving..."""

    sig_train_log = Signal(object)
    """TrainLog: one logging step with every TRL metric."""

    sig_eval_progress = Signal(object)
    """EvalProgress: batches of an evaluation done, its ETA and the run's."""

    sig_eval_log = Signal(object)
    """EvalLog: metrics on the held-out rows."""

    sig_checkpoint = Signal(object)
    """CheckpointSaved."""

    sig_warning = Signal(object)
    """WorkerWarning: something the user should know that did not stop the run."""

    sig_finished = Signal(object)
    """RunFinished: the adapter is saved (after completion or a user stop)."""

    sig_failed = Signal(object)
    """RunFailed: the run ended with an error; the event carries a hint for the user."""

    sig_samples = Signal(object)
    """SampleBatch: completions an RL method sampled, with their graders' scores."""

    sig_idle = Signal()
    """The worker has exited and its streams are closed; a new run may start."""

    _DISPATCH = (
        (RunStarted, "sig_run_started"),
        (PhaseChanged, "sig_phase"),
        (TrainLog, "sig_train_log"),
        (EvalProgress, "sig_eval_progress"),
        (EvalLog, "sig_eval_log"),
        (CheckpointSaved, "sig_checkpoint"),
        (WorkerWarning, "sig_warning"),
        (RunFinished, "sig_finished"),
        (RunFailed, "sig_failed"),
        (SampleBatch, "sig_samples"),
    )

    def __init__(self, runs_root=None):
        super().__init__()
        self._runs_root = runs_root
        self._run = None
        self._lock = threading.Lock()
        self._stop_wanted = False

    @Slot(object)
    def supervise(self, request) -> None:
        """Start a run for ``request`` (a config, or a ResumeRequest) and follow it to
        the end (runs on the supervisor thread)."""
        from backend.training.client import TrainingRun

        try:
            try:
                if isinstance(request, ResumeRequest):
                    run = TrainingRun.resume(request.run_dir, granted=request.granted)
                else:
                    run = TrainingRun.start(request, runs_root=self._runs_root)
            except ConfigError as exc:
                self.sig_failed.emit(RunFailed(kind="bad_config", message=str(exc),
                                               hint="Fix the settings marked in the form and press Train again."))
                return
            except Exception as exc:  # a launch failure must reach the user, not kill the thread
                self.sig_failed.emit(RunFailed(kind="crash", message=f"The training worker could not start: {exc}",
                                               hint="", traceback=traceback.format_exc()))
                return
            with self._lock:
                self._run = run
                stop_early = self._stop_wanted
            lower_priority(run.process.pid)
            self.sig_launched.emit(str(run.run_dir), str(run.log_path))
            if stop_early:
                run.request_stop()
            for event in run.events():
                self._emit(event)
            run.wait()
            run.close()
        finally:
            with self._lock:
                self._run = None
                self._stop_wanted = False
            self.sig_idle.emit()

    def _emit(self, event) -> None:
        for cls, name in self._DISPATCH:
            if isinstance(event, cls):
                getattr(self, name).emit(event)
                return

    # These are called from the GUI thread while ``supervise`` blocks on events.
    def request_stop(self) -> None:
        """Ask the worker to stop after the current step and save its adapter."""
        with self._lock:
            self._stop_wanted = True
            run = self._run
        if run is not None:
            run.request_stop()

    def stop_with_deadline(self, grace_seconds: float) -> None:
        """Request a stop, and terminate the worker (children first) if it has not exited in time."""
        with self._lock:
            self._stop_wanted = True
            run = self._run
        if run is None:
            return
        # run.stop() waits; a plain thread keeps that wait off the GUI thread.
        threading.Thread(target=run.stop, kwargs={"grace_seconds": grace_seconds}, daemon=True,
                         name="alignstudio-stop").start()

    def kill(self) -> None:
        """End the worker now (children first). The run keeps its last checkpoint and metrics."""
        with self._lock:
            self._stop_wanted = True
            run = self._run
        if run is not None:
            threading.Thread(target=run.kill, daemon=True, name="alignstudio-kill").start()

    def worker_pid(self) -> int | None:
        with self._lock:
            return self._run.process.pid if self._run is not None else None


_controllers: "weakref.WeakSet[TrainingController]" = weakref.WeakSet()


@atexit.register
def _stop_supervisor_threads() -> None:
    # Qt aborts the process if a QThread object is destroyed while running; a
    # script that never closes its window would otherwise end with a crash.
    for controller in list(_controllers):
        controller.shutdown(wait_ms=2000)


class TrainingController(QObject):
    """Gives the window a simple handle: start, stop, is it running, shut down."""

    sig_busy_changed = Signal(bool)
    """A run started (True) or the worker exited (False)."""

    _sig_start = Signal(object)

    def __init__(self, runs_root=None, parent=None):
        super().__init__(parent)
        self._thread = QThread()
        self._thread.setObjectName("alignstudio-training-supervisor")
        self.supervisor = TrainingSupervisor(runs_root)
        self.supervisor.moveToThread(self._thread)
        self._sig_start.connect(self.supervisor.supervise)
        self.supervisor.sig_idle.connect(self._on_idle)
        self._busy = False
        self._thread.start()
        _controllers.add(self)

    def is_running(self) -> bool:
        return self._busy

    def start(self, config) -> None:
        self._launch(config)

    def resume(self, run_dir: str, granted=None) -> None:
        """Continue a stopped or crashed run from its last checkpoint; ``granted``: its config
        with the permissions the user granted (never read from the run folder)."""
        self._launch(ResumeRequest(str(run_dir), granted))

    def _launch(self, request) -> None:
        if self._busy:
            raise RuntimeError("a run is already in progress")
        self._busy = True
        self.sig_busy_changed.emit(True)
        self._sig_start.emit(request)

    def kill(self) -> None:
        self.supervisor.kill()

    def request_stop(self) -> None:
        self.supervisor.request_stop()

    def stop(self, grace_seconds: float = 60.0) -> None:
        self.supervisor.stop_with_deadline(grace_seconds)

    def worker_pid(self) -> int | None:
        return self.supervisor.worker_pid()

    def _on_idle(self) -> None:
        self._busy = False
        self.sig_busy_changed.emit(False)

    def shutdown(self, wait_ms: int = 5000) -> None:
        """Stop the supervisor thread (call once no run is in progress, or after stop())."""
        if self._busy:
            self.supervisor.stop_with_deadline(grace_seconds=max(1.0, wait_ms / 1000 - 1))
        self._thread.quit()
        self._thread.wait(wait_ms)
