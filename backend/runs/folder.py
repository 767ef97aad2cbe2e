"""Run folders: one per training run, readable without the studio running.

A run folder holds ``config.yaml``, ``metrics.jsonl`` (every event the worker
emitted, one per line), ``worker.log``, ``adapter/`` and ``checkpoints/``. The
runs list is built from these files alone, so any run can be reopened, compared
or resumed later, and a folder damaged by hand shows up as damaged instead of
breaking the list.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backend.core.events import (CheckpointSaved, Event, EvalLog, RunFailed, RunFinished, RunStarted, TrainLog,
                            event_from_dict)
from backend.core.paths import runs_dir
from backend.runs.clock import run_duration
from backend.runs.config import BaseRunConfig, ConfigError, load_yaml, save_yaml

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
LOG_FILE = "worker.log"
PID_FILE = "worker.pid"
# The module a training worker runs as (`python -m`): the launch and the check that a pid file's
# process is still that worker read this one name, so a move of the module cannot part them.
WORKER_MODULE = "backend.training.worker"
ADAPTER_DIR = "adapter"
CHECKPOINTS_DIR = "checkpoints"
EVAL_SPLIT_FILE = "eval_split.jsonl"
# Present when the run trains in several processes: the layout accelerate launches.
ACCELERATE_CONFIG_FILE = "accelerate_config.yaml"


def _slug(text: str) -> str:
    # Leading dots go too: a run named ".." must still be a folder inside the runs folder.
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")[:40] or "run"


def create_run_dir(cfg: BaseRunConfig, runs_root: str | Path | None = None) -> Path:
    root = Path(runs_root or cfg.output_dir or runs_dir()).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    if cfg.run_name:
        base = _slug(cfg.run_name)
    else:
        data = Path(cfg.data_path).stem if cfg.data_path else "data"
        base = f"{time.strftime('%Y%m%d-%H%M%S')}-{cfg.method}-{_slug(data)}"
    candidate, n = root / base, 1
    while True:
        try:
            candidate.mkdir()
            break
        except FileExistsError:
            n += 1
            candidate = root / f"{base}-{n}"
    save_yaml(cfg, candidate / CONFIG_FILE)
    return candidate


def load_run_config(run_dir: str | Path) -> BaseRunConfig:
    return load_yaml(Path(run_dir) / CONFIG_FILE)


def read_json_objects(path: str | Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSON Lines file of a run folder, in order; [] when it is missing.
    A line that holds none (the torn last line of a crash mid-write, a damaged one) is
    skipped rather than failing the whole file."""
    path = Path(path)
    objects: list[dict[str, Any]] = []
    if not path.is_file():
        return objects
    with path.open(encoding="utf-8", errors="replace") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                data = json.loads(line)
            except ValueError:
                continue
            if isinstance(data, dict):
                objects.append(data)
    return objects


def read_events(run_dir: str | Path) -> list[Event]:
    """Every event in ``metrics.jsonl``; a line that is no event (a torn last line) is skipped."""
    events: list[Event] = []
    for data in read_json_objects(Path(run_dir) / METRICS_FILE):
        try:
            events.append(event_from_dict(data))
        except (ValueError, TypeError):
            continue
    return events


def open_metrics_for_append(run_dir: str | Path):
    """``metrics.jsonl`` opened for appending. A worker killed mid-write leaves a
    torn last line; it is ended first, so the next event starts a line of its own
    instead of being glued to the torn one (and lost with it)."""
    path = Path(run_dir) / METRICS_FILE
    fh = path.open("a+b")
    if fh.tell() > 0:
        fh.seek(-1, os.SEEK_END)
        if fh.read(1) != b"\n":
            fh.write(b"\n")
    fh.seek(0, os.SEEK_END)
    return io.TextIOWrapper(fh, encoding="utf-8", write_through=True)


def append_event(run_dir: str | Path, event: Event) -> None:
    with open_metrics_for_append(run_dir) as fh:
        fh.write(event.to_json() + "\n")


