"""The generation job worker: ``python -m backend.generation.preferences.worker '<request as JSON>'``.

Its stdout carries only job events (JSON lines); its stderr goes to a log file chosen by the
parent. A line "stop" on stdin asks for a stop, which cuts the row being generated short; stdin
closing (the parent died) means the same. The rows finished so far stay in the partial file, and
the same request started again continues from there.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback

from backend.generation.preferences.events import JobFailed, JobFinished, JobPhase, JobStarted, RowDone

_stdout = sys.stdout


def emit(event) -> None:
    _stdout.write(event.to_json() + "\n")
    _stdout.flush()


def _watch_stdin(cancel: threading.Event) -> None:
    for line in sys.stdin:
        if line.strip() == "stop":
            cancel.set()
    cancel.set()  # the parent is gone


def _judged_texts(record: dict) -> list[str]:
    """The two texts a row produced, for showing a dropped row: the answers judged (AI feedback),
    or the revision and the first answer (Constitutional AI)."""
    if "answers" in record:
        return list(record["answers"])
    return [record.get("revision", ""), record.get("answer", "")] if "answer" in record else []


def main(argv: list[str]) -> int:
    import json

    from backend.models.adapter_loading import AdapterLoadError
    from backend.data.formats import DatasetError
    from backend.models.source import ModelSourceError
    from backend.generation.preferences.inputs import read_input_rows
    from backend.generation.preferences.jobs import JobHooks, JobStopped, check_inputs_fit, run_job
    from backend.generation.preferences.partial_file import PartialFile
    from backend.generation.preferences.request import GenerationRequest, RequestError, check_request

    # Libraries print progress bars and notices to stdout; only events may go there.
    sys.stdout = sys.stderr
    partial = None
    try:
        request = GenerationRequest.from_dict(json.loads(argv[0]))
        check_request(request)
        inputs = read_input_rows(request.input_path, limit=request.limit)
        check_inputs_fit(request, inputs)
        partial = PartialFile(request)
        done = partial.open()
    except (RequestError, ValueError, IndexError) as exc:
        emit(JobFailed(kind="bad_request", message=str(exc), setting=getattr(exc, "setting", "")))
        return 2
    except DatasetError as exc:
        emit(JobFailed(kind="bad_request", message=str(exc), setting="input_path"))
        return 2
    wanted = {row.index for row in inputs.rows}
    emit(JobStarted(job=request.job, output_path=str(request.output), partial_path=str(partial.path),
                    rows_total=len(inputs.rows), rows_done=len(wanted & set(done)), input_summary=inputs.describe(),
                    input_skipped=inputs.skipped, input_skip_messages=inputs.skip_messages))

    cancel = threading.Event()
    threading.Thread(target=_watch_stdin, args=(cancel,), name="stop-watch", daemon=True).start()
    from backend.testing.fault_injection import planned_faults
    from backend.generation.preferences.local_model import LocalModels
    from backend.data.prompt_rendering import default_stop_strings

    # A row is this job's step: the fault plan's slow_step slows every row (tests stop a job mid-way with it).
    slow_row = planned_faults().slow_step

    def row_done(record, stats) -> None:
        emit(RowDone(index=record["index"], line=record.get("line", 0), kept=bool(record.get("kept")),
                     reason=record.get("reason", ""), rows_done=stats.done, rows_total=stats.total,
                     kept_total=stats.kept, agreement_rate=stats.agreement_rate, seconds=record.get("seconds", 0.0),
                     p_ab=record.get("p_ab"), p_ba=record.get("p_ba"), answers=_judged_texts(record),
                     row=record.get("row")))
        if slow_row:
            time.sleep(slow_row)

    def phase(name: str, message: str) -> None:
        emit(JobPhase(phase=name, message=message))

    models = LocalModels(request.quantization, cancel, log=lambda m: print(m, file=sys.stderr, flush=True),
                         on_phase=phase, stop_strings=default_stop_strings([{"prompt": r.prompt} for r in inputs.rows]))
    hooks = JobHooks(stop_requested=cancel.is_set, row_done=row_done, phase=phase)
    try:
        for name in request.models():  # loaded up front, so a model that cannot load fails before any row
            models.judge(name)
        phase("generating", f"Generating from {inputs.describe()}")
        report, _stats = run_job(request, inputs, models, partial, hooks)
    except JobStopped as exc:
        emit(JobFailed(kind="stopped", message=f"{exc} The finished rows are kept in {partial.path.name}; start the "
                                                "same job again to continue.",
                       partial_path=str(partial.path), rows_done=len(partial.records)))
        return 1
    except (RequestError, ModelSourceError, AdapterLoadError) as exc:
        emit(JobFailed(kind="bad_request", message=str(exc), setting=getattr(exc, "setting", "model"),
                       partial_path=str(partial.path), rows_done=len(partial.records)))
        return 2
    except Exception as exc:  # noqa: BLE001 - the window must hear about any failure
        emit(JobFailed(kind="error", message=f"The generation failed: {type(exc).__name__}: {exc}",
                       partial_path=str(partial.path), rows_done=len(partial.records),
                       traceback=traceback.format_exc()))
        traceback.print_exc()
        return 1
    emit(JobFinished(path=str(request.output), report_path=str(request.report), report=report))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main(sys.argv[1:]))
