"""Evaluation shows its own progress, counts in the ETA, can be stopped, is capped by
default, and every duration of a run reads one clock."""

from __future__ import annotations

import math
import time

import pytest

from backend.core.events import EvalLog, EvalProgress, PhaseChanged, RunFinished, RunStarted, TrainLog
from backend.testing.fault_injection import ENV_VAR
from backend.runs.clock import evaluations_left, format_duration, run_duration
from backend.runs.folder import read_events, summarize_run
from backend.training.client import TrainingRun, run_to_completion
from tests.conftest import tiny_run_config


@pytest.mark.slow
def test_evaluation_reports_batches_and_the_eta_counts_it(tiny_model_dir, easy_preferences):
    # 32 held-out rows at the default evaluation batch (twice the training batch of 4): 4 batches.
    cfg = tiny_run_config("dpo", tiny_model_dir, easy_preferences, max_steps=5, eval_fraction=0.5,
                          eval_steps=3, eval_max_rows=0)
    run, events = run_to_completion(cfg, timeout=300)
    finished = events[-1]
    assert isinstance(finished, RunFinished) and not finished.stopped, finished
    started = next(e for e in events if isinstance(e, RunStarted))
    assert started.eval_rows == 32

    progress = [e for e in events if isinstance(e, EvalProgress)]
    by_step = {}
    for event in progress:
        by_step.setdefault(event.step, []).append(event)
    assert sorted(by_step) == [3, 5], sorted(by_step)  # one during training, the final one
    for step, seen in by_step.items():
        assert seen[0].batch == 0 and seen[-1].batch == seen[-1].total_batches == 4, [(e.batch, e.total_batches)
                                                                                   for e in seen]
        assert [e.batch for e in seen] == sorted(e.batch for e in seen)
        assert all(e.rows == 32 and e.final == (step == 5) for e in seen)
        assert seen[-1].eval_eta_seconds == 0
    # While the evaluation at step 3 runs, the run's ETA still holds the two steps after it.
    middle = by_step[3][-1]
    assert middle.eta_seconds > 0
    assert by_step[5][-1].eta_seconds == 0

    # The progress is announced before the evaluation's first batch and inside its phase.
    kinds = [(type(e).__name__, getattr(e, "phase", None)) for e in events]
    first_eval = kinds.index(("PhaseChanged", "evaluating"))
    assert isinstance(events[first_eval + 1], (EvalProgress, TrainLog))

    # The training ETA counts the evaluations still to come, not only the steps.
    logs = [e for e in events if isinstance(e, TrainLog)]
    step2 = next(e for e in logs if e.step == 2)
    steps_only = (step2.total_steps - step2.step) * step2.seconds_per_step
    assert step2.eta_seconds > steps_only + 1e-6, (step2.eta_seconds, steps_only)
    assert [e.step for e in events if isinstance(e, EvalLog)] == [3, 5]

    # One clock: every reading grows, the finish shows the last, the folder says the same.
    readings = [e.elapsed_seconds for e in events
                if isinstance(e, (TrainLog, EvalProgress, PhaseChanged, RunFinished)) and e.elapsed_seconds is not None]
    assert readings == sorted(readings) and readings[0] < 60
    assert finished.elapsed_seconds == readings[-1]
    summary = summarize_run(run.run_dir)
    assert abs(summary.duration_s - finished.elapsed_seconds) < 0.5
    assert run_duration(read_events(run.run_dir)) == summary.duration_s


@pytest.mark.slow
def test_stop_during_the_final_evaluation_ends_cleanly_with_the_adapter(tiny_model_dir, easy_preferences,
                                                                         monkeypatch):
    monkeypatch.setenv(ENV_VAR, "slow_eval=1")
    cfg = tiny_run_config("dpo", tiny_model_dir, easy_preferences, max_steps=2, eval_fraction=0.5,
                          eval_steps=0, eval_batch_size=2, eval_max_rows=0)
    run = TrainingRun.start(cfg)
    events, asked = [], None
    for event in run.events():
        events.append(event)
        if asked is None and isinstance(event, EvalProgress) and event.final and event.batch >= 1:
            asked = time.monotonic()
            run.request_stop()
    assert asked is not None, "no final evaluation progress was seen"
    assert run.wait(timeout=30) == 0
    run.close()
    took = time.monotonic() - asked
    finished = events[-1]
    assert isinstance(finished, RunFinished) and finished.stopped and finished.step == 2, finished
    # 16 batches of 1 s each would take 16 s; the stop ends it at the next batch.
    assert took < 10, took
    assert (run.run_dir / "adapter" / "adapter_config.json").exists()
    assert summarize_run(run.run_dir).status == "stopped"
    assert not any(isinstance(e, EvalLog) for e in events)


def test_evaluation_is_capped_and_batched_larger_by_default():
    import datasets

    from backend.runs.config import default_config
    from backend.training.trainer_builders import eval_batch_size
    from backend.training.worker import cap_evaluation_rows

    cfg = default_config("dpo")
    assert cfg.eval_max_rows == 200 and eval_batch_size(cfg) == 2 * cfg.per_device_train_batch_size
    held_out = datasets.Dataset.from_list([{"prompt": str(i), "chosen": "a", "rejected": "b"} for i in range(900)])
    capped = cap_evaluation_rows(cfg, held_out)
    assert len(capped) == 200 and capped[0] == held_out[0]
    cfg.eval_max_rows = 0
    assert len(cap_evaluation_rows(cfg, held_out)) == 900
    cfg.eval_batch_size = 3
    assert eval_batch_size(cfg) == 3


def test_evaluations_left_counts_periodic_and_final_ones():
    # eval every 3 of 5 steps: at 3, and a final one at 5
    assert [evaluations_left(s, 5, 3, True) for s in (1, 2, 3, 4, 5)] == [2, 2, 2, 1, 1]
    # eval every 2 of 4 steps: at 2 and 4, no extra final one
    assert [evaluations_left(s, 4, 2, True) for s in (1, 2, 3, 4)] == [2, 2, 1, 1]
    assert evaluations_left(3, 5, 0, True) == 1 and evaluations_left(3, 5, 3, False) == 0


def test_run_duration_reads_the_clock_of_the_newest_reading():
    start = 1000.0
    events = [PhaseChanged(phase="loading_model", elapsed_seconds=0.5, time=start + 0.5),
              TrainLog(step=1, epoch=0.1, metrics={"loss": 1.0}, elapsed_seconds=17.0, time=start + 17.0),
              RunFinished(adapter_path="a", stopped=False, step=3, total_steps=3, elapsed_seconds=325.0,
                          summary={}, time=start + 325.0)]
    assert run_duration(events) == 325.0
    # A resumed attempt carries the earlier attempts' time in its readings; the pause between is not counted.
    resumed = events + [TrainLog(step=4, epoch=0.2, metrics={}, elapsed_seconds=330.0, time=start + 9000.0)]
    assert run_duration(resumed) == 330.0
    assert format_duration(325.0) == "5:25" and format_duration(None) == "–" and format_duration(math.nan) == "–"
