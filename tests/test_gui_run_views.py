"""The Runs tab's overlay and settings diff, the live view's evaluation progress,
clock and messages, the diagnostics' view of the run's settings, and the worker
log filter: real widgets fed real events and run folders, no worker."""

from __future__ import annotations

import os
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402

from backend.runs.diagnostics import TrainingDiagnostics  # noqa: E402
from backend.core.events import (EvalProgress, PhaseChanged, RunFinished, RunStarted, TrainLog,  # noqa: E402
                            WorkerWarning)
from backend.runs.clock import format_duration  # noqa: E402
from backend.runs.config import default_config  # noqa: E402
from backend.runs.folder import append_event, create_run_dir  # noqa: E402
from backend.core.worker_log_filter import KNOWN_HARMLESS, NOTE_PREFIX, WorkerLogFilter, filter_log_text  # noqa: E402

pytestmark = pytest.mark.gui

# The opening of a real worker.log on this machine (a DPO run on a 4-bit tiny model).
NOISY_LOG = """\
Failed to load CPU gemm_4bit_forward from kernels-community: No module named 'kernels'. Please make sure you already `pip install kernels` and the kernels >= 0.11.1
Data: 48 training rows, 16 held out.
/work/main/.venv/lib/python3.11/site-packages/transformers/training_args.py:1541: FutureWarning: `gradient_checkpointing` is deprecated and will be removed in v6. Use `activation_checkpointing` instead.
  warnings.warn(f"`{old}` is deprecated and will be removed in v6. Use `{new}` instead.", FutureWarning)
[RANK 0] When using DPODataCollatorWithPadding, you should set `remove_unused_columns=False` in your TrainingArguments we have set it for you, but you should do it yourself in the future.
/work/main/.venv/lib/python3.11/site-packages/transformers/modeling_utils.py:3312: FutureWarning: `is_gradient_checkpointing` is deprecated and will be removed in v6. Use `is_activation_checkpointing` instead.
  warnings.warn(
step 1/20  loss=0.6931  grad_norm=0.5742
/work/main/.venv/lib/python3.11/site-packages/torch/utils/data/sampler.py:64: UserWarning: something a user may need
  warnings.warn(
Traceback (most recent call last):
  File "x.py", line 1, in <module>
RuntimeError: a real failure"""


# ----------------------------------------------------------------- log filter
def test_known_harmless_messages_are_explained_once_and_everything_else_is_kept():
    shown = filter_log_text(NOISY_LOG).splitlines()
    notes = [line for line in shown if line.startswith(NOTE_PREFIX)]
    # One explanation per kind: the kernel, the deprecations (two of them), TRL's column option.
    assert len(notes) == 3, notes
    assert not any("gemm_4bit_forward" in line or "FutureWarning" in line or "[RANK 0]" in line for line in shown)
    assert not any(line.strip() == "warnings.warn(" for line in shown[:6])
    # What concerns the user passes unchanged, in order: data, steps, an unknown warning, a traceback.
    kept = [line for line in shown if not line.startswith(NOTE_PREFIX)]
    assert kept == ["Data: 48 training rows, 16 held out.", "step 1/20  loss=0.6931  grad_norm=0.5742",
                    NOISY_LOG.splitlines()[8], "  warnings.warn(", "Traceback (most recent call last):",
                    '  File "x.py", line 1, in <module>', "RuntimeError: a real failure"]
    for known in KNOWN_HARMLESS:
        assert known.explanation.endswith(".") and len(known.explanation) > 40, known.key


def test_a_warning_split_across_chunks_still_takes_its_source_line():
    log_filter = WorkerLogFilter()
    lines = NOISY_LOG.splitlines()
    assert log_filter.feed(lines[2:3]) and log_filter.feed(lines[3:4]) == []
    assert log_filter.hidden["library_deprecation"] == 1


def test_the_console_shows_the_filtered_log_and_the_raw_one_on_request(qtbot):
    from widgets.log_console import LogConsole

    console = LogConsole(line_filter=WorkerLogFilter())
    qtbot.addWidget(console)
    for start in range(0, len(NOISY_LOG), 97):  # the tailer delivers arbitrary chunks
        console.append_text(NOISY_LOG[start:start + 97])
    console.flush()
    assert "gemm_4bit_forward" not in console.toPlainText() and NOTE_PREFIX in console.toPlainText()
    console.set_show_raw(True)
    assert console.toPlainText() == NOISY_LOG
    console.set_show_raw(False)
    assert console.toPlainText() == filter_log_text(NOISY_LOG)


