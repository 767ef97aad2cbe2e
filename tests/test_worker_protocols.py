"""Every worker protocol (training, generation jobs, export, reward evaluation, compare) reads its
lines with the one decoder in backend.core.events: non-finite floats survive the trip and an
unknown type is refused with the protocol's name."""

from __future__ import annotations

import math

import pytest

from backend.core.events import RunFailed, TrainLog, event_from_json
from backend.export.events import ExportPhase, export_event_from_json
from backend.generation.preferences.events import RowDone, job_event_from_json
from backend.generation.protocol import WorkerExited, event_from_json as generation_event_from_json
from backend.rewards.evaluation import EvalFinished, eval_event_from_json

PROTOCOLS = [
    (event_from_json, TrainLog(step=3, epoch=0.5, metrics={"loss": math.nan, "grad_norm": math.inf}), "event type"),
    (job_event_from_json, RowDone(index=1, line=2, kept=True, reason="", rows_done=1, rows_total=4, kept_total=1,
                                  agreement_rate=math.nan, p_ab=-math.inf), "generation event"),
    (export_event_from_json, ExportPhase(phase="merging", message="Merging", fraction=math.nan), "export event"),
    (eval_event_from_json, EvalFinished(report={"pairs": 0, "accuracy": math.nan, "mean_chosen": -math.inf}),
     "reward evaluation event"),
    (generation_event_from_json, WorkerExited(exit_code=None, message="gone"), "generation event type"),
]


@pytest.mark.parametrize("parse, event, what", PROTOCOLS, ids=[p[2] for p in PROTOCOLS])
def test_each_protocol_round_trips_its_events_with_non_finite_floats(parse, event, what):
    back = parse(event.to_json())
    assert type(back) is type(event)
    for name, value in vars(event).items():
        if name == "time":
            assert back.time == pytest.approx(value)
            continue
        assert _same(getattr(back, name), value), name


@pytest.mark.parametrize("parse, event, what", PROTOCOLS, ids=[p[2] for p in PROTOCOLS])
def test_each_protocol_refuses_an_unknown_type_by_name(parse, event, what):
    with pytest.raises(ValueError, match=f"unknown {what} 'nope'"):
        parse('{"type": "nope", "message": "x"}')


def test_fields_a_newer_writer_adds_are_dropped_rather_than_refused():
    line = RunFailed(kind="crash", message="boom").to_json()[:-1] + ',"added_later":1}'
    back = event_from_json(line)
    assert isinstance(back, RunFailed) and back.message == "boom"


def _same(a, b) -> bool:
    if isinstance(b, float) and math.isnan(b):
        return isinstance(a, float) and math.isnan(a)
    if isinstance(b, dict):
        return isinstance(a, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in b)
    return a == b


def test_run_folder_jsonl_files_skip_torn_and_foreign_lines(tmp_path):
    from backend.data.prompt_rendering import read_heldout_rows
    from backend.runs.folder import EVAL_SPLIT_FILE, METRICS_FILE, read_events

    good = TrainLog(step=1, epoch=0.1, metrics={"loss": math.nan})
    (tmp_path / METRICS_FILE).write_text(
        "\n".join([good.to_json(), "", "[1, 2]", '"text"', '{"type": "nope"}', good.to_json()[:25]]) + "\n",
        encoding="utf-8")
    events = read_events(tmp_path)
    assert len(events) == 1 and math.isnan(events[0].metrics["loss"])

    assert read_heldout_rows(tmp_path) == []  # no held-out file: none held out
    (tmp_path / EVAL_SPLIT_FILE).write_text('{"prompt": "a", "completion": "b"}\n\n[3]\n{"prompt": "c", "comp',
                                            encoding="utf-8")
    assert read_heldout_rows(tmp_path) == [{"prompt": "a", "completion": "b"}]


@pytest.mark.parametrize("kill", [True, False], ids=["killed", "crashed"])
def test_a_worker_that_ends_without_a_last_word_yields_a_failure_saying_why(tmp_path, kill):
    import os
    import sys

    from backend.rewards.evaluation import EvalFailed, EvalProgress, RewardEvaluationRun
    from backend.training.client import spawn_worker

    says_then_ends = ("import sys, time\n"
                      "from backend.rewards.evaluation import EvalProgress\n"
                      "print(EvalProgress(done=1, total=4, message='scored 1').to_json(), flush=True)\n"
                      + ("time.sleep(120)\n" if kill else "sys.exit(3)\n"))
    log = tmp_path / "eval.log"
    worker = RewardEvaluationRun(spawn_worker([sys.executable, "-c", says_then_ends], dict(os.environ), log), log)
    events = worker.events()
    assert isinstance(next(events), EvalProgress)
    if kill:
        worker.kill()
    rest = list(events)
    assert len(rest) == 1 and isinstance(rest[0], EvalFailed) and worker.last_event is rest[0]
    if kill:
        assert rest[0].kind == "killed" and "stopped by force" in rest[0].message
    else:
        assert rest[0].kind == "crash" and "exit code 3" in rest[0].message


def test_text_that_reads_like_a_non_finite_float_stays_text():
    from backend.core.events import WorkerWarning
    from backend.generation.protocol import TokenStreamed

    token = generation_event_from_json(TokenStreamed(request_id="g", side="base", text="Infinity", index=1).to_json())
    assert token.text == "Infinity"
    warning = event_from_json(WorkerWarning(message="NaN", kind="-Infinity").to_json())
    assert (warning.message, warning.kind) == ("NaN", "-Infinity")
