"""The guided RLHF pipeline: each stage lists the finished runs its methods made, the later
stages start from the supervised run's merged model, and RL is scored by the picked reward model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app.train.rlhf_pipeline import STAGES, RLHFPipelineDialog, finished_runs, merged_model_of, stage_methods

SHOTS = Path(os.environ.get("ALIGNSTUDIO_SHOTS", "/work/notes/shots/ppo"))


def fake_finished_run(root: Path, name: str, method: str, data: Path) -> Path:
    """A run folder as the worker leaves it: config, events ending in RunFinished, an adapter."""
    from backend.core.events import RunFinished, RunStarted
    from backend.runs.config import default_config, save_yaml

    run = root / name
    (run / "adapter").mkdir(parents=True)
    (run / "adapter" / "adapter_config.json").write_text("{}")
    save_yaml(default_config(method, data_path=str(data)), run / "config.yaml")
    events = [RunStarted(run_dir=str(run), method=method, config={}, device={}, total_params=1, trainable_params=1,
                         total_steps=4, train_rows=8, eval_rows=0, resumed_from_step=0),
              RunFinished(adapter_path=str(run / "adapter"), stopped=False, step=4, total_steps=4,
                          elapsed_seconds=1.0, summary={})]
    (run / "metrics.jsonl").write_text("".join(e.to_json() + "\n" for e in events))
    return run


@pytest.fixture
def runs(tmp_path, easy_preferences):
    root = tmp_path / "runs"
    sft = fake_finished_run(root, "a-supervised", stage_methods(STAGES[0])[0].key, easy_preferences)
    reward = fake_finished_run(root, "b-reward", stage_methods(STAGES[1])[0].key, easy_preferences)
    fake_finished_run(root, "c-preference", "dpo", easy_preferences)  # belongs to no stage
    return root, sft, reward


def test_stages_take_their_methods_from_the_specs():
    assert all(spec.group == "Supervised" for spec in stage_methods(STAGES[0]))
    assert stage_methods(STAGES[1]) and all(spec.model_head == "score" for spec in stage_methods(STAGES[1]))
    rl = stage_methods(STAGES[2])
    assert rl and all(spec.group == "RL" and hasattr(spec.config(), "reward_model") for spec in rl)
    assert any("reward_model" in spec.requires for spec in rl)


def test_each_stage_starts_from_the_one_before(qtbot, runs, easy_preferences):
    from backend.runs.folder import list_runs

    root, sft, reward = runs
    dialog = RLHFPipelineDialog(lambda: list_runs(root), lambda: ("base-model", str(easy_preferences)))
    qtbot.addWidget(dialog)
    assert [len(finished_runs(stage, list_runs(root))) for stage in STAGES] == [1, 1, 0]
    assert dialog.picked_run(0) == str(sft) and dialog.picked_run(1) == str(reward)
    # The supervised run has no merged model yet: a later stage's Train merges it first, then starts.
    assert dialog.train_buttons[1].isEnabled() and dialog.train_buttons[2].isEnabled()
    assert "merges it first" in dialog.notes[2].text()
    assert dialog.export_button.isEnabled()
    with qtbot.waitSignal(dialog.sig_export) as exported:
        dialog.export_button.click()
    assert exported.args == [str(sft), False]  # the button only opens Export
    trained = []
    dialog.sig_train.connect(trained.append)
    with qtbot.waitSignal(dialog.sig_export) as merging:
        dialog.train_buttons[1].click()
    assert merging.args == [str(sft), True] and dialog.pending_stage == 1 and not trained
    assert not any(b.isEnabled() for b in dialog.train_buttons)  # one merge at a time
    assert not dialog.export_button.isEnabled()
    assert "Merging the supervised run" in dialog.notes[1].text()
    dialog.merge_finished(False)  # stopped or failed: nothing starts, the stage waits for another press
    assert not trained and dialog.pending_stage is None and dialog.train_buttons[1].isEnabled()
    dialog.train_buttons[1].click()

    merged = sft / "exports" / "a-supervised-merged-float32"
    merged.mkdir(parents=True)
    (merged / "config.json").write_text("{}")
    assert merged_model_of(sft) == str(merged)
    dialog.merge_finished(True)  # the stage that waited starts from the merged model
    assert len(trained) == 1 and trained[0].model == str(merged)
    assert trained[0].method == dialog.method_boxes[1].currentData()
    assert dialog.train_buttons[1].isEnabled() and dialog.train_buttons[2].isEnabled()
    assert "b-reward" in dialog.notes[2].text() and "a-supervised-merged-float32" in dialog.notes[2].text()

    with qtbot.waitSignal(dialog.sig_train) as third:
        dialog.train_buttons[2].click()
    cfg = third.args[0]
    assert cfg.method == dialog.method_boxes[2].currentData()
    assert (cfg.model, cfg.reward_model, cfg.data_path) == (str(merged), str(reward), str(easy_preferences))
    with qtbot.waitSignal(dialog.sig_train) as second:
        dialog.train_buttons[1].click()
    assert second.args[0].model == str(merged) and second.args[0].method == dialog.method_boxes[1].currentData()
    with qtbot.waitSignal(dialog.sig_train) as first:
        dialog.train_buttons[0].click()
    assert first.args[0].model == "base-model"

    # Without a supervised run the later stages start from the Train tab's model.
    dialog.run_boxes[0].setCurrentIndex(0)
    assert dialog.stage_config(2).model == "base-model"
    # Without a reward model the RL stage cannot train.
    dialog.run_boxes[1].setCurrentIndex(0)
    assert not dialog.train_buttons[2].isEnabled()
    assert "reward model in stage 2 first" in dialog.notes[2].text()

    dialog.run_boxes[0].setCurrentIndex(1)
    dialog.run_boxes[1].setCurrentIndex(1)
    dialog.resize(780, dialog.sizeHint().height())
    SHOTS.mkdir(parents=True, exist_ok=True)
    dialog.grab().save(str(SHOTS / "rlhf_pipeline.png"))


def test_the_window_opens_the_pipeline_and_a_stage_fills_the_train_tab(qtbot, studio_home, easy_preferences):
    from backend.core.paths import runs_dir
    from tests.gui_helpers import drop_paths, make_studio_window, wait_for_dataset

    window = make_studio_window(qtbot)
    assert drop_paths(window, [easy_preferences])
    wait_for_dataset(qtbot, window)
    root = runs_dir()
    sft = fake_finished_run(root, "a-supervised", stage_methods(STAGES[0])[0].key, easy_preferences)
    reward = fake_finished_run(root, "b-reward", stage_methods(STAGES[1])[0].key, easy_preferences)
    merged = sft / "exports" / "a-supervised-merged-float32"
    merged.mkdir(parents=True)
    (merged / "config.json").write_text("{}")
    started = []
    window.start_training = lambda: started.append(window.build_config()[0]) or True
    action = next(a for a in window.menuBar().actions() if a.text() == "&Run")
    next(a for a in action.menu().actions() if a.text() == "RLHF pipeline…").trigger()
    dialog = window.rlhf_pipeline
    assert dialog.isVisible() and dialog.picked_run(1) == str(reward)
    dialog.train_buttons[2].click()
    assert len(started) == 1
    cfg = started[0]
    assert cfg.method == dialog.method_boxes[2].currentData() and cfg.reward_model == str(reward)
    assert cfg.model == str(merged) and Path(cfg.data_path) == easy_preferences
    window.grab().save(str(SHOTS / "window_after_stage3.png"))


@pytest.mark.slow
def test_a_stage_whose_merge_fails_in_the_export_worker_waits_with_the_reason(qtbot, studio_home, easy_preferences):
    """The real wiring: Train on stage 2 opens Export and starts the merge; this supervised
    run's adapter is not a real one, so the merge is refused, Export says why, and the
    stage does not start but can be pressed again."""
    from backend.core.paths import runs_dir
    from tests.gui_helpers import drop_paths, make_studio_window, wait_for_dataset

    window = make_studio_window(qtbot)
    assert drop_paths(window, [easy_preferences])
    wait_for_dataset(qtbot, window)
    fake_finished_run(runs_dir(), "a-supervised", stage_methods(STAGES[0])[0].key, easy_preferences)
    started = []
    window.start_training = lambda: started.append(window.build_config()[0]) or True
    window.open_rlhf_pipeline()
    dialog = window.rlhf_pipeline
    dialog.train_buttons[1].click()
    export = dialog.export_dialog
    assert export.isVisible() and export.format_box.currentData() == "merged"
    qtbot.waitUntil(lambda: dialog.pending_stage is None, timeout=120_000)
    assert not started and dialog.train_buttons[1].isEnabled()
    assert export.banner.isVisible() and not export.is_running()
    # The reason names the file and reads as written: the banner escapes it once, not twice.
    assert "adapter_config.json names no peft_type" in export.banner._text.text()
    assert "&amp;" not in export.banner._text.text()
    SHOTS.mkdir(parents=True, exist_ok=True)
    export.grab().save(str(SHOTS / "pipeline_merge_failed.png"))
