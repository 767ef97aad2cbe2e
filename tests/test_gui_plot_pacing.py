"""A run's first step and its evaluations must not stall the window: plots are made one per
turn in a grid already tall enough for them (nothing made earlier moves or is re-titled),
an evaluation's new curves are attached a plot per turn, a frame's redraws wait for each
other's paint, no spare plot widget is built while a run goes on, and text that grows with
the run never widens the panel (which resized every plot at once)."""

from __future__ import annotations

import math
import time

import pytest

from app.train.metric_catalog import style_for_key

pytestmark = pytest.mark.gui

# What a DPO step logs (TRL 1.16) plus the two fields every TrainLog carries.
DPO_STEP = ("loss", "rewards/margins", "rewards/chosen", "rewards/rejected", "rewards/accuracies",
            "logps/chosen", "logps/rejected", "logits/chosen", "logits/rejected", "learning_rate",
            "grad_norm", "entropy", "mean_token_accuracy", "peak_memory_mb", "tokens_per_second")


def _grid(qtbot, width: int = 600, height: int = 520):
    from widgets.metric_plots import MetricPlotGrid

    grid = MetricPlotGrid(style_for_key, follow_headroom=0.25)
    qtbot.addWidget(grid)
    grid.resize(width, height)
    grid.show()
    qtbot.waitExposed(grid)
    return grid


def _step(grid, step: int, keys=DPO_STEP, prefix: str = "") -> None:
    grid.add_step(step, {prefix + key: 1.0 / step + i for i, key in enumerate(keys)})


def test_first_step_plots_arrive_one_per_turn_and_nothing_made_before_moves(qtbot):
    grid = _grid(qtbot)
    seen = {}  # plot id -> (geometry, title row height) each time a plot was added
    host_heights = {}  # plot id -> the grid host's height as it was added

    def added(_plot_id):
        for pid in grid.plot_ids():
            widget = grid.plot_widget(pid)
            row = grid._plots[pid].item.layout.rowMaximumHeight(0)
            seen.setdefault(pid, []).append((widget.geometry().getRect(), row))
        host_heights.setdefault(_plot_id, []).append(grid._grid_host.height())

    grid.sig_plot_added.connect(added)
    _step(grid, 1)
    # Nothing is made in the call that brought the keys: the window's turn ends first.
    assert grid.plot_ids() == [] and len(grid.pending_plot_ids()) == 12
    started = time.perf_counter()
    qtbot.waitUntil(lambda: not grid.pending_plot_ids(), timeout=10_000)
    qtbot.wait(100)
    # Every metric has its plot, in the catalogue's order, each drawn with its point.
    assert grid.plot_ids() == ["loss", "margins", "rewards", "accuracy", "logps", "token_accuracy", "logits",
                               "entropy", "learning_rate", "grad_norm", "memory", "throughput"]
    assert all(grid.drawn_length(key) == 1 for key in DPO_STEP)
    assert time.perf_counter() - started < 5
    host = grid._grid_host.height()
    final = {pid: (grid.plot_widget(pid).geometry().getRect(), 46) for pid in grid.plot_ids()}
    assert len({rect[2] for rect, _row in final.values()}) == 1  # one width for all
    for pid, records in seen.items():
        # Once laid out (the record made as it was added predates the layout), a plot stays
        # where it ends, at its final width, with the two-line title that the chosen/rejected
        # plot's key needs from the start.
        assert records[0][1] == 46, (pid, records[0])
        assert all(record == final[pid] for record in records[1:]), (pid, records)
    # The host was sized for all twelve plots when the first arrived: it did not grow a row at a time.
    rows = math.ceil(12 / grid._columns)
    assert grid._grid_host.minimumHeight() == rows * 220 - 10 <= host
    assert all(heights == [host] for heights in host_heights.values())


def test_an_evaluation_attaches_its_curves_one_plot_per_turn(qtbot):
    grid = _grid(qtbot)
    _step(grid, 1)
    qtbot.waitUntil(lambda: not grid.pending_plot_ids() and grid.drawn_length("loss") == 1, timeout=10_000)
    eval_keys = ("loss", "rewards/margins", "rewards/chosen", "rewards/rejected", "logps/chosen",
                 "logps/rejected", "logits/chosen", "logits/rejected")
    _step(grid, 2, eval_keys, prefix="eval_")
    assert grid.series_length("eval_loss") == 1
    assert all(grid.drawn_length("eval_" + key) == 0 for key in eval_keys)  # not in this call
    qtbot.waitUntil(lambda: all(grid.drawn_length("eval_" + key) == 1 for key in eval_keys), timeout=10_000)
    # Each joined its training twin's plot, and the legend names it.
    assert ("live", "eval_rewards/chosen") in grid._plots["rewards"].curves
    assert "eval" in grid.hover_text("loss")