# --------------------------------------------------------------- diagnostics
def test_too_easy_advice_follows_the_runs_held_out_setting():
    def advice(eval_rows):
        diag = TrainingDiagnostics(200, "dpo", eval_rows=eval_rows)
        notes = []
        for step in range(1, 5):
            notes += diag.observe(step, {"rewards/accuracies": 1.0})[0]
        return next(n for n in notes if n.code == "too_easy").advice

    assert "Hold out data" in advice(0)
    held = advice(12)
    assert "Hold out data" not in held and "12 held-out rows" in held


# ------------------------------------------------------------------ live view
@pytest.fixture
def live(qtbot):
    from app.train.live_training_view import LiveTrainingView

    view = LiveTrainingView()
    qtbot.addWidget(view)
    view.resize(1100, 700)
    view.show()
    return view


def _started(**kw):
    values = dict(run_dir="/tmp/x", method="dpo", config={}, device={"kind": "cpu", "precision": "fp32"},
                  total_params=1000, trainable_params=10, total_steps=3, train_rows=40, eval_rows=200)
    values.update(kw)
    return RunStarted(**values)


def test_phase_text_is_said_once(live):
    live.begin_run("dpo")
    live.on_phase(PhaseChanged(phase="loading_model", message="Loading the model", elapsed_seconds=0.1))
    assert live.phase_label.text() == "Loading the model…"
    live.on_phase(PhaseChanged(phase="preparing_data"))
    assert live.phase_label.text() == "Preparing the data…"


def test_evaluation_shows_its_batches_and_etas_and_the_clock_keeps_moving(live, qtbot):
    live.begin_run("dpo")
    live.on_run_started(_started())
    live.on_train_log(TrainLog(step=3, epoch=1.0, metrics={"loss": 0.5}, total_steps=3, seconds_per_step=5.0,
                               eta_seconds=280.0, elapsed_seconds=17.0))
    live.flush()
    assert live.progress.text() == "step 3 of 3"
    live.on_phase(PhaseChanged(phase="evaluating", message="Final evaluation on the held-out rows",
                               elapsed_seconds=20.0))
    live.on_eval_progress(EvalProgress(step=3, batch=5, total_batches=25, rows=200, final=True,
                                       eval_eta_seconds=200.0, eta_seconds=200.0, elapsed_seconds=70.0))
    assert live.progress.text() == "final evaluation: batch 5 of 25"
    stats = live.stats_label.text()
    assert "Elapsed 1:10" in stats and "evaluation ETA 3:20" in stats, stats
    # No event for over a second: the clock still moves and the ETA counts down.
    qtbot.wait(1300)
    stats = live.stats_label.text()
    assert "Elapsed 1:11" in stats or "Elapsed 1:12" in stats, stats
    assert "evaluation ETA 3:19" in stats or "evaluation ETA 3:18" in stats, stats
    assert live.phase_label.text() == "Final evaluation on the held-out rows…"
    # Stop while evaluating says what it stops.
    live.request_stop()
    assert "Stopping the evaluation" in live.phase_label.text()
    live.on_phase(PhaseChanged(phase="saving", message="Saving the adapter", elapsed_seconds=300.0))
    assert live.progress.text() == "step 3 of 3"
    finished = RunFinished(adapter_path="/tmp/x/adapter", stopped=True, step=3, total_steps=3,
                           elapsed_seconds=325.0, summary={})
    live.on_finished(finished)
    live.on_idle()
    assert live.stats_label.text().startswith("Elapsed 5:25")
    qtbot.wait(1100)
    assert live.stats_label.text().startswith("Elapsed 5:25")  # the clock stopped with the run


def test_a_finished_runs_message_goes_when_something_new_happens(live):
    live.begin_run("dpo")
    live.on_run_started(_started())
    live.on_finished(RunFinished(adapter_path="/tmp/x/adapter", stopped=False, step=3, total_steps=3,
                                 elapsed_seconds=325.0, summary={}))
    live.on_idle()
    assert live.phase_label.text() == "Done. The run is in the Runs tab."
    assert "in 5:25" in live.banner.title() and live.banner.isVisible()
    live.show_ready("Ready to train DPO on other.jsonl.")
    assert live.phase_label.text() == "Done. The run is in the Runs tab."  # readiness alone does not hide it
    live.clear_outcome(None)  # a data error arrives (the data panel sends None)
    assert not live.banner.isVisible() and "Done" not in live.phase_label.text()


