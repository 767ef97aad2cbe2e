"""Events of an export worker, one JSON line each on its stdout (the training protocol's shape)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from backend.core.events import Event, event_of_types


@dataclass
class ExportStarted(Event):
    type: ClassVar[str] = "export_started"
    final_path: str
    work_dir: str  # scratch folder; removed by whoever sees the worker die without finishing


@dataclass
class ExportPhase(Event):
    type: ClassVar[str] = "export_phase"
    phase: str
    message: str
    fraction: float | None = None


@dataclass
class ExportFinished(Event):
    type: ClassVar[str] = "export_finished"
    path: str
    format: str
    quantization: str
    checks: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    pushed_to: str = ""


@dataclass
class ExportFailed(Event):
    type: ClassVar[str] = "export_failed"
    kind: str  # stopped | bad_request | error | crash | killed
    message: str
    traceback: str = ""


EXPORT_EVENT_TYPES = {cls.type: cls for cls in (ExportStarted, ExportPhase, ExportFinished, ExportFailed)}
EXPORT_TERMINAL = (ExportFinished, ExportFailed)


def export_event_from_json(line: str) -> Event:
    return event_of_types(line, EXPORT_EVENT_TYPES, "export event")