def test_a_frame_paints_one_expensive_plot_per_turn(qtbot):
    grid = _grid(qtbot, height=700)
    _step(grid, 1, ("loss", "rewards/margins", "rewards/accuracies"))
    qtbot.waitUntil(lambda: not grid.pending_plot_ids() and grid.drawn_length("loss") == 1, timeout=10_000)
    qtbot.wait(150)
    for pid in grid.plot_ids():
        grid.plot_widget(pid).paint_seconds = 0.010  # a first paint of new points on a loaded machine
    grid.set_x_range(0, 10)  # the axis stays put: only the points change
    _step(grid, 2, ("loss", "rewards/margins", "rewards/accuracies"))
    grid._tick()
    drawn = [grid.drawn_length(k) for k in ("loss", "rewards/margins", "rewards/accuracies")]
    assert drawn == [2, 1, 1]  # one plot's worth of painting in this turn
    qtbot.waitUntil(lambda: grid.drawn_length("rewards/accuracies") == 2, timeout=5000)


def test_no_spare_plot_widget_is_built_while_the_pool_is_held(qtbot):
    from widgets.metric_plots import PlotWidgetPool

    pool = PlotWidgetPool()
    pool.REFILL_DELAY_MS = 20
    pool.IDLE_DELAY_MS = 5
    pool.reserve(3)
    qtbot.waitUntil(lambda: pool.available() == 3, timeout=10_000)
    pool.hold(True)
    taken = [pool.take(), pool.take()]
    qtbot.wait(300)
    assert pool.available() == 1  # nothing handed out during the hold was replaced
    pool.hold(False)
    qtbot.waitUntil(lambda: pool.available() == 3, timeout=10_000)
    for widget in taken:
        widget.deleteLater()
    pool.clear()


def test_the_live_view_holds_the_pool_for_a_run_and_its_text_never_widens_it(qtbot):
    from app.train.live_training_view import LiveTrainingView
    from backend.core.events import TrainLog
    from widgets.metric_plots import PLOT_POOL

    view = LiveTrainingView()
    qtbot.addWidget(view)
    view.show()
    view.ensure_plots()
    narrowest = view.minimumSizeHint().width()
    view.begin_run("dpo")
    assert PLOT_POOL.held()
    for step in (1, 12, 123):
        view.on_train_log(TrainLog(step=step, epoch=step / 7, metrics={"loss": 123.456789 / step},
                                   total_steps=12345, tokens_per_second=123456.7, seconds_per_step=12.5,
                                   eta_seconds=123456, elapsed_seconds=98765, peak_memory_mb=123456.0,
                                   memory_kind="gpu"))
        view.flush()
    assert "tokens/s" in view.stats_label.text() and len(view.stats_label.text()) > 60
    qtbot.waitUntil(lambda: "1 plots" in view.metric_count.text(), timeout=10_000)
    view.metric_count.setText("· 88 plots")
    assert view.minimumSizeHint().width() == narrowest
    view.on_idle()
    assert not PLOT_POOL.held()


def test_the_value_range_moves_only_when_the_points_need_it(qtbot):
    grid = _grid(qtbot)
    for step in range(1, 21):
        grid.add_step(step, {"loss": 1.0 - step / 40})
    grid.redraw_now()
    widget = grid.plot_widget("loss")

    def shown():
        widget.grab()  # a paint: the automatic fit runs just before it
        return tuple(widget.getPlotItem().getViewBox().viewRange()[1])

    first = shown()
    assert first[0] <= 0.5 and first[1] >= 0.975
    # A new lowest point still inside the range shown leaves it (and the value axis' picture)
    # alone; fitted exactly, the range would move down a little.
    grid.add_step(21, {"loss": 0.48})
    grid.redraw_now()
    assert shown() == first
    # One above it: the range takes it in, with room to spare.
    grid.add_step(22, {"loss": 3.0})
    grid.redraw_now()
    low, high = shown()
    assert low <= 0.5 and high > 3.0 + 0.05 * (3.0 - 0.5)
    # Zoomed in on steps whose values fill a fraction of that range, it fits them again.
    grid.set_x_range(2, 12)
    zoomed = shown()
    assert zoomed[1] < 1.2 and zoomed[0] > 0.4


def test_new_steps_on_the_axis_count_as_an_expensive_paint(qtbot):
    keys = ("loss", "rewards/margins", "rewards/accuracies")
    grid = _grid(qtbot, height=700)
    _step(grid, 1, keys)
    qtbot.waitUntil(lambda: not grid.pending_plot_ids() and grid.drawn_length("loss") == 1, timeout=10_000)
    qtbot.wait(150)
    for pid in grid.plot_ids():
        grid.plot_widget(pid).paint_seconds = 0.002  # new points inside the value range: cheap
    _step(grid, 100, keys)  # far past the headroom: every plot's step axis moves
    grid._tick()
    assert [grid.drawn_length(k) for k in keys] == [2, 1, 1]
    qtbot.waitUntil(lambda: grid.drawn_length("rewards/accuracies") == 2, timeout=5000)
