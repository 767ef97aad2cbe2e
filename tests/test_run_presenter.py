"""The Train tab's decisions without Qt (issue 10): app.train.run_presenter builds and checks the
config from plain form values, says whether Train is on and why not, and starts and resumes
runs through the real worker. No QApplication, no widget: a PlainForm stands in for the panels."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from app.train.run_presenter import PlainForm, RunPresenter, WorkerLauncher, refusal_text
from backend.core.events import RunFinished, RunStarted, TrainLog
from backend.runs.code_permissions import GrantStore
from tests.conftest import write_easy_preferences

ROOT = Path(__file__).resolve().parent.parent

# Seconds-long settings for the tiny model (as tests/conftest.py's tiny_run_config).
TINY = dict(quantization="none", per_device_train_batch_size=4, gradient_accumulation_steps=1,
            gradient_checkpointing=False, learning_rate=5e-3, lora_r=8, lora_alpha=16, max_length=64,
            eval_fraction=0.0, save_steps=0, warmup_ratio=0.0, lr_scheduler_type="constant")


def presenter_for(tmp_path: Path, ask_permission=None) -> RunPresenter:
    return RunPresenter(WorkerLauncher(tmp_path / "runs"), GrantStore(tmp_path / "grants.json"), ask_permission)


def tiny_form(model_dir: Path, data: Path, method: str = "dpo", **values) -> PlainForm:
    form = PlainForm(method, {**TINY, "max_steps": 4, **values}, model=str(model_dir))
    form.load_data(data)
    return form


def test_the_presenter_runs_in_a_process_that_never_loads_qt(tmp_path, tiny_model_dir):
    """Validate a real form in a fresh interpreter; at the end, no Qt (nor torch) was ever imported."""
    data = write_easy_preferences(tmp_path / "prefs.jsonl")
    script = (
        "import sys\n"
        "from app.train.run_presenter import PlainForm, RunPresenter, WorkerLauncher\n"
        "from backend.runs.code_permissions import GrantStore\n"
        f"form = PlainForm('dpo', {{'max_steps': 4}}, model={str(tiny_model_dir)!r})\n"
        f"form.load_data({str(data)!r})\n"
        f"state = RunPresenter(WorkerLauncher(), GrantStore({str(tmp_path / 'g.json')!r})).state(form)\n"
        "loaded = sorted({m.split('.')[0] for m in sys.modules} & {'PySide6', 'pyqtgraph', 'shiboken6', 'torch'})\n"
        "print(state.can_train, state.reason, loaded)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "True  []"


def test_a_valid_config_turns_train_on_and_says_what_it_will_train(tmp_path, tiny_model_dir):
    presenter = presenter_for(tmp_path)
    state = presenter.state(tiny_form(tiny_model_dir, write_easy_preferences(tmp_path / "prefs.jsonl")))
    assert state.can_train and state.train_enabled and not state.running, state.reason
    assert state.problems == {}
    assert state.ready_text == "Ready to train DPO on prefs.jsonl (64 rows) with model."
    assert (state.cfg.method, state.cfg.model, state.cfg.max_steps) == ("dpo", str(tiny_model_dir), 4)
    assert state.cfg.data_path == str(tmp_path / "prefs.jsonl")


def test_no_data_yet_says_to_load_some(tmp_path, tiny_model_dir):
    state = presenter_for(tmp_path).state(PlainForm("dpo", model=str(tiny_model_dir)))
    assert not state.train_enabled
    assert state.reason == "Load a dataset first: drop a file anywhere on the window."
    assert state.ready_text == "Load a dataset, pick a method, press Train."


def test_a_bad_value_names_the_setting(tmp_path, tiny_model_dir):
    data = write_easy_preferences(tmp_path / "prefs.jsonl")
    presenter = presenter_for(tmp_path)
    state = presenter.state(tiny_form(tiny_model_dir, data, learning_rate=-1.0))
    assert not state.can_train and set(state.problems) == {"learning_rate"}
    assert state.reason.startswith("Fix this setting first: Learning rate") and "above 0" in state.reason
    assert state.ready_text == "Not ready to train yet."

    # A value that is not even a number, and a second bad setting: both named.
    state = presenter.state(tiny_form(tiny_model_dir, data, learning_rate="fast", max_length=0))
    assert set(state.problems) == {"learning_rate", "max_length"}
    assert state.reason == "Fix the 2 settings marked in red: Learning rate, Max length (tokens)."
    outcome = presenter.start(tiny_form(tiny_model_dir, data, learning_rate="fast"))
    assert not outcome.started and "Learning rate" in outcome.reason
    assert presenter.launcher.run is None and not (tmp_path / "runs").exists()


def test_a_refused_data_file_names_the_file_and_why(tmp_path, tiny_model_dir):
    bad = tmp_path / "odd_columns.jsonl"
    bad.write_text("".join(json.dumps({"question_text": f"q{i}", "score": i}) + "\n" for i in range(4)))
    presenter = presenter_for(tmp_path)
    form = tiny_form(tiny_model_dir, bad)
    state = presenter.state(form)
    assert not state.can_train
    assert state.reason == "The dataset cannot be used yet: see the message in step 1."
    assert state.data_problem.startswith("odd_columns.jsonl: ") and "question_text, score" in state.data_problem
    assert state.cfg.data_path == str(bad)  # the chosen file, though it was refused
    assert not presenter.start(form).started and presenter.launcher.run is None


def test_data_that_cannot_feed_the_method_is_refused(tmp_path, tiny_model_dir):
    data = tmp_path / "demos.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Say {i}", "completion": f" {i}"}) + "\n" for i in range(8)))
    state = presenter_for(tmp_path).state(tiny_form(tiny_model_dir, data, method="dpo"))
    assert state.reason == "This dataset does not support the chosen method."
    assert presenter_for(tmp_path).state(tiny_form(tiny_model_dir, data, method="sft")).can_train


def test_the_checks_before_a_run_refuse_a_full_disk_without_starting(tmp_path, tiny_model_dir):
    presenter = presenter_for(tmp_path)
    presenter.free_space = lambda folder: 5 * 2**20
    seen = []
    outcome = presenter.start(tiny_form(tiny_model_dir, write_easy_preferences(tmp_path / "prefs.jsonl")),
                              before_launch=seen.append)
    assert not outcome.started and outcome.refusals and seen == []
    title, lines = refusal_text(outcome.refusals)
    assert title.startswith("Training was not started") and any("MB" in line or "disk" in line for line in lines)
    assert presenter.launcher.run is None


def test_a_model_that_needs_permission_is_flagged_and_a_no_starts_nothing(tmp_path, tiny_model_dir):
    model = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, model)
    (model / "model.safetensors").rename(model / "pytorch_model.bin")
    data = write_easy_preferences(tmp_path / "prefs.jsonl")
    asked = []
    presenter = presenter_for(tmp_path, ask_permission=lambda subject: asked.append(subject.name) or False)
    state = presenter.state(tiny_form(model, data))
    assert not state.can_train and state.reason.startswith("Model: ")
    assert "allow_pickle_weights" in state.problems  # the way out is flagged
    outcome = presenter.start(tiny_form(model, data, allow_pickle_weights=True))
    assert outcome.declined and not outcome.started and asked == ["pickled"]
    assert presenter.launcher.run is None and presenter.grants.grants() == []


@pytest.mark.slow
def test_start_makes_a_run_folder_through_the_worker_and_resume_finishes_a_stopped_run(tmp_path, tiny_model_dir):
    presenter = presenter_for(tmp_path)
    launcher = presenter.launcher
    form = tiny_form(tiny_model_dir, write_easy_preferences(tmp_path / "prefs.jsonl"), max_steps=8)
    launched = []
    outcome = presenter.start(form, before_launch=launched.append)
    assert outcome.started and launched == [outcome.cfg]
    run_dir = launcher.run.run_dir
    assert run_dir.parent == tmp_path / "runs" and (run_dir / "config.yaml").is_file()
    assert not presenter.state(form).train_enabled  # while the worker runs
    assert not presenter.start(form).started  # one run at a time

    events = []
    for event in launcher.events(timeout=300):
        events.append(event)
        if isinstance(event, TrainLog) and event.step == 2:
            launcher.run.request_stop()
    stopped = events[-1]
    assert isinstance(stopped, RunFinished) and stopped.stopped and 2 <= stopped.step < 8, stopped
    assert (run_dir / "adapter" / "adapter_config.json").is_file()
    assert presenter.state(form).train_enabled  # the worker has gone

    before = []
    resumed = presenter.resume(str(run_dir), before_launch=before.append)
    assert resumed.started and before == [resumed]
    assert resumed.message == f"Resuming {run_dir.name} from step {stopped.step}…"
    assert [e.step for e in resumed.history if isinstance(e, TrainLog)] == list(range(1, stopped.step + 1))
    more = list(launcher.events(timeout=300))
    assert next(e for e in more if isinstance(e, RunStarted)).resumed_from_step == stopped.step
    assert isinstance(more[-1], RunFinished) and not more[-1].stopped and more[-1].step == 8, more[-1]

    finished = presenter.resume(str(run_dir))
    assert not finished.started and finished.message.startswith(f"{run_dir.name} cannot be resumed")
