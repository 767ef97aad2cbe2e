"""Drive a generation worker from any process: the window, the CLI, tests.

``GenerationSession.start(...)`` launches ``python -m backend.generation.worker``
without a shell, asks it to load the run (or adapter, or model) and returns at
once; the model loads in the background and a ``ready`` event says when it
serves. Request methods write one line to the worker's stdin and return the
request id at once; they are safe to call from any thread (the GUI thread
included). Events are read off the worker's stdout by a thread of the
session's own and queued: one consumer takes them with ``read_event(timeout)``
or iterates ``events()``, for instance from a QThread that re-emits them as
signals, or from a QTimer that polls ``read_event(0)``.

The process rules are the training run's: stderr goes to a log file (never a
pipe nobody reads), the worker runs in its own session, and it exits by
itself when its stdin closes, so a crashed studio leaves nothing behind.
``close()`` releases the process, and with it every byte of GPU memory, within
seconds: shutdown, then terminate, then kill, children first.
"""

from __future__ import annotations

import itertools
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

from backend.generation.protocol import (
    BatchCompareRequest,
    CancelRequest,
    ChatRequest,
    GenerateRequest,
    GenerationError,
    GenerationEvent,
    LoadRequest,
    ModelReady,
    Request,
    RequestFinished,
    SamplingSettings,
    ScoreRequest,
    ShutdownRequest,
    WorkerExited,
    event_from_json,
)
from backend.training.client import kill_process_tree, log_tail

from backend.core.paths import PROJECT_ROOT as _PROJECT_ROOT
LOG_NAME = "generation-worker.log"
_MAX_LOG_BYTES = 5 * 2**20


def default_log_path() -> Path:
    from backend.core.paths import home_dir

    return home_dir() / "logs" / LOG_NAME


class SessionClosed(RuntimeError):
    """A request was sent to a session whose worker has exited or been closed."""