def current_attempt_events(events: list[Event]) -> list[Event]:
    """The events as one continuous run: a resumed run replays the steps after its
    checkpoint, so the steps an earlier attempt logged past that point are
    superseded, and each step appears once, without a gap.

    Terminal events of earlier attempts (the crash that led to the resume) are
    kept; a later RunStarted marks that the run went on after them."""
    result: list[Event] = []
    for event in events:
        if isinstance(event, RunStarted):
            cut = event.resumed_from_step
            result = [e for e in result
                      if not (isinstance(e, (TrainLog, EvalLog, CheckpointSaved)) and e.step > cut)]
        result.append(event)
    return result


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest checkpoint the Trainer can resume from. A checkpoint whose save was
    cut off has no readable ``trainer_state.json`` (the Trainer writes it last) and
    is passed over."""
    folder = Path(run_dir) / CHECKPOINTS_DIR
    found = []
    for child in folder.glob("checkpoint-*"):
        m = re.fullmatch(r"checkpoint-(\d+)", child.name)
        if m and child.is_dir():
            found.append((int(m.group(1)), child))
    for _step, child in sorted(found, reverse=True):
        try:
            json.loads((child / "trainer_state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        return child
    return None


def process_alive(pid: int) -> bool:
    """Whether ``pid`` is running. A zombie has exited and only waits to be reaped."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def worker_alive(run_dir: str | Path) -> bool:
    """Whether a training worker is running in ``run_dir``. A killed worker leaves its
    pid file behind, and the system may give that number to an unrelated process
    later; such a run must not look as if it were still training."""
    import psutil

    pid_file = Path(run_dir) / PID_FILE
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return False
    if not process_alive(pid):
        return False
    try:
        return WORKER_MODULE in psutil.Process(pid).cmdline()
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


@dataclass
class RunSummary:
    run_dir: Path
    name: str
    method: str = ""
    model: str = ""
    data_path: str = ""
    status: str = "unknown"  # running | completed | stopped | failed | interrupted | damaged
    started_at: float | None = None
    duration_s: float | None = None
    step: int = 0
    total_steps: int = 0
    final_metrics: dict[str, float] = field(default_factory=dict)
    eval_metrics: dict[str, float] = field(default_factory=dict)
    error: str = ""
    adapter_path: str = ""
    checkpoint_step: int | None = None

    @property
    def resumable(self) -> bool:
        """Stopped or broken off before its last step, with a checkpoint to continue from."""
        return (self.status in ("stopped", "failed", "interrupted") and self.checkpoint_step is not None
                and (not self.total_steps or self.checkpoint_step < self.total_steps))

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["run_dir"] = str(self.run_dir)
        return d


def summarize_run(run_dir: str | Path, events: list[Event] | None = None) -> RunSummary:
    """The run's status and figures; ``events`` saves reading ``metrics.jsonl`` again
    when the caller has just read it."""
    run_dir = Path(run_dir)
    summary = RunSummary(run_dir=run_dir, name=run_dir.name)
    try:
        cfg = load_run_config(run_dir)
    except (ConfigError, OSError) as exc:
        summary.status = "damaged"
        summary.error = f"config.yaml cannot be read: {exc}"
        return summary
    summary.method, summary.model, summary.data_path = cfg.method, cfg.model or "embedded Gemma 3 270M", cfg.data_path
    events = current_attempt_events(read_events(run_dir) if events is None else events)
    for ev in events:
        if isinstance(ev, RunStarted):
            summary.started_at = summary.started_at or ev.time
            summary.total_steps = ev.total_steps
            summary.status, summary.error = "unknown", ""  # a resumed run is judged by its latest attempt
        elif isinstance(ev, TrainLog):
            summary.step, summary.final_metrics = ev.step, ev.metrics
            summary.total_steps = ev.total_steps or summary.total_steps
        elif isinstance(ev, EvalLog):
            summary.eval_metrics = ev.metrics
        elif isinstance(ev, RunFinished):
            summary.status = "stopped" if ev.stopped else "completed"
            summary.step, summary.adapter_path, summary.error = ev.step, ev.adapter_path, ""
        elif isinstance(ev, RunFailed):
            summary.status, summary.error = "failed", ev.message
    if summary.started_at is None and events:
        summary.started_at = events[0].time
    summary.duration_s = run_duration(events)
    if summary.status == "unknown":
        summary.status = "running" if worker_alive(run_dir) else ("interrupted" if events else "created")
    checkpoint = latest_checkpoint(run_dir)
    summary.checkpoint_step = int(checkpoint.name.rsplit("-", 1)[1]) if checkpoint else None
    return summary


def list_runs(runs_root: str | Path | None = None) -> list[RunSummary]:
    root = Path(runs_root or runs_dir()).expanduser()
    if not root.is_dir():
        return []
    runs = [summarize_run(p) for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    runs.sort(key=lambda r: r.started_at or (r.run_dir.stat().st_mtime if r.run_dir.exists() else 0), reverse=True)
    return runs


def delete_run(run_dir: str | Path) -> None:
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).exists() and not (run_dir / METRICS_FILE).exists():
        raise ValueError(f"{run_dir} does not look like a run folder; not deleting it")
    if worker_alive(run_dir):
        raise RuntimeError("this run is still training; stop it before deleting")
    shutil.rmtree(run_dir)
