"""Start, follow and stop a generation job worker from any process: the CLI, the window, tests.

The process rules are the training run's (backend.training.client): no shell, stdout for events
only, stderr to a log file, its own session, a stop request on stdin, children killed first
when it has to be terminated. A worker that dies without a last word yields a JobFailed that
says the finished rows are kept for a resume.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

from backend.runs.code_permissions import CodeSubject
from backend.core.events import Event
from backend.generation.preferences.events import JOB_TERMINAL, JobFailed, job_event_from_json
from backend.generation.preferences.request import GenerationRequest, check_request
from backend.training.client import TrainingRun, log_tail, spawn_worker



def log_path_for(request: GenerationRequest) -> Path:
    from backend.core.paths import home_dir

    folder = home_dir() / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"generate-{request.output.stem}.log"


class GenerationJob(TrainingRun):
    """A generation job worker; stopping, killing and closing work as for a training worker."""

    def __init__(self, request: GenerationRequest, process: subprocess.Popen, log_path: Path):
        super().__init__(request.output.parent, process)
        self.request = request
        self.log_path = log_path

    @classmethod
    def start(cls, request: GenerationRequest, grants: list[CodeSubject] | None = None,  # type: ignore[override]
              extra_env: dict[str, str] | None = None) -> "GenerationJob":
        """Check the request (RequestError at once) and launch the worker. ``grants``: the model
        permissions this launch gives (the window's confirmed grants, or the CLI's flags)."""
        from backend.runs.code_permissions import launch_environment

        check_request(request)
        request = request.absolute()
        log_path = log_path_for(request)
        env = launch_environment(os.environ, grants or [])
        env.update(extra_env or {})
        process = spawn_worker([sys.executable, "-m", "backend.generation.preferences.worker", request.to_json()],
                               env, log_path, request.output.parent)
        return cls(request, process, log_path)

    def events(self) -> Iterator[Event]:
        """Yield events until the job ends; a worker that dies silently yields a JobFailed."""
        yield from self.events_until_end(job_event_from_json, JOB_TERMINAL, self._silent_death)

    def _silent_death(self, code: int) -> JobFailed:
        partial = self.request.partial
        kept = (f" The rows finished so far are kept in {partial.name}; start the same job again to continue."
                if partial.exists() else "")
        message = ("The generation was stopped by force." if self.killed else
                   f"The generation worker ended unexpectedly (exit code {code}).") + kept
        return JobFailed(kind="killed" if self.killed else "crash", message=message,
                         partial_path=str(partial) if partial.exists() else "", traceback=log_tail(self.log_path))


def model_grants(request: GenerationRequest, trust_remote_code: bool, allow_pickle_weights: bool) -> list[CodeSubject]:
    """What the CLI's permission flags grant every model the request names."""
    from backend.runs.code_permissions import model_subject
    from backend.generation.preferences.request import run_base_model

    wanted = [p for p, on in (("trust_remote_code", trust_remote_code), ("allow_pickle_weights", allow_pickle_weights))
              if on]
    subjects = [model_subject(run_base_model(m), p) for m in request.models() for p in wanted]
    return [s for s in subjects if s is not None]
