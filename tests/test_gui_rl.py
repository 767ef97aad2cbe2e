"""The window side of RL runs: the sample table, its place in the live view, the RL
diagnostics on synthetic metric streams, the grader editor and the try-the-graders dialog."""

from __future__ import annotations

import math
import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402

from backend.runs.diagnostics import TrainingDiagnostics  # noqa: E402
from backend.core.events import SampleBatch, TrainLog  # noqa: E402

pytestmark = [pytest.mark.gui]


# ------------------------------------------------------------------ diagnostics
def _feed(diag: TrainingDiagnostics, rows: list[dict]) -> dict:
    """Feed one metrics dict per step; returns the notes active at the end by code."""
    for step, metrics in enumerate(rows, start=1):
        diag.observe(step, metrics)
    return {d.code: d for d in diag.active()}


def _rl_row(reward=0.5, zero_std=0.1, length=20.0, clipped=0.0, kl=0.01, graders=None):
    row = {"loss": 0.0, "reward": reward, "reward_std": 0.3, "frac_reward_zero_std": zero_std,
           "completions/mean_length": length, "completions/clipped_ratio": clipped, "kl": kl}
    for name, (mean, std) in (graders or {"answer": (reward, 0.3)}).items():
        row[f"rewards/{name}/mean"] = mean
        row[f"rewards/{name}/std"] = std
    return row


def test_a_healthy_rl_run_gets_no_rl_notes():
    rows = [_rl_row(reward=0.2 + 0.01 * i, zero_std=0.2, length=20 + (i % 3), kl=0.01 + 0.001 * i)
            for i in range(40)]
    assert _feed(TrainingDiagnostics(40), rows) == {}


def test_all_equal_rewards_with_nothing_passing_says_the_graders_are_too_strict():
    rows = [_rl_row(reward=0.0, zero_std=1.0, graders={"answer": (0.0, 0.0), "format": (0.0, 0.3)})
            for _ in range(4)]
    notes = _feed(TrainingDiagnostics(100), rows)
    note = notes["rewards_all_equal"]
    assert "100%" in note.text and "too strict" in note.text and "'answer' and 'format'" in note.text
    assert "partial credit" in note.advice
    # Spread comes back for a few logs: the note goes (one log is not enough; the share swings).
    diag = TrainingDiagnostics(100)
    _feed(diag, rows + [_rl_row(zero_std=0.3)])
    assert "rewards_all_equal" in {d.code for d in diag.active()}
    _feed(diag, [_rl_row(zero_std=0.3)] * 2)
    assert "rewards_all_equal" not in {d.code for d in diag.active()}


def test_all_equal_rewards_with_everything_passing_says_too_lenient():
    rows = [_rl_row(reward=1.0, zero_std=0.9, graders={"format": (1.0, 0.0)}) for _ in range(3)]
    note = _feed(TrainingDiagnostics(100), rows)["rewards_all_equal"]
    assert "too lenient" in note.text and "stricter" in note.advice


def test_two_logs_of_equal_rewards_are_not_yet_a_pattern():
    rows = [_rl_row(zero_std=1.0), _rl_row(zero_std=1.0), _rl_row(zero_std=0.2), _rl_row(zero_std=1.0)]
    assert "rewards_all_equal" not in _feed(TrainingDiagnostics(100), rows)


def test_reward_rising_with_length_is_flagged_as_length_hacking():
    rows = [_rl_row(reward=0.1 + 0.02 * i, length=20 + 4 * i) for i in range(12)]
    note = _feed(TrainingDiagnostics(100), rows)["length_hacking"]
    assert "longer answers" in note.text and "length target" in note.advice
    # Reward rising while lengths stay put is learning, not hacking.
    steady = [_rl_row(reward=0.1 + 0.02 * i, length=20 + (i % 2)) for i in range(12)]
    assert "length_hacking" not in _feed(TrainingDiagnostics(100), steady)