# ------------------------------------------------------------------- runs tab
def _fake_run(root, name, **settings):
    cfg = default_config("dpo", run_name=name, data_path="/data/prefs.jsonl", **settings)
    run_dir = create_run_dir(cfg, root)
    start = time.time() - 400
    append_event(run_dir, PhaseChanged(phase="loading_model", elapsed_seconds=0.0, time=start))
    append_event(run_dir, _started(run_dir=str(run_dir), total_steps=4, time=start + 10))
    for step in range(1, 5):
        append_event(run_dir, TrainLog(step=step, epoch=step / 4, metrics={"loss": 1.0 / step}, total_steps=4,
                                       elapsed_seconds=10.0 + 5 * step, time=start + 10 + 5 * step))
    append_event(run_dir, WorkerWarning(message="w", time=start + 31))
    append_event(run_dir, RunFinished(adapter_path="", stopped=False, step=4, total_steps=4, elapsed_seconds=296.0,
                                      summary={}, time=start + 296))
    return str(run_dir)


def test_runs_tab_overlays_once_and_diffs_the_settings(qtbot, studio_home):
    from app.runs.tab import RunsTab
    from backend.core.paths import runs_dir

    first = _fake_run(runs_dir(), "first", beta=0.1, learning_rate=5e-6)
    second = _fake_run(runs_dir(), "second", beta=0.3, learning_rate=5e-6, lora_r=32)
    tab = RunsTab()
    qtbot.addWidget(tab)
    tab.resize(1200, 800)
    tab.show()
    tab.refresh()
    qtbot.waitUntil(lambda: len(tab.run_dirs()) == 2, timeout=10_000)
    # The Runs tab's duration is the one the finish banner showed.
    durations = {tab.table.item(r, 6).text() for r in range(2)}
    assert durations == {format_duration(296.0)} == {"4:56"}

    with qtbot.waitSignal(tab.sig_runs_opened, timeout=10_000) as opened:
        tab.select_runs([first, second])
    assert sorted(opened.args[0]) == sorted([first, second])
    # The selection is already overlaid: the button says so instead of doing nothing.
    assert not tab.overlay_button.isEnabled()
    assert tab.overlay_button.toolTip() == "The selected runs are overlaid below."
    assert tab.plots.series_length("loss", run=first) == 4 and tab.plots.series_length("loss", run=second) == 4

    table = tab.diff_table
    assert tab.config_stack.currentIndex() == 1
    keys = [table.verticalHeaderItem(r).toolTip().split()[0] for r in range(table.rowCount())]
    assert keys == ["lora_r", "run_name", "beta"], keys
    # Rows are named as in the settings form.
    assert [table.verticalHeaderItem(r).text() for r in range(2)] == ["LoRA rank", "Run name"]
    names = [table.horizontalHeaderItem(c).text() for c in range(table.columnCount())]
    row = {key: [table.item(r, c).text() for c in range(table.columnCount())] for r, key in enumerate(keys)}
    by_run = dict(zip(names, zip(*[row[k] for k in keys])))
    first_col = next(n for n in names if n.startswith("first"))
    second_col = next(n for n in names if n.startswith("second"))
    assert by_run[first_col] == ("16", "first", "0.1") and by_run[second_col] == ("32", "second", "0.3")
    assert "3 settings differ" in tab.diff_note.text()

    # One run again: its YAML, and the overlay button comes back for a new multi-selection.
    with qtbot.waitSignal(tab.sig_runs_opened, timeout=10_000):
        tab.select_runs([first])
    assert tab.config_stack.currentIndex() == 0 and "beta: 0.1" in tab.config_view.toPlainText()
    tab.table.selectAll()
    assert tab.overlay_button.isEnabled()
    tab.detail_tabs.setCurrentIndex(1)
    with qtbot.waitSignal(tab.sig_runs_opened, timeout=10_000):
        tab.overlay_button.click()
    assert tab.detail_tabs.currentIndex() == 0 and not tab.overlay_button.isEnabled()


def test_each_method_plots_its_own_titles_for_a_key_others_log_too(qtbot):
    """Two methods may log the same key with different meanings: the run's own method names it."""
    from app.train.metric_catalog import style_for_key, styles_for_method
    from backend.methods import all_methods

    shared = {}
    for spec in all_methods():
        for m in spec.metrics:
            shared.setdefault(m.key, {})[spec.key] = m.title
    differing = {k: v for k, v in shared.items() if len(set(v.values())) > 1}
    assert differing, "no key is titled differently by two methods; pick another check"
    key, titles = next(iter(differing.items()))
    for method, title in titles.items():
        assert styles_for_method(method)(key).plot_title == title, (method, key)
    assert style_for_key(key).plot_title in titles.values()
    assert styles_for_method("no-such-method") is style_for_key

    from widgets.metric_plots import MetricPlotGrid

    grid = MetricPlotGrid(style_for_key)
    qtbot.addWidget(grid)
    method, title = list(titles.items())[-1]
    grid.set_style_for_key(styles_for_method(method))
    grid.add_point(key, 1, 0.5)
    assert grid._styles[key].plot_title == title