class GenerationSession:
    """One generation worker process and its event stream."""

    def __init__(self, process: subprocess.Popen, log_path: Path):
        self.process = process
        self.log_path = Path(log_path)
        self.ready: ModelReady | None = None  # the latest ready event seen by the consumer
        self._events: "queue.Queue[GenerationEvent]" = queue.Queue()
        self._stdin_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._closing = False
        self._exited = threading.Event()
        self._reader = threading.Thread(target=self._read_stdout, name="generation-events", daemon=True)
        self._reader.start()

    # -- starting ------------------------------------------------------------
    @classmethod
    def start(cls, run_dir: str | Path | None = None, adapter_dir: str | Path | None = None,
              model: str | None = None, quantization: str | None = None, beta: float | None = None,
              log_path: str | Path | None = None) -> "GenerationSession":
        """Launch a worker and ask it to load. Returns before the model is loaded.

        The spec is checked first (cheap, no torch): a run without an adapter or a
        folder that is not an adapter raises AdapterLoadError here, in the caller.
        With nothing to load, the worker starts empty and waits for ``load()``.
        """
        from backend.models.adapter_loading import resolve_load_spec

        if run_dir or adapter_dir or model:
            resolve_load_spec(run_dir=run_dir, adapter_dir=adapter_dir, model=model, quantization=quantization,
                              beta=beta)
        session = cls._launch(Path(log_path) if log_path else default_log_path())
        if run_dir or adapter_dir or model:
            session.load(run_dir=run_dir, adapter_dir=adapter_dir, model=model, quantization=quantization,
                         beta=beta, request_id="load-1")
        return session

    @classmethod
    def _launch(cls, log_path: Path) -> "GenerationSession":
        log_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            if log_path.stat().st_size > _MAX_LOG_BYTES:
                os.replace(log_path, log_path.with_suffix(".log.old"))
        except OSError:
            pass
        from backend.runs.code_permissions import launch_environment, stored_launch_subjects

        # The user's confirmed grants, which the worker checks against the model's files again.
        env = launch_environment(os.environ, stored_launch_subjects())
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_PROJECT_ROOT), env.get("PYTHONPATH", "")) if p)
        env.setdefault("PYTHONUNBUFFERED", "1")
        log = log_path.open("ab")
        try:
            log.write(f"\n--- generation worker started {time.strftime('%Y-%m-%d %H:%M:%S')} ---\n".encode())
            log.flush()
            process = subprocess.Popen(
                [sys.executable, "-m", "backend.generation.worker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                env=env,
                cwd=str(_PROJECT_ROOT),
                # A process group of its own (terminal Ctrl-C reaches only the caller), but the
                # caller's session: Linux schedules sessions as groups (autogroup), so in a new
                # session the window's lower_priority would not rank the worker below it.
                process_group=0,
            )
        finally:
            log.close()
        return cls(process, log_path)

    # -- requests ------------------------------------------------------------
    def _next_id(self, prefix: str) -> str:
        return f"{prefix}-{next(self._ids)}"

    def send(self, request: Request) -> str:
        """Send any request; returns its id (one is assigned if it has none)."""
        if not request.id:
            request.id = self._next_id(request.op)
        line = (request.to_json() + "\n").encode("utf-8")
        with self._stdin_lock:
            stdin = self.process.stdin
            if stdin is None or stdin.closed or self._exited.is_set():
                raise SessionClosed("The generation worker is not running; start a new session.")
            try:
                stdin.write(line)
                stdin.flush()
            except (BrokenPipeError, OSError, ValueError):
                raise SessionClosed("The generation worker is not running; start a new session.") from None
        return request.id

    def load(self, run_dir: str | Path | None = None, adapter_dir: str | Path | None = None,
             model: str | None = None, quantization: str | None = None, beta: float | None = None,
             request_id: str = "") -> str:
        """Load another run/adapter/model; an adapter on the same base model swaps in seconds."""
        return self.send(LoadRequest(id=request_id, run_dir=_str(run_dir), adapter_dir=_str(adapter_dir),
                                     model=model, quantization=quantization, beta=beta))

    def generate(self, prompt: Any, side: str = "both", sampling: SamplingSettings | dict | None = None,
                 score: bool = True, stream: bool = True, request_id: str = "") -> str:
        return self.send(GenerateRequest(id=request_id, prompt=prompt, side=side, sampling=_sampling(sampling),
                                         score=score, stream=stream))

    def chat(self, messages: list[dict[str, Any]], side: str = "aligned",
             sampling: SamplingSettings | dict | None = None, score: bool = False, stream: bool = True,
             request_id: str = "") -> str:
        return self.send(ChatRequest(id=request_id, messages=list(messages), side=side,
                                     sampling=_sampling(sampling), score=score, stream=stream))

    def score(self, prompt: Any, responses: list[Any], labels: list[str] | None = None,
              add_eos: bool | None = None, request_id: str = "") -> str:
        return self.send(ScoreRequest(id=request_id, prompt=prompt, responses=list(responses), labels=labels,
                                      add_eos=add_eos))

    def batch_compare(self, rows: list[dict[str, Any]] | None = None, prompts: list[Any] | None = None,
                      n: int = 0, sampling: SamplingSettings | dict | None = None, generate: bool = True,
                      stream: bool = False, request_id: str = "") -> str:
        return self.send(BatchCompareRequest(id=request_id, rows=rows, prompts=prompts, n=n,
                                             sampling=_sampling(sampling), generate=generate, stream=stream))

    def cancel(self, request_id: str = "*") -> None:
        """Stop one request, or all of them ("*"). Never raises: cancelling a gone worker is a no-op."""
        try:
            self.send(CancelRequest(id=self._next_id("cancel"), target=request_id or "*"))
        except SessionClosed:
            pass

    # -- events --------------------------------------------------------------
    def _read_stdout(self) -> None:
        stdout = self.process.stdout
        assert stdout is not None
        try:
            for raw in stdout:
                line = raw.decode("utf-8", errors="replace").strip()
                if not line.startswith("{"):
                    continue
                try:
                    event = event_from_json(line)
                except (ValueError, TypeError):
                    continue
                self._events.put(event)
        except (OSError, ValueError):
            pass
        code = self.process.wait()
        if self._closing:
            exited = WorkerExited(exit_code=code, unexpected=False, message="The generation worker was closed.")
        else:
            exited = WorkerExited(
                exit_code=code,
                unexpected=True,
                message=f"The generation worker ended unexpectedly (exit code {code}).",
                hint="If the machine ran out of memory, load the model in 4-bit or lower max new tokens. "
                     "The end of the worker log is attached.",
                log_tail=log_tail(self.log_path),
            )
        self._events.put(exited)  # before the flag, so a reader that sees the flag finds the event
        self._exited.set()

    def read_event(self, timeout: float | None = None) -> GenerationEvent | None:
        """The next event, or None if none arrives within ``timeout`` seconds
        (None waits for ever). After the worker exits the last event is
        ``WorkerExited``; later calls return None at once."""
        try:
            if self._exited.is_set() and self._events.empty():
                return None
            event = self._events.get(timeout=timeout) if timeout is None or timeout > 0 else self._events.get_nowait()
        except queue.Empty:
            return None
        if isinstance(event, ModelReady):
            self.ready = event
        return event

    def events(self, timeout: float | None = None) -> Iterator[GenerationEvent]:
        """Iterate events until the worker exits (or none arrives for ``timeout`` s)."""
        while True:
            event = self.read_event(timeout)
            if event is None:
                return
            yield event
            if isinstance(event, WorkerExited):
                return

    # -- conveniences for scripts and tests -------------------------------------
    def wait_ready(self, timeout: float = 300.0) -> ModelReady:
        """Block until a load finishes. Raises RuntimeError with the worker's message on failure."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"The model did not load within {timeout:.0f} s; see {self.log_path}.")
            event = self.read_event(left)
            if isinstance(event, ModelReady):
                return event
            if isinstance(event, GenerationError) and event.fatal or isinstance(event, WorkerExited):
                raise RuntimeError(f"{event.message} {event.hint}".strip())

    def collect(self, request_id: str, timeout: float = 300.0) -> list[GenerationEvent]:
        """Every event of one request up to its ``finished`` event (events of other
        requests are dropped). For scripts and tests; a window consumes ``events()``."""
        deadline = time.monotonic() + timeout
        out: list[GenerationEvent] = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"Request {request_id} did not finish within {timeout:.0f} s.")
            event = self.read_event(left)
            if event is None:
                continue
            if isinstance(event, WorkerExited):
                out.append(event)
                return out
            if event.request_id == request_id:
                out.append(event)
                if isinstance(event, RequestFinished):
                    return out

    # -- lifetime --------------------------------------------------------------
    @property
    def pid(self) -> int:
        return self.process.pid

    def is_running(self) -> bool:
        return self.process.poll() is None

    def close(self, grace_seconds: float = 5.0) -> int | None:
        """Release the worker: ask it to shut down, close its stdin, and terminate
        the process tree if it has not gone within ``grace_seconds``. Returns the
        exit code. Safe to call twice, and from any thread."""
        self._closing = True
        with self._stdin_lock:
            stdin = self.process.stdin
            if stdin is not None and not stdin.closed:
                try:
                    stdin.write((ShutdownRequest(id="shutdown").to_json() + "\n").encode())
                    stdin.flush()
                except (BrokenPipeError, OSError, ValueError):
                    pass
                try:
                    stdin.close()
                except OSError:
                    pass
        try:
            code = self.process.wait(timeout=grace_seconds)
        except subprocess.TimeoutExpired:
            kill_process_tree(self.process.pid)
            code = self.process.wait(timeout=10)
        self._reader.join(timeout=5)
        if self.process.stdout is not None:
            try:
                self.process.stdout.close()
            except OSError:
                pass
        return code

    def __enter__(self) -> "GenerationSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _str(value: str | Path | None) -> str | None:
    return None if value is None else str(value)


def _sampling(sampling: SamplingSettings | dict | None) -> dict[str, Any]:
    if sampling is None:
        return {}
    if isinstance(sampling, SamplingSettings):
        return sampling.to_dict()
    return dict(sampling)
