"""The reusable widgets and the pure logic behind the live view, one at a time."""

from __future__ import annotations

import math
import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PySide6.QtCore import Qt  # noqa: E402

from app.train.metric_catalog import EXPECTED_KEYS, feed_events, points_from_event, style_for_key  # noqa: E402
from backend.runs.diagnostics import TrainingDiagnostics  # noqa: E402
from backend.core.events import EvalLog, TrainLog  # noqa: E402
from tests.gui_helpers import drop_paths  # noqa: E402

pytestmark = pytest.mark.gui


# ------------------------------------------------------------ metric catalog
def test_paired_metrics_share_a_plot_and_keep_their_colours():
    chosen, rejected = style_for_key("rewards/chosen"), style_for_key("rewards/rejected")
    assert chosen.plot_id == rejected.plot_id
    assert style_for_key("logps/chosen").plot_id == style_for_key("logps/rejected").plot_id
    assert chosen.color == style_for_key("logps/chosen").color  # chosen is the same green everywhere
    assert rejected.color == style_for_key("logits/rejected").color
    assert style_for_key("eval_loss").plot_id == style_for_key("loss").plot_id
    assert style_for_key("eval_loss").markers


def test_unknown_keys_get_their_own_plot_and_bookkeeping_keys_none():
    assert style_for_key("brand_new/metric").plot_id == "other:brand_new/metric"
    for key in ("epoch", "num_tokens", "train_runtime", "eval_runtime"):
        assert style_for_key(key) is None


def test_points_from_events_include_memory_and_eval_prefix():
    log = TrainLog(step=3, epoch=0.1, metrics={"loss": 0.5, "num_tokens": 100.0}, peak_memory_mb=900.0,
                   tokens_per_second=1200.0)
    keys = {k for k, _s, _v in points_from_event(log)}
    assert keys == {"loss", "peak_memory_mb", "tokens_per_second"}
    ev = EvalLog(step=3, epoch=0.1, metrics={"loss": 0.4, "runtime": 1.0})
    assert [k for k, _s, _v in points_from_event(ev)] == ["eval_loss"]


# --------------------------------------------------------------- diagnostics
def _feed(diag, rows):
    raised = []
    for step, metrics in enumerate(rows, start=1):
        new, _cleared = diag.observe(step, metrics)
        raised += new
    return {d.code: d for d in raised}


def test_nan_loss_is_an_error_that_recommends_stopping():
    found = _feed(TrainingDiagnostics(100), [{"loss": 0.7}, {"loss": float("nan")}])
    note = found["non_finite_loss"]
    assert note.severity == "error" and note.stop_recommended
    assert "learning rate" in note.advice.lower()


def test_chosen_logps_falling_while_margin_rises_is_flagged():
    rows = [{"logps/chosen": -40.0 - 1.5 * i, "rewards/margins": 0.1 * i} for i in range(12)]
    found = _feed(TrainingDiagnostics(100), rows)
    assert "both_pushed_down" in found
    assert "beta" in found["both_pushed_down"].advice


def test_accuracy_at_one_from_the_start_is_flagged_but_not_later():
    early = _feed(TrainingDiagnostics(200), [{"rewards/accuracies": 1.0}] * 4)
    assert "too_easy" in early
    late = _feed(TrainingDiagnostics(200), [{"rewards/accuracies": 0.5}] * 40 + [{"rewards/accuracies": 1.0}] * 5)
    assert "too_easy" not in late


def test_flat_margins_are_flagged_and_withdrawn_when_they_move():
    diag = TrainingDiagnostics(100)
    found = _feed(diag, [{"rewards/margins": 0.001 * ((-1) ** i)} for i in range(30)])
    assert "margins_flat" in found
    cleared = []
    for step in range(31, 60):
        _new, gone = diag.observe(step, {"rewards/margins": 0.05 * (step - 30)})
        cleared += gone
    assert "margins_flat" in cleared
    assert "margins_flat" not in {d.code for d in diag.active()}


