"""Faults against the real worker process: crashes, out-of-memory, NaN losses, stops
in every phase, torn files. Faults a CPU cannot produce on demand are injected
inside the worker (``backend.testing.fault_injection``); everything after the fault is
the production path."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import psutil
import pytest

from backend.core.events import (
    CheckpointSaved,
    EvalLog,
    PhaseChanged,
    RunFailed,
    RunFinished,
    RunStarted,
    TrainLog,
    WorkerWarning,
)
from backend.testing.fault_injection import ENV_VAR, parse_faults
from backend.runs.config import load_yaml, replace_values
from backend.runs.folder import (
    append_event,
    current_attempt_events,
    latest_checkpoint,
    read_events,
    summarize_run,
)
from backend.training.client import TrainingRun, run_to_completion
from tests.conftest import tiny_run_config

pytestmark = pytest.mark.slow


def _steps(events, cls=TrainLog) -> list[int]:
    return [e.step for e in events if isinstance(e, cls)]


def _assert_no_leftover(run: TrainingRun) -> None:
    assert run.process.poll() is not None, "the worker is still running"
    assert not [p for p in psutil.Process().children(recursive=True) if p.pid == run.process.pid]


def _assert_folder_opens(run_dir: Path) -> None:
    load_yaml(run_dir / "config.yaml")
    summary = summarize_run(run_dir)
    assert summary.status not in ("damaged", "running"), summary
    for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        json.loads(line)  # no torn or glued lines


def test_sigkill_keeps_metrics_and_checkpoint_and_resume_continues_without_gap(
        tiny_model_dir, easy_preferences, monkeypatch):
    monkeypatch.setenv(ENV_VAR, "slow_step=0.2")  # time to kill it between two checkpoints
    cfg = tiny_run_config("dpo", tiny_model_dir, easy_preferences, max_steps=10, save_steps=3)
    run = TrainingRun.start(cfg)
    seen = []
    for event in run.events():
        seen.append(event)
        if isinstance(event, TrainLog) and event.step == 5:
            os.kill(run.process.pid, signal.SIGKILL)
    run.close()
    failed = seen[-1]
    assert isinstance(failed, RunFailed) and failed.kind == "killed", failed
    assert "SIGKILL" in failed.message and "checkpoint-3" in failed.hint
    # The end of the worker log travels with the failure (step 5 was killed as it was being logged).
    assert "step 4/10" in failed.traceback

    on_disk = read_events(run.run_dir)
    assert _steps(on_disk)[:5] == [1, 2, 3, 4, 5]  # every metric up to the crash
    assert latest_checkpoint(run.run_dir).name == "checkpoint-3"
    summary = summarize_run(run.run_dir)
    assert summary.status == "failed" and summary.resumable and summary.checkpoint_step == 3

    monkeypatch.delenv(ENV_VAR)
    resumed = TrainingRun.resume(run.run_dir)
    more = list(resumed.events())
    resumed.close()
    assert next(e for e in more if isinstance(e, RunStarted)).resumed_from_step == 3
    assert isinstance(more[-1], RunFinished) and more[-1].step == 10

    history = current_attempt_events(read_events(run.run_dir))
    assert _steps(history) == list(range(1, 11))  # no gap, no step twice
    assert summarize_run(run.run_dir).status == "completed"
    _assert_folder_opens(run.run_dir)


def test_segfault_is_reported_as_a_crash_with_the_log(tiny_model_dir, easy_preferences, monkeypatch):
    monkeypatch.setenv(ENV_VAR, "segv@3")
    cfg = tiny_run_config("dpo", tiny_model_dir, easy_preferences, max_steps=10, save_steps=2)
    run, events = run_to_completion(cfg, timeout=120)
    failed = events[-1]
    assert isinstance(failed, RunFailed) and failed.kind == "crash", failed
    assert "SIGSEGV" in failed.message and "segmentation fault" in failed.message
    assert "checkpoint-2" in failed.hint
    assert _steps(read_events(run.run_dir)) == [1, 2]
    _assert_no_leftover(run)
    _assert_folder_opens(run.run_dir)


def test_nan_loss_stops_at_that_step_and_keeps_the_last_good_adapter(tiny_model_dir, easy_preferences,
                                                                     monkeypatch):
    # The weights turn NaN at the end of step 6, which saves checkpoint 6 with them;
    # step 7 reports the NaN loss. Checkpoint 4 is the last good one.
    monkeypatch.setenv(ENV_VAR, "nan@6")
    cfg = tiny_run_config("dpo", tiny_model_dir, easy_preferences, max_steps=20, save_steps=2,
                          save_total_limit=5)
    run, events = run_to_completion(cfg, timeout=120)
    failed = events[-1]
    assert isinstance(failed, RunFailed) and failed.kind == "nan_loss", failed
    assert "step 7" in failed.message and "step 4" in failed.message
    for cause in ("learning rate", "fp16", "empty"):
        assert cause in failed.hint
    assert any(isinstance(e, WorkerWarning) and e.kind == "nan_loss" for e in events)
    assert max(_steps(events)) == 7  # stopped at the NaN step

    checkpoints = sorted(p.name for p in (run.run_dir / "checkpoints").iterdir() if p.is_dir())
    assert checkpoints == ["checkpoint-2", "checkpoint-4", "diverged-checkpoint-6"]
    assert latest_checkpoint(run.run_dir).name == "checkpoint-4"  # Resume starts from good weights
    import torch
    from safetensors.torch import load_file

    kept = load_file(str(run.run_dir / "adapter" / "adapter_model.safetensors"))
    good = load_file(str(run.run_dir / "checkpoints" / "checkpoint-4" / "adapter_model.safetensors"))
    assert all(torch.isfinite(t).all() for t in kept.values())
    assert all(torch.equal(kept[k], good[k]) for k in good)
    _assert_folder_opens(run.run_dir)


@pytest.mark.parametrize("fault", ["oom@3", "host_oom@3"])
def test_out_of_memory_is_classified_with_suggestions_and_the_memory_is_freed(
        tiny_model_dir, easy_preferences, monkeypatch, fault):
    monkeypatch.setenv(ENV_VAR, fault)
    cfg = tiny_run_config("dpo", tiny_model_dir, easy_preferences, max_steps=10)
    run, events = run_to_completion(cfg, timeout=120)
    failed = events[-1]
    assert isinstance(failed, RunFailed) and failed.kind == "out_of_memory", failed
    assert failed.message.startswith("Out of memory")
    for suggestion in ("max length", "batch size", "gradient accumulation", "4-bit", "gradient checkpointing",
                       "reference log-probs"):
        assert suggestion in failed.hint
    # The memory went with the process: nothing of the worker is left.
    _assert_no_leftover(run)
    assert not psutil.pid_exists(run.process.pid) or psutil.Process(run.process.pid).status() == "zombie"
    _assert_folder_opens(run.run_dir)


# Each case: the fault that holds the phase open, the phase to stop in, and whether
# training had begun (then the adapter and a checkpoint at the stop step exist).
STOP_CASES = {
    "loading_model": ("slow_phase=loading_model:60", False),
    "preparing_data": ("slow_phase=preparing_data:60", False),
    "training": ("slow_step=1", True),
    "evaluating": ("slow_eval=1", True),
    "saving": ("slow_phase=saving:2", True),
}


@pytest.mark.parametrize("phase", list(STOP_CASES))
def test_stop_in_every_phase_ends_in_bounded_time_with_a_consistent_folder(
        tiny_model_dir, easy_preferences, monkeypatch, phase):
    fault, trained = STOP_CASES[phase]
    monkeypatch.setenv(ENV_VAR, fault)
    overrides = dict(max_steps=6 if phase == "saving" else 1000, save_steps=0)
    if phase == "evaluating":
        overrides.update(eval_fraction=0.5, eval_steps=2)
    cfg = tiny_run_config("dpo", tiny_model_dir, easy_preferences, **overrides)
    run = TrainingRun.start(cfg)
    events, asked = [], None
    for event in run.events():
        events.append(event)
        if asked is None and isinstance(event, PhaseChanged) and event.phase == phase:
            asked = time.monotonic()
            run.request_stop()
    took = time.monotonic() - asked
    assert run.wait(timeout=30) == 0
    run.close()
    finished = events[-1]
    assert isinstance(finished, RunFinished) and finished.stopped == (phase != "saving"), finished
    # Bounded: the injected delays are 60 s per phase and 1 s per step or eval batch.
    assert took < 20, f"stop in {phase} took {took:.1f} s"
    _assert_folder_opens(run.run_dir)
    assert summarize_run(run.run_dir).status == ("completed" if phase == "saving" else "stopped")
    adapter = run.run_dir / "adapter" / "adapter_config.json"
    assert adapter.exists() == trained
    if trained and phase != "saving":
        # A checkpoint at the stop step: Resume continues exactly where the user stopped.
        assert latest_checkpoint(run.run_dir).name == f"checkpoint-{finished.step}"


def test_a_hung_worker_is_ended_by_the_stop_deadline(tiny_model_dir, easy_preferences, monkeypatch):
    monkeypatch.setenv(ENV_VAR, "hang@3")
    cfg = tiny_run_config("dpo", tiny_model_dir, easy_preferences, max_steps=10, save_steps=1)
    run = TrainingRun.start(cfg)
    events = []
    stopper = threading.Thread(target=run.stop, kwargs={"grace_seconds": 3})
    for event in run.events():
        events.append(event)
        if isinstance(event, CheckpointSaved) and event.step == 2:
            t0 = time.monotonic()
            stopper.start()  # run.stop waits; the events must go on being read meanwhile
    stopper.join()
    assert time.monotonic() - t0 < 15
    run.close()
    assert isinstance(events[-1], (RunFailed, RunFinished))
    _assert_no_leftover(run)
    _assert_folder_opens(run.run_dir)
    assert summarize_run(run.run_dir).resumable


def test_eval_during_training_is_announced_as_a_phase(tiny_model_dir, easy_preferences):
    cfg = tiny_run_config("dpo", tiny_model_dir, easy_preferences, max_steps=4, eval_fraction=0.25, eval_steps=2)
    _run, events = run_to_completion(cfg, timeout=120)
    phases = [e.phase for e in events if isinstance(e, PhaseChanged)]
    assert phases.count("evaluating") >= 2 and "training" in phases[phases.index("evaluating"):]
    assert _steps(events, EvalLog) == [2, 4]


# ---------------------------------------------------------------- no worker


def test_a_torn_metrics_line_is_skipped_and_the_next_event_starts_a_new_line(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    good = TrainLog(step=1, epoch=0.1, metrics={"loss": 0.5}, total_steps=4)
    (run_dir / "metrics.jsonl").write_text(good.to_json() + "\n" + '{"type":"log","step":2,"met')
    append_event(run_dir, RunFailed(kind="killed", message="gone"))
    events = read_events(run_dir)
    assert [type(e) for e in events] == [TrainLog, RunFailed]


def test_a_checkpoint_cut_off_while_saving_is_not_resumed_from(tmp_path):
    for step, state in ((2, '{"global_step": 2}'), (4, '{"global_st')):
        folder = tmp_path / "checkpoints" / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        (folder / "trainer_state.json").write_text(state)
    (tmp_path / "checkpoints" / "checkpoint-6").mkdir()  # died before writing anything
    assert latest_checkpoint(tmp_path).name == "checkpoint-2"


def test_resumed_history_replaces_the_steps_after_the_checkpoint():
    def log(step, loss):
        return TrainLog(step=step, epoch=0.0, metrics={"loss": loss}, total_steps=6)

    started = dict(run_dir="r", method="dpo", config={}, device={}, total_params=1, trainable_params=1,
                   total_steps=6, train_rows=1, eval_rows=0)
    events = [RunStarted(**started), log(1, 1.0), log(2, 0.9), log(3, 0.8), RunFailed(kind="killed", message=""),
              RunStarted(**started, resumed_from_step=2), log(3, 0.7), log(4, 0.6)]
    history = current_attempt_events(events)
    assert [(e.step, e.metrics["loss"]) for e in history if isinstance(e, TrainLog)] == [
        (1, 1.0), (2, 0.9), (3, 0.7), (4, 0.6)]


def test_fault_plans_are_parsed_strictly():
    plan = parse_faults("nan@5, slow_phase=saving:2,slow_step=0.5")
    assert plan.at_step == {"nan": 5} and plan.slow_phase == {"saving": 2.0} and plan.slow_step == 0.5
    assert not parse_faults("")
    with pytest.raises(ValueError, match="unknown fault"):
        parse_faults("explode@3")


def test_scratch_folders_of_a_killed_conversion_are_cleaned_up_later(tmp_path):
    from backend.export.gguf_conversion import STALE_WORK_SECONDS, make_work_dir

    stale = tmp_path / ".convert-killed"
    (stale / "model").mkdir(parents=True)
    old = time.time() - STALE_WORK_SECONDS - 60
    os.utime(stale, (old, old))
    running = tmp_path / ".convert-running"  # another studio converting right now
    running.mkdir()
    work = make_work_dir(tmp_path, ".convert-")
    assert work.is_dir() and not stale.exists() and running.exists()


@pytest.mark.skipif(not hasattr(__import__("resource"), "RLIMIT_AS"), reason="needs RLIMIT_AS")
def test_a_real_host_out_of_memory_is_classified(tiny_model_dir, tmp_path, studio_home):
    """No injection: the worker's address space is capped at 3 GB (inherited from a
    small supervisor process) and the batch needs more, so torch's allocator fails."""
    import subprocess
    import sys

    from backend.runs.config import save_yaml

    data = tmp_path / "long.jsonl"
    with data.open("w") as fh:
        for i in range(64):
            fh.write(json.dumps({"prompt": f"q{i} " * 1000, "chosen": " yes" * 2000, "rejected": " no" * 2000}) + "\n")
    cfg = tiny_run_config("dpo", tiny_model_dir, data, quantization="none", max_steps=2,
                          per_device_train_batch_size=64, max_length=8192)
    cfg_path = save_yaml(cfg, tmp_path / "cfg.yaml")
    supervisor = (
        "import resource\n"
        "resource.setrlimit(resource.RLIMIT_AS, (3 * 2**30, 3 * 2**30))\n"
        "from backend.runs.config import load_yaml\n"
        "from backend.training.client import run_to_completion\n"
        f"run, events = run_to_completion(load_yaml({str(cfg_path)!r}), timeout=240)\n"
        "print(run.run_dir)\n"
    )
    out = subprocess.run([sys.executable, "-c", supervisor], capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, ALIGNSTUDIO_HOME=str(studio_home)))
    run_dir = Path(out.stdout.strip().splitlines()[-1])
    failed = read_events(run_dir)[-1]
    assert isinstance(failed, RunFailed) and failed.kind == "out_of_memory", failed
    assert "batch size" in failed.hint
    _assert_folder_opens(run_dir)