def test_most_completions_cut_at_the_max_length():
    notes = _feed(TrainingDiagnostics(100), [_rl_row(clipped=0.9) for _ in range(3)])
    assert "90%" in notes["completions_clipped"].text
    assert "max completion length" in notes["completions_clipped"].advice
    diag = TrainingDiagnostics(100)
    _feed(diag, [_rl_row(clipped=0.9)] * 3 + [_rl_row(clipped=0.0)] * 3)
    assert diag.active() == []


def test_kl_running_away():
    rows = [_rl_row(kl=0.01 * 1.6 ** i) for i in range(12)]
    note = _feed(TrainingDiagnostics(100), rows)["kl_runaway"]
    assert "beta" in note.advice
    calm = [_rl_row(kl=0.02 + 0.001 * (i % 3)) for i in range(12)]
    assert "kl_runaway" not in _feed(TrainingDiagnostics(100), calm)


def test_a_grader_that_never_varies_is_named():
    rows = [_rl_row(graders={"answer": (0.1 * (i % 4), 0.3), "json_ok": (1.0, 0.0)}) for i in range(10)]
    notes = _feed(TrainingDiagnostics(100), rows)
    assert set(notes) == {"grader_constant:json_ok"}
    assert "'json_ok'" in notes["grader_constant:json_ok"].title
    # A strict grader that scores 0 for a few steps and then varies is not "never varies".
    rows = [_rl_row(graders={"g": (0.0, 0.0)})] * 9 + [_rl_row(graders={"g": (0.2, 0.1)})] * 3
    assert _feed(TrainingDiagnostics(100), rows) == {}


def test_preference_metrics_raise_no_rl_note():
    rows = [{"loss": 0.69 - 0.001 * i, "rewards/chosen": 0.1, "rewards/rejected": -0.1, "rewards/margins": 0.2,
             "rewards/accuracies": 0.6, "logps/chosen": -40.0} for i in range(30)]
    assert not any(":" in code or code.startswith(("rewards_", "length", "kl", "completions"))
                   for code in _feed(TrainingDiagnostics(300), rows))


# ------------------------------------------------------------------ sample table
def _batch(step: int, rewards_per_group: list[list[float]], graders=("answer", "format")) -> SampleBatch:
    rows = []
    for group, rewards in enumerate(rewards_per_group):
        mean = sum(rewards) / len(rewards)
        for k, reward in enumerate(rewards):
            rows.append({"prompt": f"Question {group}: what is {group} + {k}?\nAnswer with a number.",
                         "completion": f"<answer>{group + k}</answer>" + (" and more" * 100 if k == 0 else ""),
                         "scores": {graders[0]: reward, graders[1]: math.nan if k == 1 else 1.0},
                         "reward": reward, "advantage": reward - mean, "group": group})
    return SampleBatch(step=step, graders=list(graders), rows=rows, total_rows=len(rows))


def test_sample_table_marks_best_worst_and_equal_groups(qtbot):
    from widgets.sample_table import MARK_ROLE, SampleTable

    table = SampleTable()
    qtbot.addWidget(table)
    table.add_batch(_batch(1, [[1.0, 0.0, 0.5], [0.0, 0.0, 0.0]]))
    table.add_batch(_batch(2, [[0.2, 0.9]]))
    model = table.model
    assert model.rowCount() == 8
    assert model.columns() == ["Step", "Group", "", "Prompt", "Completion", "answer", "format", "Reward", "Advantage"]
    marks = [model.data(model.index(r, 0), MARK_ROLE) for r in range(model.rowCount())]
    # Newest step first; in each group the best and worst are marked, an all-equal group as such.
    assert marks == ["worst", "best", "best", "worst", "", "tie", "tie", "tie"]
    assert model.index(0, 0).data() == "2"
    text = {model.columns()[c]: model.index(1, c).data() for c in range(model.columnCount())}
    assert text["Advantage"] == "+0.35" and text["Reward"] == "0.9"
    # An abstaining grader shows a dash and says so.
    assert model.index(3, 6).data() == "—" and "no score" in model.index(3, 6).data(3)
    # A long completion is one line, cut in the middle, whole in the tooltip.
    long_cell = model.index(2, 4)
    assert len(long_cell.data()) < 260 and "…" in long_cell.data()
    assert "and more" in long_cell.data(3) and long_cell.data(3).count("and more") > 50
    assert "2 groups all equal" not in table.summary.text() and "step 2" in table.summary.text()
    assert "1 group of 2 completions" in table.summary.text()
    # PPO samples one answer per prompt: the count must not read as groups times answers.
    table.add_batch(_batch(3, [[0.1], [0.4], [0.3]]))
    assert "3 completions, one per prompt" in table.summary.text() and "group" not in table.summary.text()