# ------------------------------------------------------------------- plots
def test_growing_series_ema_matches_a_plain_loop_and_skips_nan():
    from widgets.metric_plots import GrowingSeries, exponential_moving_average

    rng = np.random.default_rng(0)
    ys = rng.normal(size=3000)
    ys[[0, 10, 500]] = np.nan
    series = GrowingSeries(capacity=4)
    series.weight = 0.9
    for i, y in enumerate(ys):
        series.append(i, y)
    expected, prev = [], math.nan
    for y in ys:
        prev = (y if math.isnan(prev) else 0.9 * prev + 0.1 * y) if not math.isnan(y) else prev
        expected.append(prev)
    np.testing.assert_allclose(series.smoothed[: series.n], expected, equal_nan=True)
    np.testing.assert_allclose(exponential_moving_average(ys, 0.9), expected, equal_nan=True)


def test_growing_series_replaces_points_when_a_resumed_run_repeats_steps():
    from widgets.metric_plots import GrowingSeries

    series = GrowingSeries()
    for step in range(1, 11):
        series.append(step, float(step))
    series.append(6, 60.0)  # resumed from the checkpoint at step 5
    assert series.n == 6
    assert series.x[: series.n].tolist() == [1, 2, 3, 4, 5, 6]
    assert series.y[5] == 60.0


def test_plot_grid_creates_plots_for_the_keys_that_arrive(qtbot):
    from widgets.metric_plots import MetricPlotGrid

    grid = MetricPlotGrid(style_for_key)
    qtbot.addWidget(grid)
    grid.resize(900, 700)
    grid.show()
    events = [TrainLog(step=s, epoch=0.0, metrics={k: float(s) for k in EXPECTED_KEYS["dpo"]}, peak_memory_mb=10.0)
              for s in range(1, 6)]
    events.append(EvalLog(step=5, epoch=0.0, metrics={"loss": 0.3}))
    assert feed_events(grid, events) > 0
    assert grid.redraw_now() > 0
    ids = set(grid.plot_ids())
    assert {"loss", "margins", "rewards", "logps", "accuracy", "learning_rate", "grad_norm", "memory"} <= ids
    assert "nll_loss" not in ids  # ORPO-only plots do not appear for DPO
    for key in EXPECTED_KEYS["dpo"]:
        assert grid.series_length(key) == 5
    assert grid.series_length("eval_loss") == 1
    # Hover read-out: the title of each plot carries the values under the cursor.
    grid.show_readout_at(3)
    assert "step 3" in grid.hover_text("rewards") and "chosen 3" in grid.hover_text("rewards")
    grid.show_readout_at(math.nan)
    assert "step 3" not in grid.hover_text("rewards")
    # Linked step axes: zooming one plot shows the same steps on all of them.
    view = grid.plot_widget("loss").getPlotItem().getViewBox()
    view.setXRange(2, 4, padding=0)
    view.sigRangeChangedManually.emit([True, False])  # what a mouse drag or wheel emits
    assert grid.x_range("grad_norm") == pytest.approx((2, 4))
    assert grid.x_range("rewards") == pytest.approx((2, 4))
    grid.follow_all()  # clipped curves re-measure on the next turn, then the range settles
    qtbot.waitUntil(lambda: grid.x_range("rewards")[1] >= 5, timeout=2000)


def test_plot_grid_overlays_runs_in_their_own_colours(qtbot):
    from widgets.metric_plots import RUN_PALETTE, MetricPlotGrid

    grid = MetricPlotGrid(style_for_key)
    qtbot.addWidget(grid)
    grid.add_run("a", "run A")
    grid.add_run("b", "run B")
    for run in ("a", "b"):
        grid.add_points("loss", [1, 2, 3], [0.7, 0.6, 0.5], run=run)
    grid.redraw_now()
    assert grid.runs() == {"a": "run A", "b": "run B"}
    curves = grid._plots["loss"].curves
    assert curves[("a", "loss")].color.name() == RUN_PALETTE[0]
    assert curves[("b", "loss")].color.name() == RUN_PALETTE[1]
    grid.set_smoothing(0.8)
    assert curves[("a", "loss")].smooth.isVisible()


