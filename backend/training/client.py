"""Start, follow and stop a training run from any process: the CLI, the window, tests.

The worker is a child process started without a shell. Its stdout carries only
events (JSON lines); its stderr goes straight to ``worker.log`` in the run
folder, never to a pipe nobody reads (an unread stderr pipe fills up and hangs
the child). Its stdin is our stop channel: "stop" asks for a cooperative stop,
and when this process dies the pipe closes and the worker stops by itself.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

from backend.core.events import Event, RunFailed, TERMINAL_TYPES, event_from_json
from backend.runs.config import BaseRunConfig, check
from backend.runs.folder import ACCELERATE_CONFIG_FILE, LOG_FILE, WORKER_MODULE, append_event, create_run_dir

from backend.core.paths import PROJECT_ROOT as _PROJECT_ROOT


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


_SIGNAL_MEANINGS = {
    signal.SIGSEGV: "a segmentation fault: a crash inside native code such as a GPU kernel or bitsandbytes",
    signal.SIGABRT: "an abort inside native code",
    signal.SIGBUS: "a bus error: often a memory-mapped file that vanished or a full disk",
    signal.SIGILL: "an illegal instruction: a library built for a newer CPU",
    signal.SIGFPE: "an arithmetic fault inside native code",
}


def describe_exit(code: int, run_dir: Path) -> tuple[str, str, str]:
    """(kind, message, hint) for a worker that exited without saying why."""
    from backend.runs.folder import latest_checkpoint

    checkpoint = latest_checkpoint(run_dir)
    resume = (f"Resume continues from the last checkpoint ({checkpoint.name})." if checkpoint
              else "No checkpoint was saved yet, so a new run starts from the beginning.")
    signum = -code if code < 0 else code - 128 if code > 128 else 0
    if signum == signal.SIGKILL:
        return "killed", "The training worker was killed (SIGKILL).", (
            "Either it was stopped by force, or the system ran out of memory and killed it "
            "(the Linux out-of-memory killer does this without a message). If memory is the cause, "
            "lower the batch size or max length, or use 4-bit quantization. " + resume)
    if signum in _SIGNAL_MEANINGS:
        name = signal.Signals(signum).name
        return "crash", f"The training worker crashed with {name}, {_SIGNAL_MEANINGS[signum]}.", (
            "The last lines of its log are below. " + resume)
    return "crash", f"The training worker ended unexpectedly (exit code {code}).", (
        "The last lines of its log are below. " + resume)


def read_accelerate_config(path: str | Path) -> str:
    """The text of an accelerate config file; ConfigError naming the file when it is not one."""
    import yaml

    from backend.runs.config import ConfigError

    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
        data = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError([("accelerate_config", f"Cannot read the accelerate config {path}: {exc}")]) from exc
    if not isinstance(data, dict) or "distributed_type" not in data:
        raise ConfigError([("accelerate_config", f"{path} is not an accelerate config: it has no "
                                                 "distributed_type (write one with `accelerate config` or "
                                                 "`alignstudio export RUN --as-command`)")])
    return text


class TrainingRun:
    """A running (or finished) worker process for one run folder."""

    def __init__(self, run_dir: Path, process: subprocess.Popen):
        self.run_dir = Path(run_dir)
        self.process = process
        self.log_path = self.run_dir / LOG_FILE
        self.last_event: Event | None = None
        self._stdin_lock = threading.Lock()
        self._terminal_seen = False
        self.killed = False  # kill() ended it: a death without a last word is then ours, not a crash

    # -- starting ----------------------------------------------------------
    @classmethod
    def start(cls, config: BaseRunConfig, runs_root: str | Path | None = None,
              accelerate_config: str | Path | None = None) -> "TrainingRun":
        """Validate ``config``, create its run folder and launch the worker; with an
        accelerate config (several processes, FSDP, DeepSpeed), under ``accelerate launch``."""
        check(config)
        layout = read_accelerate_config(accelerate_config) if accelerate_config else None
        run_dir = create_run_dir(config, runs_root)
        if layout is not None:
            # Kept in the run folder, so Resume launches the same layout.
            (run_dir / ACCELERATE_CONFIG_FILE).write_text(layout, encoding="utf-8")
        return cls._launch(run_dir, resume=False, granted=config)

    @classmethod
    def resume(cls, run_dir: str | Path, granted: BaseRunConfig | None = None) -> "TrainingRun":
        """Continue a stopped or crashed run from its last checkpoint, in the same folder.
        ``granted``: the run's config with the permissions the user granted for this resume."""
        return cls._launch(Path(run_dir), resume=True, granted=granted)

    @classmethod
    def _launch(cls, run_dir: Path, resume: bool, granted: BaseRunConfig | None = None) -> "TrainingRun":
        cmd = [sys.executable, "-m", WORKER_MODULE, str(run_dir)]
        if (run_dir / ACCELERATE_CONFIG_FILE).exists():
            cmd[1:2] = ["-m", "accelerate.commands.launch", "--config_file", str(run_dir / ACCELERATE_CONFIG_FILE),
                        "-m"]
        if resume:
            cmd.append("--resume")
        from backend.runs.code_permissions import config_launch_subjects, launch_environment

        # Permissions reach the worker only through this launch's environment (see backend.runs.code_permissions).
        env = launch_environment(os.environ, config_launch_subjects(granted) if granted is not None else [])
        return cls(run_dir, spawn_worker(cmd, env, run_dir / LOG_FILE, run_dir))

    # -- following ---------------------------------------------------------
    def worker_events(self, parse: Callable[[str], Event]) -> Iterator[Event]:
        """The events the worker writes on stdout, one JSON object a line, parsed by ``parse``;
        other lines (a library printing to stdout) are skipped. Ends when the worker's stdout does."""
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            line = raw.decode("utf-8", errors="replace").strip()
            if not line.startswith("{"):
                continue
            try:
                event = parse(line)
            except ValueError:
                continue
            self.last_event = event
            yield event

    def events(self) -> Iterator[Event]:
        """Yield events until the run ends. A worker that dies without saying why
        yields a RunFailed with the end of its log, and that is recorded too."""
        yield from self.events_until_end(event_from_json, TERMINAL_TYPES, self._record_silent_death)

    def events_until_end(self, parse: Callable[[str], Event], terminal: tuple[type[Event], ...],
                         silent_death: Callable[[int], Event]) -> Iterator[Event]:
        """The worker's events, read by ``parse``, up to the first of the ``terminal`` types; then
        its exit is awaited. A worker that exits without one yields ``silent_death(exit_code)``
        (``self.killed`` tells a kill from a crash), so whoever follows it always sees an end."""
        for event in self.worker_events(parse):
            yield event
            if isinstance(event, terminal):
                self._terminal_seen = True
                break
        code = self.process.wait()
        if not self._terminal_seen:
            failure = silent_death(code)
            self.last_event = failure
            self._terminal_seen = True
            yield failure

    def _record_silent_death(self, code: int) -> RunFailed:
        kind, message, hint = describe_exit(code, self.run_dir)
        failure = RunFailed(kind=kind, message=message, hint=hint, traceback=log_tail(self.log_path))
        append_event(self.run_dir, failure)
        return failure

    # -- stopping ----------------------------------------------------------
    def request_stop(self) -> None:
        """Ask the worker to stop at the next step and save its adapter."""
        with self._stdin_lock:
            try:
                if self.process.stdin and not self.process.stdin.closed:
                    self.process.stdin.write(b"stop\n")
                    self.process.stdin.flush()
            except (BrokenPipeError, OSError, ValueError):
                pass

    def stop(self, grace_seconds: float = 120.0) -> int | None:
        """Request a stop, wait for the worker to save and exit, terminate it if it does not."""
        self.request_stop()
        try:
            return self.process.wait(timeout=grace_seconds)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.process.wait(timeout=10)

    def kill(self) -> None:
        """Terminate the worker and its children, children first."""
        self.killed = True
        kill_process_tree(self.process.pid)

    def is_running(self) -> bool:
        return self.process.poll() is None

    def wait(self, timeout: float | None = None) -> int | None:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def close(self) -> None:
        for stream in (self.process.stdin, self.process.stdout):
            try:
                if stream:
                    stream.close()
            except OSError:
                pass


