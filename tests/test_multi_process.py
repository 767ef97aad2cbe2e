"""The worker in two processes under `accelerate launch` (gloo on this CPU machine).

A MULTI_GPU accelerate config starts two gloo processes even without a GPU
(FACTS.md: `--cpu`/MULTI_CPU start only one), so this is the same path a
two-GPU machine takes, minus NCCL.
"""

from __future__ import annotations

import json
import socket

import pytest

from backend.core.events import RunFinished, RunStarted, TrainLog
from backend.export.launch_layouts import write_accelerate_config
from backend.core.process_ranks import RANKS_FILE
from backend.runs.config import ConfigError
from backend.runs.folder import ACCELERATE_CONFIG_FILE, METRICS_FILE
from backend.training.client import TrainingRun
from tests.conftest import tiny_run_config


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_processes_train_4bit_lora_in_step_and_rank0_alone_writes_metrics(tiny_model_dir, easy_preferences,
                                                                              tmp_path):
    layout = write_accelerate_config(tmp_path / "ddp.yaml", "ddp", num_processes=2, port=_free_port())
    cfg = tiny_run_config("sft", tiny_model_dir, easy_preferences, max_steps=4, quantization="4bit",
                          per_device_train_batch_size=2)
    run = TrainingRun.start(cfg, accelerate_config=layout)
    events = list(run.events())
    run.wait(timeout=60)
    run.close()
    log = run.log_path.read_text(errors="replace")
    assert isinstance(events[-1], RunFinished), log[-3000:]
    assert (run.run_dir / ACCELERATE_CONFIG_FILE).exists()

    ranks = json.loads((run.run_dir / RANKS_FILE).read_text())
    assert ranks["world_size"] == 2
    assert sorted(r["rank"] for r in ranks["ranks"]) == [0, 1]
    assert ranks["identical"] and ranks["ranks"][0]["fingerprint"] == ranks["ranks"][1]["fingerprint"]

    # One process speaks for the run: one RunStarted, one log line per step, one end.
    lines = [json.loads(line) for line in (run.run_dir / METRICS_FILE).read_text().splitlines()]
    kinds = [line["type"] for line in lines]
    assert kinds.count(RunStarted.type) == 1 and kinds.count(RunFinished.type) == 1
    steps = [line["step"] for line in lines if line["type"] == TrainLog.type]
    assert steps == sorted(set(steps)) and steps[-1] == 4
    assert (run.run_dir / "adapter" / "adapter_model.safetensors").exists()
    assert "All 2 processes ended with identical adapters." in log


def test_a_file_that_is_not_an_accelerate_config_is_refused_by_name(tiny_model_dir, easy_preferences, tmp_path):
    bad = tmp_path / "layout.yaml"
    bad.write_text("num_processes: 2\n")
    cfg = tiny_run_config("sft", tiny_model_dir, easy_preferences)
    with pytest.raises(ConfigError) as info:
        TrainingRun.start(cfg, accelerate_config=bad)
    assert "layout.yaml" in str(info.value.problems) and "distributed_type" in str(info.value.problems)


@pytest.mark.slow
def test_stop_reaches_every_rank_at_the_same_step(tiny_model_dir, easy_preferences, tmp_path):
    layout = write_accelerate_config(tmp_path / "ddp.yaml", "ddp", num_processes=2, port=_free_port())
    cfg = tiny_run_config("sft", tiny_model_dir, easy_preferences, max_steps=100000, quantization="none",
                          per_device_train_batch_size=2, save_steps=0)
    run = TrainingRun.start(cfg, accelerate_config=layout)
    events = []
    for event in run.events():
        events.append(event)
        if isinstance(event, TrainLog) and event.step == 2:
            run.request_stop()  # reaches rank 0 only; rank 1 must stop at the same step or hang
    assert run.wait(timeout=120) == 0
    run.close()
    finished = events[-1]
    assert isinstance(finished, RunFinished) and finished.stopped, run.log_path.read_text()[-3000:]
    assert 2 <= finished.step < 100
    ranks = json.loads((run.run_dir / RANKS_FILE).read_text())
    assert ranks["world_size"] == 2 and ranks["identical"]