# --------------------------------------------------------------- other views
def test_config_form_is_generated_from_the_dataclass(qtbot):
    from backend.methods.dpo import DPORunConfig
    from backend.runs.config import to_dict, user_fields
    from widgets.config_form import ConfigForm

    form = ConfigForm()
    qtbot.addWidget(form)
    cfg = DPORunConfig()
    fields = [f for f in user_fields(cfg) if f.name not in ("model", "data_path", "column_map", "data_format")]
    form.build(fields, to_dict(cfg))
    beta = form.editor("beta")
    assert "reference" in beta.toolTip()  # the help text is the tooltip
    assert form.values()["beta"] == pytest.approx(0.1)
    assert form.values()["loss_type"] == "sigmoid"
    assert not form.advanced_section().is_expanded()
    form.editor("learning_rate").setText("fast")
    assert "learning_rate" in form.parse_problems()
    form.set_problems({"label_smoothing": "needs a value above 0"})
    assert form.shown_problems() == {"label_smoothing": "needs a value above 0"}
    assert form.advanced_section().is_expanded()  # a problem in a folded field unfolds it


def test_preview_table_elides_and_shows_full_text(qtbot):
    from widgets.preview_table import FULL_TEXT_ROLE, PreviewTable

    table = PreviewTable()
    qtbot.addWidget(table)
    long_text = "word " * 300 + "\nsecond line"
    table.set_rows([{"prompt": "hi", "chosen": long_text, "rejected": "no"}])
    index = table.model.index(0, 1)
    shown = table.model.data(index, Qt.ItemDataRole.DisplayRole)
    assert len(shown) < 300 and shown.endswith("…") and "\n" not in shown
    assert "second line" in table.model.data(index, Qt.ItemDataRole.ToolTipRole)
    assert table.model.data(index, FULL_TEXT_ROLE) == long_text
    table.select_cell(0, 1)
    assert table.detail.toPlainText() == long_text


def test_drop_zone_emits_the_dropped_path(qtbot, tmp_path):
    from widgets.drop_zone import DropZone

    zone = DropZone("Drop", "hint")
    qtbot.addWidget(zone)
    target = tmp_path / "data.jsonl"
    target.write_text("{}\n")
    with qtbot.waitSignal(zone.sig_path_chosen) as blocker:
        assert drop_paths(zone, [target])
    assert blocker.args == [str(target)]


def test_log_console_joins_partial_lines_and_keeps_last_progress_state(qtbot):
    from widgets.log_console import LogConsole

    console = LogConsole()
    qtbot.addWidget(console)
    console.append_text("loading mo")
    console.append_text("del\nprogress 10%\rprogress 50%\rprogress 100%\nhalf")
    assert console.toPlainText() == "loading model\nprogress 100%"
    console.flush()
    assert console.toPlainText().endswith("\nhalf")


def test_log_tailer_follows_a_growing_file_without_splitting_characters(qtbot, tmp_path):
    from app.log_tail import LogTailer

    path = tmp_path / "worker.log"
    path.write_bytes(b"")
    tailer = LogTailer(interval_ms=20)
    seen = []
    tailer.sig_text.connect(seen.append)
    tailer.follow(path)
    data = "step 1 ✓\n".encode()
    with path.open("ab") as fh:
        fh.write(data[:-3])  # cut inside the check mark
    tailer.poll()
    with path.open("ab") as fh:
        fh.write(data[-3:])
    qtbot.waitUntil(lambda: "".join(seen) == "step 1 ✓\n", timeout=2000)
    tailer.stop()


