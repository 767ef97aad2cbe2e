"""A training worker that is running is seen as running: the Runs tab's status, the refusal
to resume a run twice and the refusal to delete a run mid-training all rest on it. The check
read the worker's old module name after the engine moved into packages, so every live run
looked interrupted."""

from __future__ import annotations

import pytest

from tests.conftest import tiny_run_config


@pytest.mark.slow
def test_a_live_training_worker_is_running_until_it_ends(tiny_model_dir, easy_preferences, studio_home, tmp_path):
    from backend.core.events import RunFinished, TrainLog
    from backend.runs.folder import delete_run, summarize_run, worker_alive
    from backend.runs.preflight import resume_problems
    from backend.training.client import TrainingRun

    cfg = tiny_run_config("sft", tiny_model_dir, easy_preferences, max_steps=40, logging_steps=1)
    run = TrainingRun.start(cfg, tmp_path / "runs")
    try:
        seen = False
        for event in run.events():
            if isinstance(event, TrainLog) and not seen:
                seen = True
                assert worker_alive(run.run_dir)
                assert summarize_run(run.run_dir).status == "running"
                assert "still training" in dict(resume_problems(run.run_dir))["run"]
                with pytest.raises(RuntimeError, match="still training"):
                    delete_run(run.run_dir)
                run.stop()
            if isinstance(event, RunFinished):
                break
        assert seen
        run.wait(60)
    finally:
        run.close()
    assert not worker_alive(run.run_dir)
    assert summarize_run(run.run_dir).status != "running"
