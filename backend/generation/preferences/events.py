"""Events of a generation job worker, one JSON line each on its stdout (the training protocol's shape)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from backend.core.events import Event, event_of_types


@dataclass
class JobStarted(Event):
    type: ClassVar[str] = "generation_started"
    job: str
    output_path: str
    partial_path: str
    rows_total: int
    rows_done: int  # finished by an earlier run of the same request and not done again
    input_summary: str = ""
    input_skipped: int = 0
    input_skip_messages: list[str] = field(default_factory=list)


@dataclass
class JobPhase(Event):
    type: ClassVar[str] = "generation_phase"
    phase: str  # loading_model | generating
    message: str


@dataclass
class RowDone(Event):
    type: ClassVar[str] = "generation_row"
    index: int
    line: int
    kept: bool
    reason: str
    rows_done: int
    rows_total: int
    kept_total: int
    agreement_rate: float | None = None
    seconds: float = 0.0
    p_ab: float | None = None  # AI feedback: P(answer 1 better) with it shown first, and shown second
    p_ba: float | None = None
    answers: list[str] = field(default_factory=list)  # AI feedback: the two answers judged, in file order
    row: dict[str, Any] | None = None  # the pair made from this row, when kept


@dataclass
class JobFinished(Event):
    type: ClassVar[str] = "generation_finished"
    path: str
    report_path: str
    report: dict[str, Any]


@dataclass
class JobFailed(Event):
    type: ClassVar[str] = "generation_failed"
    kind: str  # stopped | bad_request | error | crash | killed
    message: str
    setting: str = ""  # the request field to change, for a bad request
    partial_path: str = ""  # kept for Resume; "" when nothing was done
    rows_done: int = 0
    traceback: str = ""


JOB_EVENT_TYPES = {cls.type: cls for cls in (JobStarted, JobPhase, RowDone, JobFinished, JobFailed)}
JOB_TERMINAL = (JobFinished, JobFailed)


def job_event_from_json(line: str) -> Event:
    return event_of_types(line, JOB_EVENT_TYPES, "generation event")