def spawn_worker(cmd: list[str], env: dict[str, str], log_path: Path, cwd: Path | None = None) -> subprocess.Popen:
    """Start a worker process: events on its stdout, its stderr appended to ``log_path``, in a
    process group of its own (a Ctrl-C in the terminal reaches the caller, who decides how to
    stop it), finding the backend package even when the studio runs from a checkout.

    A process group, not a session: where the kernel groups processes by session for
    scheduling ("autogroup", on by default on desktop Linux), a worker in a session of its
    own competes with the window as an equal group whatever its nice value, and the
    window lost the CPU to it for 100+ ms at a time. In the window's session a nice
    value ranks it below the window, and against other programs the two count as one.
    """
    env = dict(env)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_PROJECT_ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    with Path(log_path).open("ab") as log:
        return subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=env,
                                cwd=str(cwd) if cwd is not None else None, process_group=0)


def lower_process_priority(pid: int, niceness: int) -> None:
    """Schedule process ``pid`` ``niceness`` levels below this process.

    On Linux a nice value belongs to a thread (threads started later inherit it),
    so every thread the process has now is set. It ranks the worker below the
    window only if both are in the same scheduling group: see ``spawn_worker``.
    Best effort: where it is not allowed, it is skipped.
    """
    if not hasattr(os, "setpriority"):
        return
    try:
        target = min(19, os.getpriority(os.PRIO_PROCESS, 0) + niceness)
    except OSError:
        return
    task_dir = Path(f"/proc/{pid}/task")
    try:
        threads = [int(name) for name in os.listdir(task_dir)] if task_dir.is_dir() else [pid]
    except OSError:
        threads = [pid]
    for tid in threads:
        try:
            os.setpriority(os.PRIO_PROCESS, tid, max(os.getpriority(os.PRIO_PROCESS, tid), target))
        except OSError:
            pass


def kill_process_tree(pid: int, timeout: float = 5.0) -> None:
    import psutil

    try:
        parent = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    children = parent.children(recursive=True)
    for proc in reversed(children):  # deepest first
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    try:
        parent.terminate()
    except psutil.NoSuchProcess:
        pass
    gone, alive = psutil.wait_procs(children + [parent], timeout=timeout)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=timeout)


def run_to_completion(config: BaseRunConfig, runs_root: str | Path | None = None,
                      on_event=None, timeout: float | None = None) -> tuple["TrainingRun", list[Event]]:
    """Convenience for scripts and tests: start, collect every event, return them."""
    run = TrainingRun.start(config, runs_root)
    events: list[Event] = []
    deadline = time.time() + timeout if timeout else None
    for event in run.events():
        events.append(event)
        if on_event:
            on_event(run, event)
        if deadline and time.time() > deadline:
            run.stop(grace_seconds=30)
    run.wait()
    run.close()
    return run, events
