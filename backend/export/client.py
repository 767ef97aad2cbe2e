"""Start, follow and stop an export worker from any process: the CLI, the window, tests.

The process rules are the training run's (backend.training.client): no shell,
stdout for events only, stderr to a log file (``export.log`` in the run
folder), its own session, a stop request on stdin, and children killed first
when it has to be terminated. A worker killed mid-way never reached its final
rename; its scratch folder, announced in its first event, is removed here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterator

from backend.core.events import Event
from backend.export.events import (EXPORT_TERMINAL, ExportFailed, ExportStarted, export_event_from_json)
from backend.export.plan import ExportPlan, ExportRequest, plan_export
from backend.training.client import TrainingRun, log_tail, spawn_worker

EXPORT_LOG = "export.log"


class ExportRun(TrainingRun):
    """An export worker; stopping, killing and closing work as for a training worker."""

    def __init__(self, plan: ExportPlan, process: subprocess.Popen, log_path: Path):
        super().__init__(plan.run_dir, process)
        self.plan = plan
        self.log_path = log_path
        self.work_dir: Path | None = None
        self.last_event: Event | None = None

    @classmethod
    def start(cls, request: ExportRequest) -> "ExportRun":  # type: ignore[override]
        """Check the request (raises ExportError at once) and launch the worker."""
        import json

        plan = plan_export(request)
        log_path = plan.run_dir / EXPORT_LOG
        from backend.runs.code_permissions import launch_environment, stored_launch_subjects

        # The base model loads with the grants the user confirmed in the window, never the run folder's say.
        env = launch_environment(os.environ, stored_launch_subjects())
        process = spawn_worker([sys.executable, "-m", "backend.export.worker", json.dumps(request.to_dict())],
                               env, log_path, plan.run_dir)
        return cls(plan, process, log_path)

    def events(self) -> Iterator[Event]:
        """Yield events until the export ends; a worker that dies silently yields an ExportFailed."""
        for event in self.events_until_end(export_event_from_json, EXPORT_TERMINAL, self._silent_death):
            if isinstance(event, ExportStarted):
                self.work_dir = Path(event.work_dir)
            yield event

    def _silent_death(self, code: int) -> ExportFailed:
        self._remove_work_dir()
        message = ("The export was stopped by force; nothing was written under "
                   f"{self.plan.final_path.name}." if self.killed else
                   f"The export worker ended unexpectedly (exit code {code}); nothing was written under "
                   f"{self.plan.final_path.name}.")
        return ExportFailed(kind="killed" if self.killed else "crash", message=message,
                            traceback=log_tail(self.log_path))

    def _remove_work_dir(self) -> None:
        if self.work_dir is not None and self.work_dir.name.startswith(".export-"):
            shutil.rmtree(self.work_dir, ignore_errors=True)