def test_max_length_below_every_prompt_is_refused_with_the_field_named(tiny_model_dir, tmp_path):
    # TRL drops (DPO) or empties (ORPO, SFT) such examples; the Long prompts setting decides
    # first: truncate_left (the default) trains on them with their prompts cut, drop refuses
    # to leave out most of the data.
    data = tmp_path / "long_prompts.jsonl"
    with data.open("w") as fh:
        for i in range(16):
            fh.write(json.dumps({"prompt": f"Question {i}: " + "please explain " * 40, "chosen": " Sure.",
                                 "rejected": " No."}) + "\n")
        fh.write(json.dumps({"prompt": "Short?", "chosen": " Yes.", "rejected": " No."}) + "\n")
    cfg = tiny_run_config("dpo", tiny_model_dir, data, max_length=32, max_steps=2)
    _run, events = run_to_completion(cfg, timeout=120)
    assert isinstance(events[-1], RunFinished), events[-1]
    warning = next(e for e in events if isinstance(e, WorkerWarning) and e.kind == "long_prompts")
    assert "16 of 17" in warning.message and "Max length 32" in warning.message
    assert not any(isinstance(e, WorkerWarning) and e.kind == "rows_dropped" for e in events)

    run, events = run_to_completion(replace_values(cfg, {"long_prompts": "drop"}), timeout=120)
    failed = events[-1]
    assert isinstance(failed, RunFailed) and failed.kind == "bad_config", failed
    assert failed.message.startswith("max_length:") and "most of the data" in failed.message
    assert not any(isinstance(e, TrainLog) for e in events)


def test_a_stale_pid_file_naming_an_unrelated_process_is_not_a_running_worker(tmp_path):
    from backend.runs.folder import worker_alive

    (tmp_path / "worker.pid").write_text(str(os.getpid()))  # alive, but this is pytest, not a worker
    assert not worker_alive(tmp_path)
    (tmp_path / "worker.pid").write_text("999999999")
    assert not worker_alive(tmp_path)