def test_notes_panel_orders_errors_first(qtbot):
    from widgets.notes_panel import NotesPanel

    panel = NotesPanel("Diagnostics", "nothing")
    qtbot.addWidget(panel)
    panel.add_note("a", "info", "An info", "text")
    panel.add_note("b", "error", "An error", "text", "do this")
    assert list(panel.notes()) == ["a", "b"]
    first = panel._list.itemAt(0).widget()
    assert first.title == "An error"
    panel.remove_note("b")
    assert list(panel.notes()) == ["a"]


def test_pyside_singleton_guard_keeps_none_alive():
    import sys

    from PySide6.QtCore import QObject

    import widgets  # noqa: F401  (applies the guard)

    probe = QObject()
    for _ in range(50_000):  # would abort Python 3.11 under PySide6 6.12 without the guard
        probe.setObjectName("x")
    assert sys.getrefcount(None) > 1000


# ------------------------------------------------------- plots a user can read
def _two_column_grid(qtbot, steps: int):
    from widgets.metric_plots import MetricPlotGrid

    grid = MetricPlotGrid(style_for_key)
    qtbot.addWidget(grid)
    grid.resize(680, 700)  # the live view's plot area beside the setup column: two columns
    grid.show()
    qtbot.waitExposed(grid)
    for step in range(1, steps + 1):
        grid.add_step(step, {"loss": 1.0 / step, "rewards/chosen": 0.1 * step, "rewards/rejected": -0.1 * step,
                             "rewards/margins": 0.2 * step})
    grid.add_step(steps, {"eval_loss": 0.9, "eval_rewards/chosen": 0.2, "eval_rewards/rejected": -0.2})
    grid.redraw_now()
    qtbot.wait(10)
    return grid


