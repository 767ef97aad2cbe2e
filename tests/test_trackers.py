"""Trackers beside metrics.jsonl: TensorBoard event files from a real run; a chosen
tracker that is not installed is refused before the run, naming the package."""

from __future__ import annotations

import importlib.util

import pytest

from backend.core.events import RunFinished
from backend.runs.config import ConfigError, check
from backend.training.tracking import resolved_trackers, tensorboard_dir, tracker_problems
from backend.training.client import run_to_completion
from tests.conftest import tiny_run_config

HAS_TENSORBOARD = importlib.util.find_spec("tensorboard") is not None


@pytest.mark.slow
@pytest.mark.skipif(not HAS_TENSORBOARD, reason="the test extra installs tensorboard")
def test_tensorboard_event_files_hold_the_losses_of_metrics_jsonl(tiny_model_dir, easy_preferences):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = tiny_run_config("dpo", tiny_model_dir, easy_preferences, max_steps=3, report_to="tensorboard")
    run, events = run_to_completion(cfg)
    assert isinstance(events[-1], RunFinished), run.log_path.read_text()[-2000:]
    logs = tensorboard_dir(run.run_dir)
    assert list(logs.rglob("events.out.tfevents.*"))
    accumulator = EventAccumulator(str(next(logs.rglob("events.out.tfevents.*")).parent))
    accumulator.Reload()
    tags = accumulator.Tags()["scalars"]
    assert "train/loss" in tags and "train/rewards/margins" in tags
    steps = [e.step for e in accumulator.Scalars("train/loss")]
    assert steps == [1, 2, 3]
    logged = {e.step: e.metrics["loss"] for e in events if e.type == "log"}
    for scalar in accumulator.Scalars("train/loss"):
        assert scalar.value == pytest.approx(logged[scalar.step], rel=1e-5)


@pytest.mark.slow
def test_none_writes_no_tracker_files(tiny_model_dir, easy_preferences):
    cfg = tiny_run_config("sft", tiny_model_dir, easy_preferences, max_steps=1, quantization="none",
                          report_to="none")
    run, events = run_to_completion(cfg)
    assert isinstance(events[-1], RunFinished)
    assert not tensorboard_dir(run.run_dir).exists()


def test_a_chosen_tracker_that_is_not_installed_is_refused_naming_the_package(tiny_model_dir, easy_preferences,
                                                                              monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "wandb" else real_find_spec(name, *a))
    cfg = tiny_run_config("sft", tiny_model_dir, easy_preferences, report_to="tensorboard, wandb")
    with pytest.raises(ConfigError) as info:
        check(cfg)
    messages = " ".join(m for _, m in info.value.problems)
    assert "wandb was chosen but is not installed" in messages and "pip install wandb" in messages


def test_unknown_tracker_names_the_choices():
    problems = tracker_problems("tensorbored")
    assert problems and "'tensorbored'" in problems[0][1] and "tensorboard" in problems[0][1]
    assert tracker_problems("none") == [] and resolved_trackers("none") == []


@pytest.mark.skipif(not HAS_TENSORBOARD, reason="the test extra installs tensorboard")
def test_empty_setting_means_tensorboard_when_installed():
    assert resolved_trackers("") == ["tensorboard"]


@pytest.mark.slow
@pytest.mark.gui
@pytest.mark.skipif(not HAS_TENSORBOARD, reason="the test extra installs tensorboard")
def test_runs_tab_opens_tensorboard_on_the_run(qtbot, tiny_model_dir, easy_preferences, monkeypatch):
    import json
    import urllib.request

    from PySide6.QtGui import QDesktopServices

    from app.runs.tab import RunsTab

    with_tb, _ = run_to_completion(tiny_run_config("sft", tiny_model_dir, easy_preferences, max_steps=2,
                                                   quantization="none", run_name="with-tb"))
    run_to_completion(tiny_run_config("sft", tiny_model_dir, easy_preferences, max_steps=1, quantization="none",
                                      report_to="none", run_name="without-tb"))
    opened = []
    monkeypatch.setattr(QDesktopServices, "openUrl", lambda url: opened.append(url.toString()) or True)
    tab = RunsTab()
    qtbot.addWidget(tab)
    tab.refresh()
    qtbot.waitUntil(lambda: tab.table.rowCount() == 2, timeout=30_000)
    rows = {tab.table.item(r, 0).text(): r for r in range(2)}
    tab.table.selectRow(rows["without-tb"])
    assert not tab.tensorboard_button.isEnabled()
    assert "wrote no TensorBoard files" in tab.tensorboard_button.toolTip()
    tab.table.selectRow(rows["with-tb"])
    assert tab.tensorboard_button.isEnabled()
    try:
        tab.tensorboard_button.click()
        qtbot.waitUntil(lambda: bool(opened), timeout=90_000)
        assert opened == [tab.tensorboard.url]
        # TensorBoard itself serves the run's scalars.
        with urllib.request.urlopen(tab.tensorboard.url + "data/plugin/scalars/tags", timeout=10) as reply:
            tags = json.loads(reply.read())
        assert any("train/loss" in run_tags for run_tags in tags.values()), tags
    finally:
        tab.tensorboard.stop()
