"""The event protocol between a worker process and whoever supervises it.

A worker writes one JSON object per line; ``type`` names the event. The same
objects are appended to the run's ``metrics.jsonl``, so a run folder replays
exactly what a live viewer saw. Metric keys from TRL are forwarded unchanged
(``rewards/margins``, ``logps/chosen``, ``log_odds_ratio`` ...), so a metric
TRL adds tomorrow shows up without a change here.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping


@dataclass
class Event:
    type: ClassVar[str] = "event"
    time: float = field(default_factory=time.time, kw_only=True)

    def to_dict(self) -> dict[str, Any]:
        data = {"type": self.type}
        data.update(dataclasses.asdict(self))
        return data

    def to_json(self) -> str:
        # NaN/inf are not JSON; they are exactly what a user needs to see, so
        # they travel as strings and come back as floats.
        return json.dumps(_encode_floats(self.to_dict()), ensure_ascii=False, separators=(",", ":"))


@dataclass
class RunStarted(Event):
    """The worker has the model and data ready and is about to train."""

    type: ClassVar[str] = "run_started"
    run_dir: str
    method: str
    config: dict[str, Any]
    device: dict[str, Any]
    total_params: int
    trainable_params: int
    total_steps: int
    train_rows: int
    eval_rows: int
    resumed_from_step: int = 0
    memory_estimate_mb: float | None = None


@dataclass
class PhaseChanged(Event):
    """A long step outside the training loop began (loading the model, preparing data...)."""

    type: ClassVar[str] = "phase"
    phase: str  # loading_model | preparing_data | training | evaluating | saving
    message: str = ""
    elapsed_seconds: float | None = None  # the run clock (backend.runs.clock)


@dataclass
class TrainLog(Event):
    """One logging step of the trainer, with every TRL metric under its own key."""

    type: ClassVar[str] = "log"
    step: int
    epoch: float
    metrics: dict[str, float]
    total_steps: int = 0
    tokens_per_second: float | None = None
    seconds_per_step: float | None = None
    eta_seconds: float | None = None  # until the run ends, the evaluations still to come included
    elapsed_seconds: float = 0.0  # the run clock (backend.runs.clock)
    peak_memory_mb: float | None = None
    memory_kind: str = ""  # "gpu" or "rss"


@dataclass
class EvalProgress(Event):
    """How far an evaluation on the held-out rows has got. Evaluations can take
    longer than training; without this the window would sit at the last step."""

    type: ClassVar[str] = "eval_progress"
    step: int  # the optimizer step the evaluation belongs to
    batch: int  # batches done
    total_batches: int
    rows: int = 0  # held-out rows this evaluation covers
    final: bool = False  # the evaluation after the last step
    eval_eta_seconds: float | None = None  # until this evaluation ends
    eta_seconds: float | None = None  # until the run ends: this evaluation, the steps and evaluations left
    elapsed_seconds: float = 0.0  # the run clock


@dataclass
class EvalLog(Event):
    type: ClassVar[str] = "eval"
    step: int
    epoch: float
    metrics: dict[str, float]


@dataclass
class CheckpointSaved(Event):
    type: ClassVar[str] = "checkpoint"
    step: int
    path: str


@dataclass
class WorkerWarning(Event):
    type: ClassVar[str] = "warning"
    message: str
    kind: str = ""


@dataclass
class RunFinished(Event):
    """Training ended and the adapter is on disk. ``stopped`` is True for a user stop."""

    type: ClassVar[str] = "finished"
    adapter_path: str
    stopped: bool
    step: int
    total_steps: int
    elapsed_seconds: float
    summary: dict[str, float]
    peak_memory_mb: float | None = None


@dataclass
class RunFailed(Event):
    type: ClassVar[str] = "failed"
    kind: str  # out_of_memory | bad_data | bad_config | bad_model | nan_loss | interrupted | crash
    message: str
    hint: str = ""
    traceback: str = ""
    elapsed_seconds: float | None = None  # the run clock; None when the worker died without a word


@dataclass
class SampleBatch(Event):
    """The completions the policy sampled at a step of an RL method, as its graders scored them.

    Each row is a dict: ``prompt`` and ``completion`` (text, long ones cut in the middle),
    ``scores`` (grader name -> score, NaN where the grader abstained), ``reward`` (the
    weighted total), ``advantage`` and ``group`` (rows sharing it answer the same prompt).
    Only the last rows of a generation batch travel (``total_rows`` says how many it had).
    """

    type: ClassVar[str] = "samples"
    step: int
    graders: list[str]
    rows: list[dict[str, Any]]
    total_rows: int = 0


EVENT_TYPES: dict[str, type[Event]] = {
    cls.type: cls
    for cls in (RunStarted, PhaseChanged, TrainLog, EvalProgress, EvalLog, CheckpointSaved, WorkerWarning,
                RunFinished, RunFailed, SampleBatch)
}
TERMINAL_TYPES = (RunFinished, RunFailed)


def decode_event(data: dict[str, Any], types: Mapping[str, type[Event]], what: str = "event type") -> Event:
    """The event ``data`` describes, its class picked by ``type`` among ``types`` (each worker's
    protocol has its own table). Keys the class lacks are dropped, so an older reader still
    reads a newer writer's line; the non-finite floats ``to_json`` wrote as strings come back,
    except in a field declared ``str``, where "NaN" or "Infinity" is text (a streamed token)."""
    cls = types.get(data.get("type", ""))
    if cls is None:
        raise ValueError(f"unknown {what} {data.get('type')!r}")
    text_fields = {f.name for f in dataclasses.fields(cls) if f.type in ("str", str)}
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v if k in text_fields else _decode_floats(v) for k, v in data.items() if k in names})


def event_from_dict(data: dict[str, Any]) -> Event:
    return decode_event(data, EVENT_TYPES)


def event_from_json(line: str) -> Event:
    return event_from_dict(json.loads(line))


def event_of_types(line: str, types: Mapping[str, type[Event]], what: str = "event") -> Event:
    """One JSON line of another worker's protocol (``types``: type name -> Event class)."""
    return decode_event(json.loads(line), types, what)


_SPECIAL = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _encode_floats(value):
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: _encode_floats(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode_floats(v) for v in value]
    return value


def _decode_floats(value):
    if isinstance(value, str) and value in _SPECIAL:
        return _SPECIAL[value]
    if isinstance(value, dict):
        return {k: _decode_floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode_floats(v) for v in value]
    return value
