"""The window side of RL runs: the sample table, its place in the live view, the RL
diagnostics on synthetic metric streams, the grader editor and the try-the-graders dialog."""

from __future__ import annotations

import math
import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402

from app.training_diagnostics import TrainingDiagnostics  # noqa: E402
from backend.events import SampleBatch, TrainLog  # noqa: E402

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
    # Spread comes back: the note goes.
    diag = TrainingDiagnostics(100)
    _feed(diag, rows + [_rl_row(zero_std=0.3)])
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
    rows = [_rl_row(graders={"answer": (0.1 * (i % 4), 0.3), "json_ok": (1.0, 0.0)}) for i in range(6)]
    notes = _feed(TrainingDiagnostics(100), rows)
    assert set(notes) == {"grader_constant:json_ok"}
    assert "'json_ok'" in notes["grader_constant:json_ok"].title
    # One that varied once is not constant.
    rows = [_rl_row(graders={"g": (0.5, 0.0)})] * 5 + [_rl_row(graders={"g": (0.7, 0.1)})]
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

    return next((s for s in all_methods() if s.samples), None)


def test_live_view_shows_the_sample_table_only_for_a_sampling_method(qtbot):
    from app.live_training_view import LiveTrainingView
    from backend.methods import all_methods

    view = LiveTrainingView()
    qtbot.addWidget(view)
    plain = next(s for s in all_methods() if not s.samples)
    view.begin_run(plain.key)
    assert view.sample_table is None or view.sample_table.isHidden()
    sampling = _spec_with_samples()
    if sampling is None:
        pytest.skip("no registered method samples completions yet")
    history = [TrainLog(step=1, epoch=0.1, metrics={"loss": 0.1, "reward": 0.5}), _batch(1, [[1.0, 0.0]])]
    view.begin_run(sampling.key, history=history)
    assert not view.sample_table.isHidden() and view.sample_table.model.rowCount() == 2
    view.on_samples(_batch(2, [[0.5, 0.5]]))
    assert view.sample_table.model.rowCount() == 4
    view.begin_run(plain.key)
    assert view.sample_table.isHidden() and view.sample_table.model.rowCount() == 0


def test_a_metric_family_puts_every_grader_on_one_plot(monkeypatch):
    import app.metric_catalog as catalog

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
