"""Long curves stay cheap and truthful: min/max decimation, at most a frame's worth of
redraws however fast points arrive, zoom and "fit all" on a 100,000-step run, and a
training worker that yields the CPU to the window."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import Qt

from app.train.metric_catalog import TRAIN, style_for_key
from widgets.peak_decimation import PeakPyramid, decimate

STEPS = 100_000


def _walk(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.cumsum(rng.normal(size=n)) * 0.01


def _brute_extremes(values: np.ndarray) -> tuple[float, float]:
    return float(np.nanmin(values)), float(np.nanmax(values))


def test_decimation_keeps_the_extremes_of_every_range_and_the_newest_point():
    x = np.arange(1, STEPS + 1, dtype=float)
    y = _walk(STEPS)
    y[54_321] = 40.0  # one spike, far above the walk
    y[77_000] = -40.0
    y[1000:3000] = np.nan  # a gap of 2,000 steps
    pyramid = PeakPyramid()
    # Grown in uneven chunks, as a live run delivers them, and decimated after each.
    for n in (1, 7, 500, 4097, 60_000, 77_001, STEPS):
        for lo, hi in ((0, n), (n // 3, n // 2 + 1), (max(0, n - 50), n)):
            out_x, out_y = decimate(x, y, n, pyramid, lo, hi, buckets=300)
            if hi - lo <= 600:
                assert np.array_equal(out_x, x[lo:hi], equal_nan=True)
                continue
            assert len(out_x) <= 2 * 301 + 3
            assert np.all(np.diff(out_x) >= 0)  # still a function of the step
            # The newest point as itself (NaN where the range ends in the gap).
            assert np.array_equal([out_x[-1], out_y[-1]], [x[hi - 1], y[hi - 1]], equal_nan=True)
            # Every value in the range lies within the drawn extremes, and the extremes are real values
            # of the range (blocks aligned to index 0 may reach up to a block before lo).
            if np.isnan(y[lo:hi]).all():
                continue  # a range inside the gap: nothing to keep
            block_start = lo - (lo % 65536)
            low, high = _brute_extremes(y[lo:hi])
            assert np.nanmin(out_y) <= low and np.nanmax(out_y) >= high
            wide_low, wide_high = _brute_extremes(y[block_start:hi])
            assert np.nanmin(out_y) >= wide_low and np.nanmax(out_y) <= wide_high
    out_x, out_y = decimate(x, y, STEPS, pyramid, 0, STEPS, buckets=300)
    assert np.nanmax(out_y) == 40.0 and np.nanmin(out_y) == -40.0
    assert np.isnan(out_y).any()  # a gap wider than two blocks stays a gap


def test_decimation_after_rewritten_values_matches_a_fresh_one():
    x = np.arange(1, 20_001, dtype=float)
    y = _walk(20_000)
    pyramid = PeakPyramid()
    decimate(x, y, 20_000, pyramid, 0, 20_000, buckets=100)
    # A resumed run replays from step 12,000 with other values; the smoothing can change them all.
    y[12_000:] = _walk(8000, seed=1) + 5
    pyramid.invalidate(12_000)
    again = decimate(x, y, 20_000, pyramid, 0, 20_000, buckets=100)
    fresh = decimate(x, y, 20_000, PeakPyramid(), 0, 20_000, buckets=100)
    assert np.array_equal(again[1], fresh[1])


def _grid(qtbot, width: int = 700):
    from widgets.metric_plots import MetricPlotGrid

    grid = MetricPlotGrid(style_for_key, follow_headroom=0.25)
    qtbot.addWidget(grid)
    grid.resize(width, 700)
    grid.show()
    qtbot.waitExposed(grid)
    return grid


def _rows_with_colour(widget, colour: str) -> np.ndarray:
    from PySide6.QtGui import QColor, QImage

    image = widget.grab().toImage().convertToFormat(QImage.Format.Format_RGB32)
    pixels = np.frombuffer(image.constBits(), dtype=np.uint8).reshape(image.height(), image.bytesPerLine() // 4, 4)
    want = QColor(colour)
    bgr = np.array([want.blue(), want.green(), want.red()], dtype=np.int16)
    return np.nonzero((np.abs(pixels[:, :, :3].astype(np.int16) - bgr).sum(axis=2) < 40).any(axis=1))[0]


def test_a_one_step_spike_in_100k_steps_is_drawn(qtbot):
    grid = _grid(qtbot)
    x = np.arange(1, STEPS + 1, dtype=float)
    y = 1.0 + 0.01 * np.sin(x / 300.0)
    y[54_321] = 3.0
    grid.add_points("loss", x, y)
    grid.redraw_now()
    qtbot.wait(20)
    curve = grid._plots["loss"].curves[("live", "loss")]
    drawn_x, drawn_y = curve.raw.getData()
    widget = grid.plot_widget("loss")
    assert len(drawn_x) <= 4 * widget.width()  # decimated to the pixels, not 100k points
    assert grid.drawn_length("loss") == STEPS
    assert drawn_y.max() == 3.0 and drawn_y.min() == pytest.approx(0.99, abs=1e-4)
    assert drawn_x[-1] == STEPS and drawn_y[-1] == y[-1]
    # On screen: the spike reaches far above the band the rest of the curve occupies.
    rows = _rows_with_colour(widget, TRAIN)
    assert len(rows) and rows.max() - rows.min() > 0.5 * widget.height()


def test_a_burst_of_points_is_redrawn_at_most_once_a_frame(qtbot):
    from widgets import metric_plots

    grid = _grid(qtbot)
    grid.add_step(1, {"loss": 1.0, "rewards/margins": 0.0})
    qtbot.waitUntil(lambda: grid.drawn_length("loss") == 1, timeout=5000)
    curve = grid._plots["loss"].curves[("live", "loss")]
    redraws = []
    original = curve.redraw

    def counted():
        redraws.append(time.perf_counter())
        original()

    curve.redraw = counted
    start = time.perf_counter()
    step = 1
    for _burst in range(100):  # 2,000 points in bursts of 20, as fast as the loop goes
        for _ in range(20):
            step += 1
            grid.add_step(step, {"loss": 1.0 / step, "rewards/margins": 0.01 * step})
        qtbot.wait(5)
    elapsed = time.perf_counter() - start
    frames = elapsed * 1000 / metric_plots.REDRAW_INTERVAL_MS
    assert 1 <= len(redraws) <= frames + 3, (len(redraws), frames)
    qtbot.waitUntil(lambda: grid.drawn_length("loss") == step, timeout=5000)


def test_zoom_into_a_long_run_shows_its_points_and_fit_all_returns_to_every_step(qtbot):
    grid = _grid(qtbot)
    x = np.arange(1, STEPS + 1, dtype=float)
    y = _walk(STEPS) + 10.0
    grid.add_points("loss", x, y)
    grid.redraw_now()
    curve = grid._plots["loss"].curves[("live", "loss")]
    assert len(curve.raw.getData()[0]) < 2000

    grid.set_x_range(50_000, 50_100)
    assert not grid.is_following()
    qtbot.waitUntil(lambda: not curve.dirty and 50_050.0 in curve.raw.getData()[0], timeout=5000)
    drawn_x, drawn_y = curve.raw.getData()
    inside = (drawn_x >= 50_000) & (drawn_x <= 50_100)
    assert np.array_equal(drawn_x[inside], x[49_999:50_100])  # every step, not buckets
    # The values scale to the steps shown, not to the whole run.
    qtbot.wait(60)
    low, high = grid._plots["loss"].item.getViewBox().viewRange()[1]
    shown = y[49_999:50_100]
    assert low <= shown.min() and high >= shown.max()
    assert high - low < 0.5 * (y.max() - y.min())

    qtbot.mouseClick(grid._plots["loss"].fit_button, Qt.MouseButton.LeftButton)
    assert grid.is_following()
    lo, hi = grid.x_range("loss")
    assert lo <= 1 and hi >= STEPS
    qtbot.waitUntil(lambda: not curve.dirty and len(curve.raw.getData()[0]) < 2000, timeout=5000)
    assert curve.raw.getData()[1].max() == y.max()


def test_a_training_worker_runs_below_the_window(tmp_path):
    """The window lowers a worker it starts below its own priority, thread by thread, and the
    worker shares the window's scheduling group (where the kernel groups processes by session,
    a nice value ranks a process only within its group), in a process group of its own (a
    Ctrl-C in a terminal reaches the caller alone)."""
    from app.train.training_supervisor import WORKER_NICENESS, lower_priority
    from backend.training.client import spawn_worker

    code = "import threading, time; threading.Thread(target=time.sleep, args=(30,)).start(); time.sleep(30)"
    process = spawn_worker([sys.executable, "-c", code], dict(os.environ), tmp_path / "worker.log")
    try:
        tasks = Path(f"/proc/{process.pid}/task")
        deadline = time.time() + 10
        while len(os.listdir(tasks)) < 2 and time.time() < deadline:
            time.sleep(0.02)
        lower_priority(process.pid)
        own = os.getpriority(os.PRIO_PROCESS, 0)
        for tid in os.listdir(tasks):
            assert os.getpriority(os.PRIO_PROCESS, int(tid)) >= min(19, own + WORKER_NICENESS), tid
        assert os.getpgid(process.pid) == process.pid != os.getpgid(0)
        assert os.getsid(process.pid) == os.getsid(0)
        # Where autogrouping is off the file exists but reads empty (CI's kernel): nothing to share.
        group = Path(f"/proc/{process.pid}/autogroup")
        theirs = group.read_text().split() if group.exists() else []
        ours = Path("/proc/self/autogroup").read_text().split() if theirs else []
        if theirs and ours:
            assert theirs[0] == ours[0]
    finally:
        process.kill()
        process.wait()


def test_dragging_the_smoothing_slider_re_smooths_once_it_pauses(qtbot):
    from app.train.live_training_view import LiveTrainingView

    view = LiveTrainingView()
    qtbot.addWidget(view)
    view.begin_run("dpo")
    grid = view.plots
    grid.add_points("loss", np.arange(1, 1001, dtype=float), _walk(1000))
    calls = []
    original = grid.set_smoothing
    grid.set_smoothing = lambda weight: (calls.append(weight), original(weight))
    for value in range(10, 90, 2):  # a drag: forty values in quick succession
        view.smoothing.setValue(value)
    assert view.smoothing_value.text() == "0.88"  # the number follows the slider at once
    qtbot.waitUntil(lambda: len(calls) > 0, timeout=2000)
    qtbot.wait(150)
    assert calls == [0.88]
    assert grid.smoothing() == pytest.approx(0.88)
    view.on_idle()