def test_sample_table_keeps_the_newest_rows_and_the_selection_follows_its_sample(qtbot):
    from widgets.sample_table import SampleTable

    table = SampleTable(max_rows=6)
    qtbot.addWidget(table)
    table.add_batch(_batch(1, [[1.0, 0.0], [0.0, 0.0]]))
    table.view.selectRow(2)
    assert "Step 1 · group #1 · = all equal" in table.detail.toPlainText()
    assert "Question 1" in table.detail.toPlainText()
    table.add_batch(_batch(2, [[0.2, 0.9]]))
    assert table.model.rowCount() == 6
    assert [r["step"] for r in table.model.rows()] == [2, 2, 1, 1, 1, 1]
    assert table.view.currentIndex().row() == 4  # the same sample, two rows further down
    table.add_batch(_batch(3, [[0.2, 0.9], [0.1, 0.3]]))
    assert [r["step"] for r in table.model.rows()] == [3, 3, 3, 3, 2, 2]
    assert "1 groups all equal" not in table.summary.text()


def _spec_with_samples():
    from backend.methods import all_methods

    return next(s for s in all_methods() if s.samples)


def test_live_view_shows_the_sample_table_only_for_a_sampling_method(qtbot):
    from app.train.live_training_view import LiveTrainingView
    from backend.methods import all_methods

    view = LiveTrainingView()
    qtbot.addWidget(view)
    plain = next(s for s in all_methods() if not s.samples)
    view.begin_run(plain.key)
    assert view.sample_table is None or view.sample_table.isHidden()
    sampling = _spec_with_samples()
    history = [TrainLog(step=1, epoch=0.1, metrics={"loss": 0.1, "reward": 0.5}), _batch(1, [[1.0, 0.0]])]
    view.begin_run(sampling.key, history=history)
    assert not view.sample_table.isHidden() and view.sample_table.model.rowCount() == 2
    view.on_samples(_batch(2, [[0.5, 0.5]]))
    assert view.sample_table.model.rowCount() == 4
    view.begin_run(plain.key)
    assert view.sample_table.isHidden() and view.sample_table.model.rowCount() == 0


def test_a_metric_family_puts_every_grader_on_one_plot(monkeypatch):
    import app.train.metric_catalog as catalog

    family = ("rewards/", "/mean", ("graders", "Each grader's mean reward", "*", "#ea580c", "solid", 20, True))
    monkeypatch.setattr(catalog, "_PATTERNS", [family])
    catalog.style_for_key.cache_clear()
    try:
        a, b = catalog.style_for_key("rewards/answer_match/mean"), catalog.style_for_key("rewards/format/mean")
        assert (a.plot_id, b.plot_id) == ("graders", "graders")
        assert (a.label, b.label) == ("answer_match", "format") and a.color != b.color
        assert catalog.style_for_key("rewards/format/std").plot_id != "graders"
        assert catalog.style_for_key("rewards//mean").plot_id != "graders"
    finally:
        catalog.style_for_key.cache_clear()


# ------------------------------------------------------------------ grader editor
REWARD_FILE = '''"""Rewards for a test."""
import pathlib
pathlib.Path(__file__).with_name("ran.txt").write_text("the file ran")


def has_answer(completions, **kwargs):
    """1 when an answer tag is there."""
    return [1.0 if "<answer>" in c else 0.0 for c in completions]


def near_answer(completions, answer, **kwargs):
    return [0.0 for _ in completions]


def _helper():
    return 1
'''


