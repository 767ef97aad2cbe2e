"""SFT, DPO and ORPO end to end through the real worker process on a tiny 4-bit model."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest

from backend.core.events import CheckpointSaved, EvalLog, PhaseChanged, RunFailed, RunFinished, RunStarted, TrainLog
from backend.runs.folder import latest_checkpoint, list_runs, read_events, summarize_run
from backend.training.client import TrainingRun, run_to_completion
from tests.conftest import tiny_run_config

pytestmark = pytest.mark.slow

DPO_KEYS = {"loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
            "logps/chosen", "logps/rejected", "logits/chosen", "logits/rejected", "learning_rate", "grad_norm"}
ORPO_KEYS = {"loss", "nll_loss", "log_odds_ratio", "rewards/margins", "rewards/accuracies",
             "logps/chosen", "logps/rejected"}
SFT_KEYS = {"loss", "mean_token_accuracy", "learning_rate", "grad_norm"}


def _logs(events):
    return [e for e in events if isinstance(e, TrainLog)]


def _assert_adapter_reloads_and_changed(adapter_dir, model_dir):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    assert (adapter_dir / "adapter_config.json").exists()
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, adapter_dir)
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b, "no LoRA weights in the adapter"
    # LoRA B starts at zero: anything else means training really changed the adapter.
    assert any(p.abs().sum().item() > 0 for p in lora_b)


def test_dpo_end_to_end_margin_and_accuracy_rise(tiny_model_dir, easy_preferences, studio_home):
    cfg = tiny_run_config("dpo", tiny_model_dir, easy_preferences, max_steps=24, eval_fraction=0.125,
                          eval_steps=12, save_steps=12)
    run, events = run_to_completion(cfg, timeout=300)

    kinds = [type(e) for e in events]
    assert kinds.count(RunStarted) == 1 and isinstance(events[-1], RunFinished), events[-1]
    started = next(e for e in events if isinstance(e, RunStarted))
    assert started.total_steps == 24 and started.trainable_params < started.total_params
    assert started.train_rows == 56 and started.eval_rows == 8
    assert started.memory_estimate_mb and started.memory_estimate_mb > 0
    assert any(isinstance(e, PhaseChanged) and e.phase == "loading_model" for e in events)

    logs = _logs(events)
    assert DPO_KEYS <= set(logs[-1].metrics), set(logs[-1].metrics)
    assert all(math.isfinite(e.metrics["loss"]) for e in logs)
    assert logs[-1].tokens_per_second and logs[-1].tokens_per_second > 0
    assert logs[-1].peak_memory_mb and logs[-1].peak_memory_mb > 0
    assert logs[-1].eta_seconds is not None and logs[-1].seconds_per_step > 0
    first, last = logs[0].metrics, logs[-1].metrics
    assert last["rewards/margins"] > first["rewards/margins"] + 0.1
    assert last["rewards/accuracies"] >= max(first["rewards/accuracies"], 0.75)

    evals = [e for e in events if isinstance(e, EvalLog)]
    assert evals and "rewards/margins" in evals[-1].metrics
    assert any(isinstance(e, CheckpointSaved) for e in events)

    finished = events[-1]
    assert finished.stopped is False and finished.step == 24
    _assert_adapter_reloads_and_changed(run.run_dir / "adapter", tiny_model_dir)

    # The run folder alone tells the same story.
    on_disk = read_events(run.run_dir)
    assert [type(e) for e in on_disk] == kinds
    summary = summarize_run(run.run_dir)
    assert summary.status == "completed" and summary.step == 24
    assert (run.run_dir / "eval_split.jsonl").read_text().count("\n") == 8
    import json

    memory = json.loads((run.run_dir / "memory.json").read_text())
    assert memory["measured_peak_mb"] > 0 and memory["ratio_measured_to_estimated"] > 0
    assert [r.run_dir for r in list_runs()] == [run.run_dir]
    assert run.process.returncode == 0


def test_orpo_logs_its_own_metrics(tiny_model_dir, easy_preferences):
    cfg = tiny_run_config("orpo", tiny_model_dir, easy_preferences, max_steps=4)
    run, events = run_to_completion(cfg, timeout=300)
    assert isinstance(events[-1], RunFinished), events[-1]
    logs = _logs(events)
    assert ORPO_KEYS <= set(logs[-1].metrics), set(logs[-1].metrics)
    assert all(math.isfinite(e.metrics["loss"]) for e in logs)
    assert logs[-1].tokens_per_second and logs[-1].tokens_per_second > 0
    _assert_adapter_reloads_and_changed(run.run_dir / "adapter", tiny_model_dir)


def test_sft_on_chosen_side_of_preferences_learns(tiny_model_dir, easy_preferences):
    cfg = tiny_run_config("sft", tiny_model_dir, easy_preferences, max_steps=12, quantization="none")
    run, events = run_to_completion(cfg, timeout=300)
    assert isinstance(events[-1], RunFinished), events[-1]
    logs = _logs(events)
    assert SFT_KEYS <= set(logs[-1].metrics)
    assert logs[-1].metrics["loss"] < logs[0].metrics["loss"]
    _assert_adapter_reloads_and_changed(run.run_dir / "adapter", tiny_model_dir)


def test_stop_is_cooperative_saves_adapter_and_can_resume(tiny_model_dir, easy_preferences):
    cfg = tiny_run_config("dpo", tiny_model_dir, easy_preferences, max_steps=100000, save_steps=2)
    run = TrainingRun.start(cfg)
    events = []
    for event in run.events():
        events.append(event)
        if isinstance(event, TrainLog) and event.step >= 3:
            run.request_stop()
    assert run.wait(timeout=60) == 0
    run.close()
    finished = events[-1]
    assert isinstance(finished, RunFinished) and finished.stopped, finished
    assert (run.run_dir / "adapter" / "adapter_config.json").exists()
    assert summarize_run(run.run_dir).status == "stopped"
    checkpoint = latest_checkpoint(run.run_dir)
    assert checkpoint is not None

    # Resume continues from the checkpoint in the same folder, towards a new target.
    from backend.runs.config import load_yaml, save_yaml, replace_values

    cfg_path = run.run_dir / "config.yaml"
    save_yaml(replace_values(load_yaml(cfg_path), {"max_steps": finished.step + 2}), cfg_path)
    resumed = TrainingRun.resume(run.run_dir)
    more = list(resumed.events())
    resumed.close()
    start = next(e for e in more if isinstance(e, RunStarted))
    assert start.resumed_from_step == int(checkpoint.name.split("-")[1])
    assert isinstance(more[-1], RunFinished) and more[-1].step == finished.step + 2
    assert min(e.step for e in _logs(more)) > start.resumed_from_step


def test_stop_during_model_loading_ends_cleanly(tiny_model_dir, easy_preferences):
    cfg = tiny_run_config("dpo", tiny_model_dir, easy_preferences)
    run = TrainingRun.start(cfg)
    run.request_stop()  # arrives while the worker is still importing torch
    events = list(run.events())
    assert run.wait(timeout=60) == 0
    assert isinstance(events[-1], RunFinished) and events[-1].stopped


def test_bad_data_fails_with_clear_event(tiny_model_dir, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "hi", "output": "there"}\n')
    cfg = tiny_run_config("dpo", tiny_model_dir, bad)
    run, events = run_to_completion(cfg, timeout=120)
    failed = events[-1]
    assert isinstance(failed, RunFailed) and failed.kind == "bad_data", failed
    assert "DPO" in failed.message and failed.hint
    assert summarize_run(run.run_dir).status == "failed"


def test_missing_model_fails_before_loading_anything(easy_preferences, tmp_path):
    cfg = tiny_run_config("sft", tmp_path / "no-such-model", easy_preferences)
    t0 = time.time()
    run, events = run_to_completion(cfg, timeout=120)
    failed = events[-1]
    assert isinstance(failed, RunFailed) and failed.kind == "bad_model"
    assert time.time() - t0 < 30  # refused before torch is even imported
    assert "does not exist" in failed.message
    assert not any(isinstance(e, RunStarted) for e in events)


def test_killed_worker_is_reported_with_log_tail(tiny_model_dir, easy_preferences):
    cfg = tiny_run_config("dpo", tiny_model_dir, easy_preferences, max_steps=100000)
    run = TrainingRun.start(cfg)
    events = []
    for event in run.events():
        events.append(event)
        if isinstance(event, TrainLog):
            import os
            import signal

            os.kill(run.process.pid, signal.SIGKILL)
    failed = events[-1]
    assert isinstance(failed, RunFailed) and failed.kind == "killed"
    assert "SIGKILL" in failed.message and "checkpoint" in failed.hint
    assert summarize_run(run.run_dir).status == "failed"


def test_worker_stops_itself_when_its_supervisor_dies(tiny_model_dir, easy_preferences, tmp_path, studio_home):
    """A studio killed with SIGKILL must not leave a worker training in the background."""
    import os
    import signal
    import subprocess
    import sys

    import psutil

    from backend.runs.config import save_yaml

    cfg = tiny_run_config("dpo", tiny_model_dir, easy_preferences, max_steps=100000)
    cfg_path = save_yaml(cfg, tmp_path / "cfg.yaml")
    supervisor = (
        "import sys, time\n"
        "from backend.runs.config import load_yaml\n"
        "from backend.training.client import TrainingRun\n"
        "from backend.core.events import TrainLog\n"
        f"run = TrainingRun.start(load_yaml({str(cfg_path)!r}))\n"
        "for e in run.events():\n"
        "    if isinstance(e, TrainLog):\n"
        "        print(run.process.pid, run.run_dir, flush=True)\n"
        "        time.sleep(3600)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", supervisor], stdout=subprocess.PIPE, text=True,
                              env=dict(os.environ, ALIGNSTUDIO_HOME=str(studio_home)))
    pid_text, run_dir = parent.stdout.readline().split()
    worker = psutil.Process(int(pid_text))
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    worker.wait(timeout=60)  # raises TimeoutExpired if the worker keeps running
    events = read_events(run_dir)
    assert isinstance(events[-1], RunFinished) and events[-1].stopped
    assert (Path(run_dir) / "adapter" / "adapter_config.json").exists()