def _pixels_of(widget, colour: str) -> int:
    from PySide6.QtGui import QColor, QImage

    image = widget.grab().toImage().convertToFormat(QImage.Format.Format_RGB32)
    pixels = np.frombuffer(image.constBits(), dtype=np.uint8).reshape(image.height(), image.bytesPerLine() // 4, 4)
    want = QColor(colour)
    bgr = np.array([want.blue(), want.green(), want.red()], dtype=np.int16)
    return int((np.abs(pixels[:, :, :3].astype(np.int16) - bgr).sum(axis=2) < 40).sum())


def test_first_step_is_drawn_as_dots_in_the_middle_of_the_plot(qtbot):
    from app.train.metric_catalog import CHOSEN, TRAIN

    grid = _two_column_grid(qtbot, steps=1)
    curve = grid._plots["loss"].curves[("live", "loss")]
    assert curve.raw.opts["symbol"] == "o"
    assert grid.drawn_length("loss") == 1
    lo, hi = grid.x_range("loss")
    assert lo < 1 - 0.2 and hi > 1 + 0.2  # the step sits inside, not on the axis
    assert _pixels_of(grid.plot_widget("loss"), TRAIN) >= 12  # a dot, not empty axes
    assert _pixels_of(grid.plot_widget("rewards"), CHOSEN) >= 12
    # Once a curve has enough points to read as a line, the dots go (evaluations keep theirs).
    for step in range(2, 30):
        grid.add_step(step, {"loss": 1.0 / step})
    grid.redraw_now()
    assert curve.raw.opts["symbol"] is None
    assert grid._plots["loss"].curves[("live", "eval_loss")].raw.opts["symbol"] == "o"


def test_plot_keys_fit_in_a_two_column_grid(qtbot):
    grid = _two_column_grid(qtbot, steps=20)
    assert grid.width() // 2 < 360  # two columns of about 330 px
    for plot_id, names in (("rewards", ("chosen", "rejected", "eval")), ("loss", ("train", "eval"))):
        label = grid._plots[plot_id].item.titleLabel
        text = label.item.toPlainText()
        for name in names:
            assert name in text, (plot_id, text)
        # Every line of the title, key included, fits inside the plot: nothing is clipped.
        assert label.item.boundingRect().width() <= grid.plot_widget(plot_id).width() - 20, (plot_id, text)
        assert label.item.boundingRect().height() <= label.size().height() + 1


def _drag(qtbot, widget, start, end) -> None:
    from PySide6.QtCore import QPointF
    from PySide6.QtGui import QMouseEvent
    from PySide6.QtWidgets import QApplication

    viewport = widget.viewport()
    left, none = Qt.MouseButton.LeftButton, Qt.MouseButton.NoButton
    steps = [start + (end - start) * (i / 8) for i in range(9)]
    for kind, at, button, held in ([(QMouseEvent.Type.MouseButtonPress, steps[0], left, left)]
                                   + [(QMouseEvent.Type.MouseMove, p, none, left) for p in steps[1:]]
                                   + [(QMouseEvent.Type.MouseButtonRelease, steps[-1], left, none)]):
        pos = QPointF(at)
        event = QMouseEvent(kind, pos, QPointF(viewport.mapToGlobal(at)), button, held,
                            Qt.KeyboardModifier.NoModifier)
        QApplication.sendEvent(viewport, event)
        qtbot.wait(5)


def test_a_drag_on_one_plot_can_always_be_undone_on_all(qtbot):
    grid = _two_column_grid(qtbot, steps=30)
    widget = grid.plot_widget("loss")
    full = grid.x_range("rewards")
    assert grid.is_following()
    fit = grid._plots["rewards"].fit_button
    assert not fit.isVisible()

    centre = widget.rect().center()
    _drag(qtbot, widget, centre, centre + type(centre)(120, 0))
    assert not grid.is_following()
    assert grid.x_range("rewards") != pytest.approx(full)  # the drag moved every plot
    assert grid.x_range("rewards") == pytest.approx(grid.x_range("loss"))
    assert fit.isVisible()  # on every plot, not only the dragged one

    qtbot.mouseClick(fit, Qt.MouseButton.LeftButton)
    assert grid.is_following() and not fit.isVisible()
    grid.add_step(40, {"loss": 0.01, "rewards/chosen": 4.0})
    grid.redraw_now()
    assert grid.x_range("rewards")[1] >= 40  # following new steps again

    _drag(qtbot, widget, centre, centre + type(centre)(-120, 0))
    assert not grid.is_following()
    qtbot.mouseDClick(grid.plot_widget("margins").viewport(), Qt.MouseButton.LeftButton)
    assert grid.is_following()
    assert grid.x_range("margins")[1] >= 40


def test_method_dropdown_groups_methods_with_their_summary_and_keeps_reasons(qtbot, tmp_path):
    from app.train.method_settings_panel import MethodSettingsPanel
    from app.studio_settings import StudioSettings
    from backend.methods import grouped_methods
    from widgets.grouped_combo import DETAIL_ROLE

    panel = MethodSettingsPanel(StudioSettings(tmp_path / "settings.ini"))
    qtbot.addWidget(panel)
    combo = panel.method_combo
    rows = [(combo.is_header(i), combo.itemText(i), combo.itemData(i, DETAIL_ROLE))
            for i in range(combo.count())]
    expected = []
    for group, specs in grouped_methods():
        expected.append((True, group, None))
        expected += [(False, spec.title, spec.summary) for spec in specs]
    assert rows == expected
    headers = [i for i in range(combo.count()) if combo.is_header(i)]
    assert all(not combo.model().item(i).isEnabled() for i in headers)
    assert panel.description.text() == next(s.summary for _g, ss in grouped_methods() for s in ss
                                            if s.key == panel.method())

    panel.set_supported(["sft"], {"dpo": "DPO needs pairs of a chosen and a rejected answer"})
    items = {combo.itemData(i): combo.model().item(i) for i in range(combo.count()) if not combo.is_header(i)}
    assert items["sft"].isEnabled() and not items["dpo"].isEnabled()
    assert items["dpo"].toolTip().startswith("DPO needs pairs") and "not for this data" in items["dpo"].text()
    assert panel.method() == "sft" and combo.currentData() == "sft"