def _editor(qtbot, answers):
    from app.train.grader_editor import GraderEditor

    asked = []

    def ask(subject):
        asked.append(subject)
        return answers.pop(0)

    editor = GraderEditor(ask_permission=ask)
    qtbot.addWidget(editor)
    return editor, asked


def test_grader_editor_round_trips_graders_with_settings_and_weights(qtbot):
    editor, _ = _editor(qtbot, [])
    values = {"graders": [{"grader": "numeric_match", "weight": 2.0, "column": "solution", "extract": "boxed"},
                          {"grader": "banned_words", "weight": -0.5, "words": "sorry"}],
              "reward_file": "", "reward_model": "", "allow_reward_code": False}
    editor.set_columns(["prompt", "solution"])
    editor.set_values(values)
    assert editor.values() == values
    assert editor.problems() == []
    numeric = editor.rows()[0]
    assert [numeric.settings["column"].widget.itemText(i) for i in range(2)] == ["prompt", "solution"]
    # A setting that does not parse is named, not dropped or crashed on.
    numeric.settings["tolerance"].widget.setText("tight")
    assert any("Tolerance must be a number" in p for p in editor.problems())
    # Removing a grader and adding one.
    numeric.remove_button.click()
    editor.add_grader("valid_json")
    assert [e["grader"] for e in editor.values()["graders"]] == ["banned_words", "valid_json"]


def test_a_named_reward_model_shows_as_a_grader_with_its_picker(qtbot):
    editor, _ = _editor(qtbot, [])
    editor.set_reward_model_runs([("rm run (Reward model)", "/runs/rm")])
    editor.set_values({"graders": [], "reward_file": "", "reward_model": "/models/rm", "allow_reward_code": False})
    row = editor.rows()[0]
    assert row.key == "reward_model" and row.reward_model() == "/models/rm"
    assert row.model_picker.itemText(0) == "rm run (Reward model)"
    row.model_picker.setCurrentText("")
    assert any("reward_model" in p and "name the reward model" in p for p in editor.problems())
    row.remove_button.click()
    assert editor.values()["reward_model"] == "" and editor.values()["graders"] == []


def test_reward_file_functions_are_listed_without_running_it_and_run_only_when_allowed(qtbot, tmp_path):
    path = tmp_path / "my_rewards.py"
    path.write_text(REWARD_FILE)
    editor, asked = _editor(qtbot, [False, True])
    editor.set_reward_file(str(path))
    assert not (tmp_path / "ran.txt").exists()
    assert list(editor._function_boxes) == ["has_answer", "near_answer"]
    assert "2 functions found in my_rewards.py (read, not run)" in editor.file_status.text()
    graders = editor.values()["graders"]
    assert {"grader": "file:has_answer", "weight": 1.0} in graders and editor.values()["allow_reward_code"] is False
    assert any("only once you allow the file" in p for p in editor.problems())
    # The user says no: the box stays unticked. Then yes: allowed, for this file.
    editor.allow_box.setChecked(True)
    assert not editor.allow_box.isChecked() and asked[0].location == str(path.resolve())
    editor.allow_box.setChecked(True)
    assert editor.values()["allow_reward_code"] is True and len(asked) == 2
    assert editor.problems() == []
    assert not (tmp_path / "ran.txt").exists()


def test_a_broken_reward_file_is_named_with_its_line(qtbot, tmp_path):
    path = tmp_path / "broken.py"
    path.write_text("def grade(completions, **kw):\n    return [1.0 for c in completions\n")
    editor, _ = _editor(qtbot, [])
    editor.set_reward_file(str(path))
    assert "broken.py, line" in editor.file_status.text()
    assert any("broken.py" in p for p in editor.problems())


