"""The export worker: ``python -m backend.export.worker '<request as JSON>'``.

Its stdout carries only export events (JSON lines); its stderr goes to a log
file chosen by the parent. A line "stop" on stdin asks for a stop at the next
safe point (between phases, or by killing the GGUF converter); stdin closing
(the parent died) means the same. Nothing is ever left under the final name.
"""

from __future__ import annotations

import os
import sys
import threading
import traceback

from backend.export.events import ExportFailed, ExportFinished, ExportPhase, ExportStarted

_stdout = sys.stdout


def emit(event) -> None:
    _stdout.write(event.to_json() + "\n")
    _stdout.flush()


class WorkerState:
    """The state object ``run_export`` reports to: progress out, stop requests in."""

    def __init__(self):
        self._stop = threading.Event()
        threading.Thread(target=self._watch_stdin, name="stop-watch", daemon=True).start()

    def _watch_stdin(self) -> None:
        for line in sys.stdin:
            if line.strip() == "stop":
                self._stop.set()
        self._stop.set()  # the parent is gone

    def work_dir(self, final_path, work) -> None:
        emit(ExportStarted(final_path=str(final_path), work_dir=str(work)))

    def phase(self, name: str, message: str, fraction: float | None = None) -> None:
        emit(ExportPhase(phase=name, message=message, fraction=fraction))

    def stop_requested(self) -> bool:
        return self._stop.is_set()


def main(argv: list[str]) -> int:
    import json

    from backend.export.plan import ExportError, ExportRequest, plan_export

    # Libraries print progress bars and notices to stdout; only events may go there.
    sys.stdout = sys.stderr
    try:
        request = ExportRequest(**json.loads(argv[0]))
        plan = plan_export(request)
    except (ExportError, ValueError, TypeError, IndexError) as exc:
        emit(ExportFailed(kind="bad_request", message=str(exc)))
        return 2
    state = WorkerState()
    from backend.export.model_export import ExportStopped, run_export

    try:
        result = run_export(plan, state)
    except ExportStopped as exc:
        emit(ExportFailed(kind="stopped", message=f"{exc} Nothing was written under {plan.final_path.name}."))
        return 1
    except ExportError as exc:
        emit(ExportFailed(kind="error", message=str(exc)))
        return 1
    except Exception as exc:  # noqa: BLE001 - the window must hear about any failure
        emit(ExportFailed(kind="error", message=f"The export failed: {type(exc).__name__}: {exc}",
                          traceback=traceback.format_exc()))
        traceback.print_exc()
        return 1
    emit(ExportFinished(path=result.path, format=result.format, quantization=result.quantization,
                        checks=result.checks, seconds=result.seconds, pushed_to=result.pushed_to))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main(sys.argv[1:]))