def test_settings_panel_edits_graders_with_the_editor_for_a_method_that_has_them(qtbot, tmp_path):
    from app.train.method_settings_panel import MethodSettingsPanel
    from app.studio_settings import StudioSettings
    from backend.methods import all_methods

    panel = MethodSettingsPanel(StudioSettings(tmp_path / "settings.json"))
    qtbot.addWidget(panel)
    grading = next(s for s in all_methods() if "graders" in s.config.__dataclass_fields__)
    plain = next(s for s in all_methods() if "graders" not in s.config.__dataclass_fields__)
    panel.set_method(grading.key)
    assert "graders" not in panel.form.field_names() and "reward_file" not in panel.form.field_names()
    panel.grader_editor.add_grader("regex_match")
    assert panel.values()["graders"][-1] == {"grader": "regex_match", "weight": 1.0}
    panel.grader_editor.rows()[-1].settings["pattern"].widget.setText("(")
    assert "regex_match" in panel.parse_problems()["graders"]
    panel.set_method(plain.key)
    assert panel.grader_editor.isHidden() and "graders" not in panel.values()


def test_train_asks_again_for_an_allowed_reward_file_whose_code_changed(tmp_path):
    from backend.runs.code_permissions import GrantStore, ungranted_subjects
    from backend.methods import all_methods
    from backend.runs.config import default_config

    path = tmp_path / "rewards.py"
    path.write_text(REWARD_FILE)
    grading = next(s for s in all_methods() if "graders" in s.config.__dataclass_fields__)
    cfg = default_config(grading.key, reward_file=str(path), allow_reward_code=True)
    store = GrantStore(tmp_path / "grants.json")
    [subject] = ungranted_subjects(cfg, store)
    assert subject.permission == "allow_reward_code"
    store.grant(subject)
    assert ungranted_subjects(cfg, store) == []
    path.write_text(REWARD_FILE + "\n# changed\n")
    assert [s.location for s in ungranted_subjects(cfg, store)] == [str(path.resolve())]
    assert ungranted_subjects(default_config(grading.key, reward_file=str(path)), store) == []


# ------------------------------------------------------------------ try the graders
@pytest.mark.slow
def test_try_the_graders_dialog_runs_the_worker_and_flags_graders(qtbot, tiny_model_dir, tmp_path):
    import json as _json

    from app.train.grader_trial_dialog import GraderTrialDialog
    from backend.graders.trial import TrialResult
    from backend.methods import all_methods
    from backend.runs.config import default_config

    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(_json.dumps({"prompt": f"What is {i} + 1?", "answer": str(i + 1)}) + "\n"
                            for i in range(4)))
    reward_file = tmp_path / "rewards.py"
    reward_file.write_text(REWARD_FILE)
    spec = next(s for s in all_methods() if s.samples and "graders" in s.config.__dataclass_fields__)
    cfg = default_config(spec.key, model=str(tiny_model_dir), data_path=str(data), data_format="prompt_only",
                         quantization="none", max_completion_length=6, reward_file=str(reward_file),
                         graders=[{"grader": "regex_match", "pattern": "never-written-xyzzy"},
                                  {"grader": "file:has_answer", "weight": 2.0}])
    dialog = GraderTrialDialog(cfg, prompts=2, completions=2)
    qtbot.addWidget(dialog)
    with qtbot.waitSignal(dialog.sig_finished, timeout=180_000) as finished:
        dialog.start()
    result = finished.args[0]
    assert isinstance(result, TrialResult), getattr(result, "message", result)
    qtbot.waitUntil(lambda: not dialog.is_running(), timeout=10_000)
    assert dialog.table.model.rowCount() == 4
    assert dialog.table.model.graders() == ["regex_match", "has_answer"]
    findings = dialog.findings.text()
    # The pattern never matches: flagged as constant. The file was not allowed: its grader fails by name.
    assert "gave every completion 0" in findings and "was not allowed to run" in findings
    assert "2 of 2 graders need a look" in dialog.status.text()
    column = dialog.table.model.columns().index("has_answer")
    assert dialog.table.model.index(0, column).data() == "error"
    assert not (tmp_path / "ran.txt").exists()
    assert dialog.again_button.isEnabled() and not dialog.stop_button.isEnabled()


# ------------------------------------------------------------------ demos
def test_demos_are_listed_from_their_files_the_rl_one_first(tmp_path):
    from app.train.demo_menu import list_demos
    from backend.methods import all_methods

    sampling = next(s for s in all_methods() if s.samples)
    plain = next(s for s in all_methods() if not s.samples)
    (tmp_path / "demo_a.yaml").write_text(f"# The demo run: {plain.label} on the demo data.\nmethod: {plain.key}\n")
    (tmp_path / "demo_b.yaml").write_text(f"# Arithmetic answers that the model learns to get right\n"
                                          f"model: ''\nmethod: '{sampling.key}'   # comment\n")
    (tmp_path / "demo_c.yaml").write_text("# A method this build lacks\nmethod: no-such-method\n")
    (tmp_path / "notes.yaml").write_text("method: x\n")
    demos = list_demos(tmp_path)
    assert [d.path.name for d in demos] == ["demo_b.yaml", "demo_a.yaml"]
    assert demos[0].menu_text == "RL demo: Arithmetic answers that the model learns to get right"
    assert demos[1].menu_text == f"{plain.label} on the demo data" and not demos[1].samples


def test_the_file_menu_offers_the_shipped_demos_and_one_click_loads_its_settings(qtbot, studio_home):
    from app.train.demo_menu import list_demos
    from tests.gui_helpers import make_studio_window

    window = make_studio_window(qtbot)
    shipped = list_demos()
    assert shipped, "resources/demo has demo_*.yaml files"
    window.demo_menu.aboutToShow.emit()
    actions = window.demo_menu.actions()
    assert [a.text() for a in actions] == [d.menu_text for d in shipped]
    target = shipped[0]
    actions[0].trigger()
    from backend.cli.main import load_config_file

    assert window.method_panel.method() == load_config_file(str(target.path)).method
    qtbot.waitUntil(lambda: window.data_panel.current() is not None, timeout=30_000)
    # Samples a worker sends travel from the supervisor's thread to the live view's table.
    supervisor = window.controller.supervisor
    supervisor._emit(_batch(4, [[1.0, 0.0]]))
    qtbot.waitUntil(lambda: window.live.sample_table is not None
                    and window.live.sample_table.model.rowCount() == 2, timeout=5000)
    assert "step 4" in window.live.sample_table.summary.text()


def test_the_grader_editor_offers_the_methods_ready_demo_in_one_click(qtbot, tmp_path, monkeypatch):
    import dataclasses

    import app.train.method_settings_panel as panel_module
    import backend.cli.main
    from app.train.method_settings_panel import MethodSettingsPanel
    from app.studio_settings import StudioSettings
    from backend.methods import all_methods, find_method

    grading = next(s for s in all_methods() if "graders" in s.config.__dataclass_fields__)
    with_demo = dataclasses.replace(grading, demo="sums")
    monkeypatch.setattr(panel_module, "find_method", lambda key: with_demo if key == grading.key else find_method(key))
    monkeypatch.setattr(backend.cli.main, "DEMO_DIR", tmp_path)
    panel = MethodSettingsPanel(StudioSettings(tmp_path / "settings.json"))
    qtbot.addWidget(panel)
    panel.set_method(grading.key)
    assert panel.grader_editor.demo_button.isHidden()  # the spec names a demo, but its file is not there
    (tmp_path / "demo_sums.yaml").write_text(f"# Sums the model learns to get right\nmethod: {grading.key}\n")
    panel.set_method(grading.key)
    assert not panel.grader_editor.demo_button.isHidden()
    assert "Sums the model learns" in panel.grader_editor.demo_button.toolTip()
    with qtbot.waitSignal(panel.sig_demo_requested) as asked:
        panel.grader_editor.demo_button.click()
    assert asked.args == [str(tmp_path / "demo_sums.yaml")]
