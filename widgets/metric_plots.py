"""A grid of live line plots, one per metric family, fed point by point.

The grid knows nothing about training: a ``style_for_key`` callback tells it
which plot a key belongs on and how to draw it. Points land in growing numpy
buffers and a timer redraws only what changed, about 20 times a second, so a
stream of thousands of points per second costs one ``setData`` per curve per
frame rather than one per point. Long curves are drawn as the min and max of
each pixel column over the visible steps (kept incrementally, see
``widgets.peak_decimation``), which keeps 100,000-point curves cheap to draw and
every spike on screen.

Several runs can share the grid (an overlay): each run then gets its own
colour and the series within a run are told apart by line style.
"""

from __future__ import annotations

import math
import time
from typing import Callable

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, QPoint, QPointF, QRect, Qt, QTimer, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QApplication,
    QGraphicsItem,
    QGridLayout,
    QLabel,
    QScrollArea,
    QSizePolicy,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from widgets.peak_decimation import PeakPyramid, decimate
from widgets.series_style import SeriesStyle

REDRAW_INTERVAL_MS = 50
# After a slice of redrawing, the next one waits for its paint and then this long (the loop
# gets to input and timers in between), or at most PAINT_WAIT_MS for a paint that never comes.
PAINT_GAP_MS = 3
PAINT_WAIT_MS = 60
RANGE_PAINT_SECONDS = 0.008  # a plot's paint after its step range changed (axes re-rendered)
RUN_PALETTE = ("#2563eb", "#ea580c", "#7c3aed", "#0d9488", "#db2777", "#a16207", "#4d7c0f", "#475569")
_PEN_STYLES = {"solid": Qt.PenStyle.SolidLine, "dash": Qt.PenStyle.DashLine, "dot": Qt.PenStyle.DotLine}
# A curve with this many points or fewer is drawn with a dot on each: a line needs two
# points, so after the first logged step a plain line shows nothing at all.
SPARSE_POINTS = 12
# Title rows: one line (the title) or two (the title, then the key of the series drawn).
_TITLE_ROW = {1: 30, 2: 46}


class GrowingSeries:
    """x/y buffers that double in capacity, plus an incrementally kept EMA.

    The EMA is updated per appended point (O(1)), and rebuilt in full only when
    the smoothing weight changes. Each buffer keeps the block minima and maxima a
    redraw decimates with; appending leaves them valid, rewriting invalidates them.
    """

    def __init__(self, capacity: int = 256):
        self.x = np.empty(capacity, dtype=np.float64)
        self.y = np.empty(capacity, dtype=np.float64)
        self.smoothed = np.empty(capacity, dtype=np.float64)
        self.n = 0
        self.weight = 0.0
        self._last_smoothed = math.nan
        self.y_peaks = PeakPyramid()
        self.smoothed_peaks = PeakPyramid()

    def __len__(self) -> int:
        return self.n

    def _grow(self, needed: int) -> None:
        capacity = len(self.x)
        if needed <= capacity:
            return
        while capacity < needed:
            capacity *= 2
        for name in ("x", "y", "smoothed"):
            old = getattr(self, name)
            new = np.empty(capacity, dtype=np.float64)
            new[: self.n] = old[: self.n]
            setattr(self, name, new)

    def append(self, x: float, y: float) -> None:
        if self.n and x <= self.x[self.n - 1]:
            # A resumed run replays from its checkpoint: the new points replace
            # the old ones from that step on instead of drawing a line backwards.
            self.truncate_from(x)
        self._grow(self.n + 1)
        y = float(y)
        if not math.isfinite(y):
            y = math.nan  # inf would wreck auto-range; NaN leaves a gap
        self.x[self.n] = x
        self.y[self.n] = y
        self.smoothed[self.n] = self._next_smoothed(y)
        self.n += 1

    def load(self, xs: np.ndarray, ys: np.ndarray) -> None:
        """Fill an empty series at once (steps strictly increasing)."""
        n = len(xs)
        self._grow(max(n, 1))
        self.x[:n] = xs
        ys = np.where(np.isfinite(ys), ys, np.nan)
        self.y[:n] = ys
        self.smoothed[:n] = exponential_moving_average(ys, self.weight) if self.weight > 0 else ys
        self.n = n
        self._last_smoothed = self._recompute_last()
        self.y_peaks.invalidate(0)
        self.smoothed_peaks.invalidate(0)

    def extend(self, xs, ys) -> None:
        for x, y in zip(xs, ys):
            self.append(float(x), float(y))

    def truncate_from(self, x: float) -> None:
        self.n = int(np.searchsorted(self.x[: self.n], x, side="left"))
        self._last_smoothed = self._recompute_last()
        self.y_peaks.invalidate(self.n)
        self.smoothed_peaks.invalidate(self.n)

    def _recompute_last(self) -> float:
        if self.n == 0:
            return math.nan
        return float(self.smoothed[self.n - 1])

    def _next_smoothed(self, y: float) -> float:
        prev = self._last_smoothed
        if math.isnan(y):
            value = prev
        elif math.isnan(prev):
            value = y
        else:
            value = self.weight * prev + (1.0 - self.weight) * y
        self._last_smoothed = value
        return value

    def set_weight(self, weight: float) -> None:
        if weight == self.weight:
            return
        self.weight = weight
        self.smoothed[: self.n] = exponential_moving_average(self.y[: self.n], weight)
        self._last_smoothed = self._recompute_last()
        self.smoothed_peaks.invalidate(0)

    def value_at(self, x: float) -> tuple[float, float] | None:
        """The last point at or before ``x`` (the value a step-wise reader expects)."""
        if self.n == 0:
            return None
        i = int(np.searchsorted(self.x[: self.n], x, side="right")) - 1
        if i < 0:
            return None
        return float(self.x[i]), float(self.smoothed[i] if self.weight > 0 else self.y[i])


class _Curve:
    """The one or two plot items (raw and smoothed) that draw one series.

    A long series is decimated here, not by pyqtgraph (see ``widgets.peak_decimation``):
    the curve gets the min and max of each pixel column over the visible steps plus a
    view's width on either side, so a pan shows drawn curve while the redraw follows.
    """

    def __init__(self, plot: pg.PlotItem, style: SeriesStyle, series: GrowingSeries, color: str):
        self.style = style
        self.series = series
        self.dirty = True
        self.drawn_n = 0  # points of the series the items show (decimated or not)
        self.drawn_window: tuple[float, float, float] | None = None  # steps covered, pixels per step
        self.color = QColor(color)
        self.raw = plot.plot([], [], connect="finite")
        self.smooth = plot.plot([], [], connect="finite")
        for item in (self.raw, self.smooth):
            # Its default re-runs the item's display pipeline at every y-range change; the
            # y range always fits the data, so points are never far enough off to need it.
            item.setDynamicRangeLimit(None)
        self.smooth.setVisible(False)
        self.dotted = False
        self.set_color(self.color)
    def set_color(self, color: QColor) -> None:
        self.color = QColor(color)
        line = _PEN_STYLES[self.style.line]
        self.full_pen = pg.mkPen(self.color, width=2 if not self.style.markers else 1.6, style=line)
        faint = QColor(self.color)
        faint.setAlpha(70)
        self.faint_pen = pg.mkPen(faint, width=1, style=line)
        self.smooth.setPen(self.full_pen)
        self._show_dots(self.dotted)
        self.raw.setPen(self.faint_pen if self.smooth.isVisible() else self.full_pen)

    def _show_dots(self, sparse: bool) -> None:
        """Evaluation series always carry dots; others only while they have few points."""
        self.dotted = sparse or self.style.markers
        if self.dotted:
            self.raw.setSymbol("o")
            self.raw.setSymbolSize(5 if self.style.markers else 6)
            self.raw.setSymbolBrush(self.color)
            self.raw.setSymbolPen(None)
        else:
            self.raw.setSymbol(None)

    def apply_smoothing(self, weight: float) -> None:
        use = weight > 0 and self.style.smooth and not self.style.markers
        self.series.set_weight(weight if use else 0.0)
        self.raw.setPen(self.faint_pen if use else self.full_pen)
        self.smooth.setVisible(use)
        self.dirty = True

    def redraw(self) -> None:
        n = self.series.n
        if (n <= SPARSE_POINTS) != self.dotted and not self.style.markers:
            self._show_dots(n <= SPARSE_POINTS)
        lo, hi, buckets = self._window(n)
        self.raw.setData(*decimate(self.series.x, self.series.y, n, self.series.y_peaks, lo, hi, buckets))
        if self.smooth.isVisible():
            self.smooth.setData(*decimate(self.series.x, self.series.smoothed, n, self.series.smoothed_peaks,
                                          lo, hi, buckets))
        self.drawn_n = n
        self.dirty = False

    def _window(self, n: int) -> tuple[int, int, int]:
        """Index range to draw (the view and a view's width either side) and pixel columns for it."""
        view = self.raw.getViewBox()
        if view is None or n < 2:
            return 0, n, max(n, 1)
        (left, right), pixels = view.viewRange()[0], max(view.width(), 100.0)
        span = max(right - left, 1e-9)
        x = self.series.x[:n]
        lo = max(0, int(np.searchsorted(x, left - span, side="left")) - 1)
        hi = min(n, int(np.searchsorted(x, right + span, side="right")) + 1)
        per_step = pixels / span
        self.drawn_window = (left - span, right + span, per_step)
        return lo, hi, max(1, int(math.ceil((x[hi - 1] - x[lo]) * per_step)))

    def view_changed(self, left: float, right: float, pixels: float) -> None:
        """The plot's step range or width changed: redraw if the drawn points no longer cover
        the view, or are now too coarse or needlessly fine for it."""
        window = self.drawn_window
        if window is None or self.dirty:
            return
        per_step = max(pixels, 100.0) / max(right - left, 1e-9)
        if left < window[0] or right > window[1] or not 0.5 <= per_step / window[2] <= 2.0:
            self.dirty = True


class _TimedPlotWidget(pg.PlotWidget):
    """A PlotWidget that remembers how long it takes to paint new points (an EMA, in seconds).

    Only the paint after a redraw counts: the layout repaints plots whose picture is
    cached (under a millisecond) far more often, and averaging those in made a redraw
    look cheap enough to put three plots (30 ms of painting) in one turn.
    """

    paint_seconds = 0.008
    redrawn = False  # set by the grid when it pushes new points; the next paint is timed
    on_painted: Callable[[], None] | None = None  # called after that paint

    def paintEvent(self, event):
        start = time.perf_counter()
        super().paintEvent(event)
        if self.redrawn:
            self.redrawn = False
            self.paint_seconds = 0.7 * self.paint_seconds + 0.3 * (time.perf_counter() - start)
            if self.on_painted is not None:
                self.on_painted()


def plot_title(item: pg.PlotItem, html: str, justify: str = "left", lines: int = 1) -> None:
    """Set a plot's title without letting a long one widen the plot.

    pyqtgraph gives a title label a minimum width equal to its text, so a long
    title (a key, or values under the cursor) pushes the plot past its widget and
    the right part of the curves ends up cut off. The text is clipped instead, at
    its end: titles are left-aligned so that what is cut is the end, not the name.
    ``lines`` (1 or 2) sizes the title row; plots side by side use the same, so
    their axes line up.
    """
    item.setTitle(html, size="9pt", color="#1f2937", justify=justify)
    height = _TITLE_ROW[lines]
    item.titleLabel.setMaximumHeight(height)
    item.layout.setRowFixedHeight(0, height)
    label = item.titleLabel
    if not getattr(label, "_keeps_narrow", False):
        label.updateMin = lambda lab=label: lab.setMinimumHeight(lab.item.boundingRect().height())
        label._keeps_narrow = True
    label.setMinimumWidth(0)
    label.setFlag(QGraphicsItem.GraphicsItemFlag.ItemClipsChildrenToShape, True)


class _QuietAxis(pg.AxisItem):
    """An axis that re-typesets its label only when the label's text changes.

    pyqtgraph sets the label's HTML again at every range change (for the SI prefix),
    ~0.4 ms each; with a dozen plots whose y range follows every new point that was
    a good part of each frame.
    """

    _shown_label = None

    def _updateLabel(self):
        text = self.labelString()
        if text != self._shown_label:
            self._shown_label = text
            super()._updateLabel()
        else:
            self.picture = None
            self.update()


class _SteadyViewBox(pg.ViewBox):
    """A view whose automatic value range moves only when the points need it to.

    pyqtgraph fits the range to the points exactly, so nearly every new point moved it a
    little, and a moved range re-renders the value axis (labels and grid lines, 3-8 ms of
    a 4-10 ms paint). Here a fitted range that lies inside the one shown and fills at least
    half of it leaves the range alone; one that does not is widened by a margin, so the next
    few points usually fit too.
    """

    MARGIN = 0.08  # of the points' span, added above and below when the range must change

    def setRange(self, rect=None, xRange=None, yRange=None, padding=None, update=True, disableAutoRange=True):
        if self._updatingRange and yRange is not None and rect is None:  # the automatic fit
            lo, hi = yRange
            shown_lo, shown_hi = self.viewRange()[1]
            span = hi - lo
            if shown_lo <= lo and hi <= shown_hi and span >= 0.5 * (shown_hi - shown_lo):
                yRange = None
                if xRange is None:
                    return
            elif span > 0:
                yRange = (lo - self.MARGIN * span, hi + self.MARGIN * span)
        super().setRange(rect, xRange, yRange, padding, update, disableAutoRange)


def _new_plot_widget() -> _TimedPlotWidget:
    # Without a menu from the start: the view's context menu, built and then disabled, was
    # half of the ~20 ms a plot widget takes to build.
    widget = _TimedPlotWidget(background="w", enableMenu=False, viewBox=_SteadyViewBox(enableMenu=False),
                              axisItems={side: _QuietAxis(side) for side in ("left", "bottom")})
    widget.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
    item = widget.getPlotItem()
    item.showGrid(x=True, y=True, alpha=0.15)
    item.setMenuEnabled(False)
    item.hideButtons()
    for side in ("left", "bottom"):
        axis = item.getAxis(side)
        axis.setPen(pg.mkPen("#cbd5e1"))
        axis.setTextPen(pg.mkPen("#475569"))
        # Replaying an axis' tick labels costs ~3 ms per paint; a cached pixmap is a
        # blit until the axis' range really changes.
        axis.setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
    item.getAxis("left").setWidth(48)  # equal widths line the step axes up across plots
    return widget


class PlotWidgetPool:
    """Plot widgets built ahead of need, one per idle moment.

    A pyqtgraph PlotWidget takes 10-40 ms to build (its hidden options form is
    widgets too, each styled), so a first logged step that brings a dozen
    metrics would otherwise stall the window for a second or more. Widgets are
    built while nothing happens (right after the window opens) and handed out
    when the metrics arrive; a drained pool refills itself the same way.
    """

    IDLE_DELAY_MS = 40
    # After plots were handed out, their run is starting: its first steps create and paint
    # them, and a refill build (10-20 ms each) in between would add to those turns.
    REFILL_DELAY_MS = 1500

    def __init__(self):
        self._ready: list[_TimedPlotWidget] = []
        self._target = 0
        self._timer: QTimer | None = None
        self._held = False
        self._taken_while_held = 0

    def hold(self, held: bool) -> None:
        """While ``held`` (a live run), replace nothing handed out: a build is a 10-20 ms turn
        while the worker holds every core. Widgets not yet built for the run's first step still
        are (it takes them next); the rest wait until the hold ends."""
        self._held = held
        if not held:
            self._taken_while_held = 0
            self._schedule()

    def held(self) -> bool:
        return self._held

    def reserve(self, count: int) -> None:
        self._target = max(self._target, count)
        self._schedule()

    def available(self) -> int:
        return len(self._ready)

    def take(self) -> _TimedPlotWidget:
        widget = self._ready.pop() if self._ready else _new_plot_widget()
        if self._held:
            self._taken_while_held += 1
        else:
            self._schedule(self.REFILL_DELAY_MS)
        return widget

    def _schedule(self, delay_ms: int | None = None) -> None:
        if len(self._ready) >= self._target - self._taken_while_held:
            return
        if self._timer is None:
            app = QApplication.instance()
            self._timer = QTimer(app)  # owned by the application, so it dies on its thread
            self._timer.setSingleShot(True)
            self._timer.timeout.connect(self._build_one)
            app.aboutToQuit.connect(self.clear)
        if delay_ms is not None:
            self._timer.start(delay_ms)  # (re)started: handing out several plots defers the refill
        elif not self._timer.isActive():
            self._timer.start(self.IDLE_DELAY_MS)

    def _build_one(self) -> None:
        if len(self._ready) < self._target - self._taken_while_held:
            self._ready.append(_new_plot_widget())
        self._schedule()

    def clear(self) -> None:
        self._target = 0
        for widget in self._ready:
            widget.deleteLater()
        self._ready.clear()


PLOT_POOL = PlotWidgetPool()


class _MetricPlot:
    def __init__(self, widget: pg.PlotWidget, style: SeriesStyle):
        self.widget = widget
        self.item: pg.PlotItem = widget.getPlotItem()
        self.title = style.plot_title
        self.order = style.order
        self.curves: dict[tuple[str, str], _Curve] = {}
        self.title_html = f"<b>{_escape(style.plot_title)}</b>"
        self.has_key = False  # the title's second line names the series drawn
        self.fit_button: QToolButton | None = None
        self.range_dirty = False  # the shared step range changed since this plot was drawn
        self.cursor = pg.InfiniteLine(angle=90, movable=False,
                                      pen=pg.mkPen("#94a3b8", width=1, style=Qt.PenStyle.DashLine))
        self.cursor.setVisible(False)
        self.item.addItem(self.cursor, ignoreBounds=True)


class MetricPlotGrid(QWidget):
    """Live plots for whatever metric keys arrive, laid out in a responsive grid.

    Points are stored as soon as they arrive; the widgets that show them are
    created one plot per event-loop turn (a plot costs ~25 ms to build and
    paint, and a first step that brings a dozen metrics must not freeze the
    window), and curves are redrawn within a time budget per turn, visible
    plots only.
    """

    sig_plot_added = Signal(str)
    """A plot was created because a key for it arrived for the first time; carries the plot id."""

    sig_hover_changed = Signal(float)
    """The pointer moved over a plot; carries the step under it (NaN when it left)."""

    sig_following_changed = Signal(bool)
    """False once the user zoomed or panned (the plots stop following new steps), True
    when every plot shows all steps again."""

    def __init__(
        self,
        style_for_key: Callable[[str], SeriesStyle | None],
        parent: QWidget | None = None,
        min_plot_width: int = 300,
        plot_height: int = 210,
        empty_text: str = "Plots appear here as metrics arrive.",
        frame_budget_ms: float = 12.0,
        follow_headroom: float = 0.0,
        prebuild_plots: int = 0,
    ):
        super().__init__(parent)
        self._style_for_key = style_for_key
        self._min_plot_width = min_plot_width
        self._plot_height = plot_height
        self._budget = frame_budget_ms / 1000
        self._plots: dict[str, _MetricPlot] = {}
        self._series: dict[tuple[str, str], GrowingSeries] = {}  # (run, key) -> data, with or without a plot
        self._series_style: dict[tuple[str, str], SeriesStyle] = {}
        self._curves: dict[tuple[str, str], _Curve] = {}
        self._styles: dict[str, SeriesStyle | None] = {}
        self._pending_plots: dict[str, SeriesStyle] = {}  # plot id -> style, waiting for a widget
        # New series of plots that exist, waiting for their curves (an evaluation brings a
        # dozen at once, ~3 ms each: attached one plot per turn).
        self._pending_curves: list[tuple[str, str]] = []
        self._runs: dict[str, str] = {}  # run id -> label, in insertion order
        self._run_colors: dict[str, str] = {}
        self._smoothing = 0.0
        self._columns = 2
        self._hover_step = math.nan
        self._title_lines = 1  # 2 once any plot carries a key: rows side by side stay aligned
        self._x_range: tuple[float, float] | None = None  # set while the user has zoomed or panned
        self._frame: list[str] = []  # plot ids the current frame has still to look at
        self._awaiting_paint = False  # the next slice waits for the last one's paint
        # Following a live run, the step axis is extended in jumps (headroom), not at every
        # step: a changed range makes every axis re-render its labels.
        self._headroom = follow_headroom
        self._step_span: tuple[float, float] | None = None  # first and last step of all data
        self._shown_span: tuple[float, float] | None = None  # step range the plots show
        self._shown_from: float | None = None  # the first step when _shown_span was chosen

        self._empty = QLabel(empty_text)
        self._empty.setObjectName("emptyState")
        self._empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self._empty.setWordWrap(True)

        self._run_legend = QLabel()
        self._run_legend.setObjectName("runLegend")
        self._run_legend.setTextFormat(Qt.TextFormat.RichText)
        self._run_legend.setWordWrap(True)
        self._run_legend.setVisible(False)

        self._grid_host = QWidget()
        self._grid_host.setObjectName("plotGridHost")
        self._grid = QGridLayout(self._grid_host)
        self._grid.setContentsMargins(0, 0, 0, 0)
        self._grid.setSpacing(10)
        self._column_marks: list[QWidget] = []
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        scroll.setWidget(self._grid_host)
        # A scroll bar that appears when the grid outgrows the view would narrow, and so
        # re-render, every plot at once; keep it always there.
        scroll.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOn)
        scroll.setVisible(False)
        self._scroll = scroll

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(6)
        layout.addWidget(self._run_legend)
        layout.addWidget(self._empty, 1)
        layout.addWidget(scroll, 1)

        self._timer = QTimer(self)
        self._timer.setInterval(REDRAW_INTERVAL_MS)
        self._timer.timeout.connect(self._tick)
        self._timer.start()
        self._continue = QTimer(self)
        self._continue.setSingleShot(True)
        self._continue.setInterval(0)
        self._continue.timeout.connect(self._go_on)
        if prebuild_plots:
            PLOT_POOL.reserve(prebuild_plots)

    # ------------------------------------------------------------------ data
    def add_run(self, run: str, label: str = "") -> None:
        """Declare a run before its points arrive, so its colour and legend entry are stable."""
        if run not in self._runs:
            self._runs[run] = label or run
            self._run_colors[run] = RUN_PALETTE[(len(self._runs) - 1) % len(RUN_PALETTE)]
            self._update_run_legend()
            if len(self._runs) > 1:
                self._recolor_for_overlay()

    def add_point(self, key: str, step: float, value: float, run: str = "live") -> bool:
        """Append one point; returns False when the key is not plotted."""
        series = self._series.get((run, key)) or self._new_series(key, run)
        if series is None:
            return False
        series.append(float(step), value)
        self._note_steps(float(step), float(step))
        curve = self._curves.get((run, key))
        if curve is not None:
            curve.dirty = True
        return True

    def add_step(self, step: float, values: dict[str, float], run: str = "live") -> int:
        """Append the values of several keys logged at one step; returns how many are plotted."""
        step = float(step)
        added = 0
        for key, value in values.items():
            series = self._series.get((run, key)) or self._new_series(key, run)
            if series is None:
                continue
            series.append(step, value)
            curve = self._curves.get((run, key))
            if curve is not None:
                curve.dirty = True
            added += 1
        if added:
            self._note_steps(step, step)
        return added

    def add_points(self, key: str, steps, values, run: str = "live") -> bool:
        series = self._series.get((run, key)) or self._new_series(key, run)
        if series is None:
            return False
        steps = np.asarray(steps, dtype=np.float64)
        values = np.asarray(values, dtype=np.float64)
        if series.n == 0 and len(steps) and np.all(np.diff(steps) > 0):
            series.load(steps, values)  # vectorised: reopening a 100,000-step run stays quick
        else:
            series.extend(steps, values)
        if len(steps):
            self._note_steps(float(steps.min()), float(steps.max()))
        curve = self._curves.get((run, key))
        if curve is not None:
            curve.dirty = True
        return True

    def set_style_for_key(self, style_for_key: Callable[[str], SeriesStyle | None]) -> None:
        """Look up plots and colours with ``style_for_key`` from now on (a run of another kind);
        call before the first points of that run."""
        self._style_for_key = style_for_key
        self._styles.clear()

    def _new_series(self, key: str, run: str) -> GrowingSeries | None:
        if key not in self._styles:
            self._styles[key] = self._style_for_key(key)
        style = self._styles[key]
        if style is None:
            return None
        self.add_run(run)
        series = GrowingSeries()
        series.weight = self._smoothing if style.smooth and not style.markers else 0.0
        self._series[(run, key)] = series
        self._series_style[(run, key)] = style
        if style.plot_id in self._plots:
            self._pending_curves.append((run, key))
        else:
            self._pending_plots.setdefault(style.plot_id, style)
        if not self._continue.isActive():
            self._continue.start(0)
        return series

    def clear(self) -> None:
        for plot in self._plots.values():
            # The hover proxy (a QObject with a timer) dies with its widget; dropping the
            # Python side breaks the reference cycle through its slot.
            plot.proxy.disconnect()
            plot.proxy = None
            self._grid.removeWidget(plot.widget)
            plot.widget.setParent(None)
            plot.widget.deleteLater()
        self._plots.clear()
        self._grid_host.setMinimumHeight(0)
        self._series.clear()
        self._series_style.clear()
        self._curves.clear()
        self._pending_plots.clear()
        self._pending_curves.clear()
        self._runs.clear()
        self._run_colors.clear()
        self._hover_step = math.nan
        self._title_lines = 1
        following = self._x_range is None
        self._x_range = None
        self._step_span = None
        self._shown_span = None
        self._update_run_legend()
        if not following:
            self.sig_following_changed.emit(True)
        self._empty.setVisible(True)
        self._scroll.setVisible(False)

    def set_smoothing(self, weight: float) -> None:
        """EMA weight in [0, 1): 0 draws the raw points, 0.9 follows the trend of ~10 points."""
        weight = min(max(float(weight), 0.0), 0.999)
        self._smoothing = weight
        for (run, key), series in self._series.items():
            curve = self._curves.get((run, key))
            if curve is not None:
                curve.apply_smoothing(weight)
            else:
                style = self._series_style[(run, key)]
                series.set_weight(weight if style.smooth and not style.markers else 0.0)

    def smoothing(self) -> float:
        return self._smoothing

    # -------------------------------------------------------------- queries
    def plot_ids(self) -> list[str]:
        return [pid for pid, _ in sorted(self._plots.items(), key=lambda kv: (kv[1].order, kv[1].title))]

    def pending_plot_ids(self) -> list[str]:
        return list(self._pending_plots)

    def plot_widget(self, plot_id: str) -> pg.PlotWidget:
        return self._plots[plot_id].widget

    def keys(self, run: str | None = None) -> list[str]:
        return [k for (r, k) in self._series if run is None or r == run]

    def series_length(self, key: str, run: str = "live") -> int:
        series = self._series.get((run, key))
        return len(series) if series is not None else 0

    def series_data(self, key: str, run: str = "live") -> tuple[np.ndarray, np.ndarray]:
        series = self._series.get((run, key))
        if series is None:
            return np.empty(0), np.empty(0)
        return series.x[: series.n].copy(), series.y[: series.n].copy()

    def drawn_length(self, key: str, run: str = "live") -> int:
        """How many points of the series the curve on screen shows, decimated or not
        (0 before its plot exists)."""
        curve = self._curves.get((run, key))
        return 0 if curve is None else curve.drawn_n

    def runs(self) -> dict[str, str]:
        return dict(self._runs)

    def hover_text(self, plot_id: str) -> str:
        return self._plots[plot_id].item.titleLabel.text

    # --------------------------------------------------------------- drawing
    def redraw_now(self) -> int:
        """Create every pending plot and push every changed buffer to its curve, visible or not.

        The timer does the same work in budgeted slices; this is for callers that
        need the screen up to date at once (tests, screenshots, benchmarks).
        """
        while self._pending_plots:
            self._create_next_plot()
        while self._pending_curves:
            self._attach_pending_curves()
        self._follow_steps()
        count = 0
        for plot in self._plots.values():
            self._apply_span(plot)
            for curve in plot.curves.values():
                if curve.dirty:
                    curve.redraw()
                    count += 1
        return count

    def _tick(self) -> None:
        """A frame: redraw the changed, visible plots, as many per turn as fit the budget.

        A plot's cost is its setData calls plus the paint that follows (axes, grid,
        curves: ~5-15 ms), measured per plot. Plots left over are drawn on the next
        turns (``_go_on``) before the next frame begins, so a dozen busy plots never
        add up to one long stall and none is redrawn twice in a frame.
        """
        if self._continue.isActive():
            return  # the last frame (or a plot's creation) is still going on
        self._frame = self.plot_ids()
        self._go_on()

    def _go_on(self) -> None:
        start = time.perf_counter()
        self._awaiting_paint = False
        if self._pending_plots:
            self._follow_steps()  # the new plot starts at the shared step range: no range change later
            plot = self._create_next_plot()
            # Drawn in the turn that creates it: an empty plot painted now and again with its
            # points a moment later paid for two first paints (~10 ms each) instead of one.
            self._draw_plot(plot)
            self._continue_after_paint(start, self._shows_when_laid_out(plot))
            return
        if self._pending_curves:
            plot = self._attach_pending_curves()
            self._follow_steps()
            self._draw_plot(plot)
            self._continue_after_paint(start, self._on_screen(plot.widget))
            return
        self._follow_steps()
        planned = 0.0
        while self._frame:
            plot = self._plots.get(self._frame[0])
            if plot is None or not plot.range_dirty and not any(c.dirty for c in plot.curves.values()) \
                    or not self._on_screen(plot.widget):
                # Unchanged, or scrolled out of view or on a hidden tab: drawn when it shows again.
                self._frame.pop(0)
                continue
            cost = plot.widget.paint_seconds
            if plot.range_dirty:
                # New steps on the axis: its labels and grid are re-rendered, which the paints
                # of new points alone (the value range mostly stays put) do not measure.
                cost = max(cost, RANGE_PAINT_SECONDS)
            if planned and (time.perf_counter() - start) + planned + cost > self._budget:
                self._continue_after_paint(start, True)
                return
            self._frame.pop(0)
            self._draw_plot(plot)
            planned += cost

    def _continue_after_paint(self, start: float, painted: bool) -> None:
        """Go on with the next slice once this one's plots are painted, a few ms later.

        The paint comes a turn or more after the slice (all dirty plots paint together,
        when Qt gets to it); a guessed delay let two slices' paints, 20-30 ms, land in
        one turn on a loaded machine. A slice whose plots do not show goes on after as
        long as it took, so plotting still leaves about half of the loop to the rest.
        """
        spent_ms = int((time.perf_counter() - start) * 1000)
        self._awaiting_paint = painted
        self._continue.start(max(spent_ms, PAINT_WAIT_MS) if painted else spent_ms)

    def _on_plot_painted(self) -> None:
        if self._awaiting_paint:
            self._awaiting_paint = False
            self._continue.start(PAINT_GAP_MS)

    def _shows_when_laid_out(self, plot: _MetricPlot) -> bool:
        """Whether a plot just added to the grid will be on screen once the layout has placed
        it (it has no geometry yet); plots arrive in display order, mostly below the fold."""
        if not self.isVisible():
            return False
        index = self.plot_ids().index(next(pid for pid, p in self._plots.items() if p is plot))
        top = (index // self._columns) * (self._plot_height + self._grid.spacing())
        shown_from = self._scroll.verticalScrollBar().value()
        return top < shown_from + max(self._scroll.viewport().height(), self._plot_height) and \
            top + self._plot_height > shown_from

    def _draw_plot(self, plot: _MetricPlot) -> None:
        self._apply_span(plot)
        for curve in plot.curves.values():
            if curve.dirty:
                curve.redraw()
        plot.widget.redrawn = True

    def _on_screen(self, widget: QWidget) -> bool:
        if not widget.isVisible():  # also False while an ancestor (a tab page) is hidden
            return False
        viewport = self._scroll.viewport()
        return QRect(widget.mapTo(viewport, QPoint(0, 0)), widget.size()).intersects(viewport.rect())

    def _create_next_plot(self) -> _MetricPlot:
        plot_id, style = min(self._pending_plots.items(), key=lambda kv: (kv[1].order, kv[1].plot_title))
        del self._pending_plots[plot_id]
        plot = self._create_plot(style)
        for (run, key), series_style in list(self._series_style.items()):
            if series_style.plot_id == plot_id:
                self._attach_curve(plot, key, run)
        return plot

    def _attach_pending_curves(self) -> _MetricPlot:
        """Attach the waiting curves of one plot (the first waiting one's); returns the plot."""
        plot_id = self._series_style[self._pending_curves[0]].plot_id
        plot = self._plots[plot_id]
        for run, key in [rk for rk in self._pending_curves if self._series_style[rk].plot_id == plot_id]:
            self._pending_curves.remove((run, key))
            self._attach_curve(plot, key, run)
        return plot

    def _needs_keys(self) -> bool:
        """Whether some plot's title carries a key (see ``_refresh_legend``), judged from every
        series, plotted yet or not: judged from the plots made so far, a run's first plots got
        one-line titles, and the first plot with a key re-titled, resized and repainted them all
        in one turn."""
        if len(self._runs) > 1:
            return True
        labels: dict[str, set[str]] = {}
        for style in self._series_style.values():
            labels.setdefault(style.plot_id, set()).add("eval" if style.markers else style.label)
        return any(len(found) > 1 for found in labels.values())

    def _attach_curve(self, plot: _MetricPlot, key: str, run: str) -> _Curve:
        style = self._series_style[(run, key)]
        overlay = len(self._runs) > 1
        color = self._run_colors[run] if overlay else style.color
        curve = _Curve(plot.item, style, self._series[(run, key)], color)
        curve.apply_smoothing(self._smoothing)
        plot.curves[(run, key)] = curve
        self._curves[(run, key)] = curve
        self._refresh_legend(plot)
        return curve

    def _create_plot(self, style: SeriesStyle) -> _MetricPlot:
        widget = PLOT_POOL.take()
        widget.setFixedHeight(self._plot_height)
        widget.on_painted = self._on_plot_painted
        item = widget.getPlotItem()
        if not self._plots:
            self._title_lines = 2 if self._needs_keys() else 1
        plot_title(item, f"<b>{_escape(style.plot_title)}</b>", lines=self._title_lines)
        if style.y_label:
            item.getAxis("left").setLabel(style.y_label, color="#64748b")
        view = item.getViewBox()
        view.setMouseEnabled(x=True, y=False)
        plot = _MetricPlot(widget, style)
        # pyqtgraph's setXLink aligns linked views on screen, which suits stacked plots
        # but shifts the range of a plot in the next grid column; link by value instead.
        view.sigRangeChangedManually.connect(lambda _mask, p=plot: self._on_user_range(p))
        view.sigXRangeChanged.connect(lambda *_args, p=plot: self._on_view_changed(p))
        view.sigResized.connect(lambda *_args, p=plot: self._on_view_changed(p))
        view.enableAutoRange(y=True)
        # Zoomed in, the values scale to the steps shown (an early loss spike would
        # otherwise flatten a late stretch of the run).
        view.setAutoVisible(y=True)
        if self._x_range is not None:
            view.setXRange(*self._x_range, padding=0)
        elif self._shown_span is not None:
            view.setXRange(*self._shown_span, padding=0.02)
        self._plots[style.plot_id] = plot
        # A rate-limited proxy: hover read-out at most ~30 times a second.
        plot.proxy = pg.SignalProxy(widget.scene().sigMouseMoved, rateLimit=30,
                                    slot=lambda ev, p=plot: self._on_mouse(p, ev))
        plot.proxy.setParent(widget)  # destroyed with its plot, on the GUI thread
        # The way back from a zoom or pan, on every plot: a double-click, or this button,
        # shown while the plots no longer show all steps.
        plot.fit_button = self._fit_button(widget)
        widget.installEventFilter(self)
        widget.viewport().installEventFilter(self)  # mouse events go to the view's viewport
        self._relayout(added=style.plot_id)
        self._empty.setVisible(False)
        self._scroll.setVisible(True)
        self.sig_plot_added.emit(style.plot_id)
        return plot
    def _fit_button(self, widget: pg.PlotWidget) -> QToolButton:
        button = QToolButton(widget)
        button.setObjectName("plotFitButton")
        button.setText("Fit all")
        button.setToolTip("Undo zooming and panning: every plot shows all steps again and follows new ones. "
                          "Double-clicking a plot does the same.")
        button.setCursor(Qt.CursorShape.PointingHandCursor)
        button.clicked.connect(self.follow_all)
        button.adjustSize()
        button.setVisible(self._x_range is not None)
        self._place_fit_button(widget, button)
        return button

    @staticmethod
    def _place_fit_button(widget: QWidget, button: QToolButton) -> None:
        # The corner left of the step axis and under the value axis is the one empty spot.
        button.move(2, widget.height() - button.height() - 2)

    def _show_fit_buttons(self) -> None:
        following = self._x_range is None
        for plot in self._plots.values():
            if plot.fit_button is not None:
                plot.fit_button.setVisible(not following)
        self.sig_following_changed.emit(following)

    def _refresh_legend(self, plot: _MetricPlot) -> None:
        """Write the series key under the plot's title: a legend box would cover the curves,
        and on the title's line a two-column grid cut it off."""
        overlay = len(self._runs) > 1
        entries: dict[str, tuple[str, str]] = {}  # label -> (glyph, colour)
        trained = [c for c in plot.curves.values() if not c.style.markers]
        for curve in plot.curves.values():
            if curve.style.markers:
                # Evaluation points are told apart by their markers; one entry covers them all,
                # named after the series only where it has no training twin (the loss).
                label = "eval" if len(trained) != 1 else curve.style.label
                colour = "#475569" if overlay or len(trained) > 1 else curve.color.name()
                entries.setdefault(label, ("●", colour))
            else:
                # In an overlay the colour names the run, so the key shows only the line style.
                colour = "#475569" if overlay else curve.color.name()
                glyph = "╍" if curve.style.line == "dash" else "━"
                entries.setdefault(curve.style.label, (glyph, colour))
        keys = []
        if len(entries) > 1 or overlay:
            for label, (glyph, colour) in entries.items():
                keys.append(f"<span style='color:{colour}'>{glyph} {_escape(label)}</span>")
        plot.has_key = bool(keys)
        key_html = "<br>" + "&nbsp;&nbsp;&nbsp;".join(keys) if keys else ""
        plot.title_html = f"<b>{_escape(plot.title)}</b>{key_html}"
        lines = 2 if plot.has_key or self._needs_keys() else 1
        if lines != self._title_lines:
            self._title_lines = lines
            for other in self._plots.values():
                if other is not plot and math.isnan(self._hover_step):
                    plot_title(other.item, other.title_html, lines=lines)
        if math.isnan(self._hover_step):
            plot_title(plot.item, plot.title_html, lines=self._title_lines)

    def _recolor_for_overlay(self) -> None:
        for plot in self._plots.values():
            for (run, _key), curve in plot.curves.items():
                colour = QColor(self._run_colors[run])
                if curve.color != colour:
                    curve.set_color(colour)
            self._refresh_legend(plot)

    def _update_run_legend(self) -> None:
        if len(self._runs) < 2:
            self._run_legend.setVisible(False)
            return
        parts = [
            f"<span style='color:{self._run_colors[r]}; font-size:14pt'>&#9632;</span>&nbsp;{_escape(label)}"
            for r, label in self._runs.items()
        ]
        self._run_legend.setText("&nbsp;&nbsp;&nbsp;&nbsp;".join(parts))
        self._run_legend.setVisible(True)

    def _relayout(self, added: str | None = None) -> None:
        order = self.plot_ids()
        if added is not None and order and order[-1] == added:
            # The usual case, plots arriving in display order: one more cell, nothing moves.
            i = len(order) - 1
            self._grid.addWidget(self._plots[added].widget, i // self._columns, i % self._columns)
        else:
            for plot in self._plots.values():
                self._grid.removeWidget(plot.widget)
            for i, pid in enumerate(order):
                self._grid.addWidget(self._plots[pid].widget, i // self._columns, i % self._columns)
        for c in range(max(self._grid.columnCount(), 3)):
            self._grid.setColumnStretch(c, 1 if c < self._columns else 0)
        # A zero-height widget in each column's first cell: a column without one gets no spacing,
        # so the first plot was wider by half the gap until the second column's first plot came,
        # and then shrank, re-rendered. (A spacer item counts as empty too.)
        while len(self._column_marks) > self._columns:
            mark = self._column_marks.pop()
            self._grid.removeWidget(mark)
            mark.deleteLater()
        while len(self._column_marks) < self._columns:
            mark = QWidget()
            mark.setFixedHeight(0)
            self._grid.addWidget(mark, 0, len(self._column_marks))
            self._column_marks.append(mark)
        rows = math.ceil(len(self._plots) / self._columns) if self._plots else 0
        for r in range(self._grid.rowCount()):
            self._grid.setRowStretch(r, 0)
        self._grid.setRowStretch(rows, 1)
        # The host is made tall enough for the plots still to come, now and at once: grown a
        # row at a time, each addition first squeezed the rows into the old height, painted
        # the new plot there, and then moved every plot when the scroll area caught up.
        planned = math.ceil((len(self._plots) + len(self._pending_plots)) / self._columns)
        spacing = self._grid.spacing()
        self._grid_host.setMinimumHeight(max(0, planned * (self._plot_height + spacing) - spacing))

    def resizeEvent(self, event):
        super().resizeEvent(event)
        columns = max(1, min(3, self.width() // self._min_plot_width))
        if columns != self._columns:
            self._columns = columns
            self._relayout()

    def eventFilter(self, obj, event):
        kind = event.type()
        if kind == QEvent.Type.Leave:
            self._show_cursor(math.nan)
        elif kind == QEvent.Type.MouseButtonDblClick:
            self.follow_all()
        elif kind == QEvent.Type.Resize:
            button = obj.findChild(QToolButton, "plotFitButton")
            if button is not None:
                self._place_fit_button(obj, button)
        return False

    # ---------------------------------------------------------- shared x axis
    def _note_steps(self, lo: float, hi: float) -> None:
        span = self._step_span
        self._step_span = (lo, hi) if span is None else (min(span[0], lo), max(span[1], hi))

    def _follow_steps(self) -> None:
        """Show every step of every series, extending the axis ahead of the data."""
        if self._x_range is not None or self._step_span is None:
            return
        lo, hi = self._step_span
        shown = self._shown_span
        if shown is not None and self._shown_from == lo and hi <= shown[1]:
            return
        if hi > lo:
            shown = (lo, hi + self._headroom * (hi - lo))
        else:
            shown = (lo - 0.5, lo + 0.5)  # one step: its points in the middle, not on the axis
        self._shown_span, self._shown_from = shown, lo
        # Each plot takes the new range when it is next drawn: a range change re-renders
        # its axes, and a dozen at once would be one long stall.
        for plot in self._plots.values():
            plot.range_dirty = True

    @staticmethod
    def _on_view_changed(plot: _MetricPlot) -> None:
        view = plot.item.getViewBox()
        left, right = view.viewRange()[0]
        for curve in plot.curves.values():
            curve.view_changed(left, right, view.width())

    def _apply_span(self, plot: _MetricPlot) -> None:
        if plot.range_dirty and self._x_range is None and self._shown_span is not None:
            plot.item.getViewBox().setXRange(*self._shown_span, padding=0.02)
        plot.range_dirty = False
    def _on_user_range(self, source: _MetricPlot) -> None:
        """The user zoomed or panned one plot: every plot shows the same steps."""
        lo, hi = source.item.getViewBox().viewRange()[0]
        self.set_x_range(lo, hi)

    def set_x_range(self, lo: float, hi: float) -> None:
        """Show steps lo..hi on every plot (until ``follow_all``)."""
        was_following = self._x_range is None
        self._x_range = (lo, hi)
        for plot in self._plots.values():
            plot.item.getViewBox().setXRange(lo, hi, padding=0)
        if was_following:
            self._show_fit_buttons()

    def is_following(self) -> bool:
        """True while every plot shows all steps (no zoom or pan in effect)."""
        return self._x_range is None

    def set_follow_headroom(self, headroom: float) -> None:
        """Room left ahead of the last step while following (0.25 for a live run, 0 for a finished one)."""
        self._headroom = headroom
        self._shown_span = None
        self._follow_steps()

    def follow_all(self) -> None:
        """Undo zooming and panning: every plot shows all steps and follows new ones."""
        was_following = self._x_range is None
        self._x_range = None
        self._shown_span = None
        self._follow_steps()
        for plot in self._plots.values():
            self._apply_span(plot)  # a user action: all at once is what they expect
            plot.item.getViewBox().enableAutoRange(y=True)
        if not was_following:
            self._show_fit_buttons()

    def x_range(self, plot_id: str) -> tuple[float, float]:
        lo, hi = self._plots[plot_id].item.getViewBox().viewRange()[0]
        return lo, hi

    # ----------------------------------------------------------------- hover
    def _on_mouse(self, plot: _MetricPlot, args) -> None:
        pos = args[0]
        if not plot.item.sceneBoundingRect().contains(pos):
            return
        step = plot.item.getViewBox().mapSceneToView(QPointF(pos)).x()
        self._show_cursor(step)

    def show_readout_at(self, step: float) -> None:
        """Place the cursor at ``step`` on every plot and write the values in the titles (NaN clears)."""
        self._show_cursor(step)

    def _show_cursor(self, step: float) -> None:
        if math.isnan(step) and math.isnan(self._hover_step):
            return
        self._hover_step = step
        overlay = len(self._runs) > 1
        for plot in self._plots.values():
            if math.isnan(step):
                plot.cursor.setVisible(False)
                plot_title(plot.item, plot.title_html, lines=self._title_lines)
                continue
            parts = []
            shown_step = None
            for (run, _key), curve in plot.curves.items():
                hit = curve.series.value_at(step)
                if hit is None:
                    continue
                shown_step = hit[0] if shown_step is None else max(shown_step, hit[0])
                name = f"{self._runs[run]} {curve.style.label}" if overlay else curve.style.label
                parts.append(f"<span style='color:{curve.color.name()}'>{_escape(name)} {_fmt(hit[1])}</span>")
            plot.cursor.setPos(step)
            plot.cursor.setVisible(True)
            if parts:
                # The values take the key's line while the pointer is over the plots (a plot is
                # about 330 px wide, room for a step and four values but not for the title too);
                # with one-line titles they replace the title.
                head = f"<span style='color:#64748b'>step {shown_step:g}</span>"
                values = head + " &nbsp;" + " &nbsp;".join(parts)
                if self._title_lines == 2:
                    values = f"<b>{_escape(plot.title)}</b><br>{values}"
                plot_title(plot.item, values, lines=self._title_lines)
        self.sig_hover_changed.emit(step)


def _fmt(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
        return f"{value:.2e}"
    return f"{value:.3g}"


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def exponential_moving_average(y: np.ndarray, weight: float) -> np.ndarray:
    """EMA that holds its value over NaN points, vectorised block by block.

    Within a block the recurrence s_i = a_i s_(i-1) + b_i unrolls into cumulative
    products and sums; blocks stay short enough that the products never underflow.
    A Python loop would take ~50 ms per 100,000 points per curve, too slow for a slider.
    """
    y = np.asarray(y, dtype=np.float64)
    out = np.full(y.shape, np.nan)
    finite = np.isfinite(y)
    if not finite.any():
        return out
    start = int(np.argmax(finite))
    if weight <= 0:
        out[start:] = y[start:]
        held = np.where(finite, np.arange(len(y)), -1)
        np.maximum.accumulate(held, out=held)
        out[start:] = y[held[start:]]
        return out
    a = np.where(finite, weight, 1.0)
    b = np.where(finite, (1.0 - weight) * np.nan_to_num(y), 0.0)
    block = int(min(1024, max(8, -250 / math.log10(weight))))
    prev = y[start]
    for s in range(start, len(y), block):
        products = np.cumprod(a[s : s + block])
        chunk = products * (prev + np.cumsum(b[s : s + block] / products))
        out[s : s + block] = chunk
        prev = chunk[-1]
    return out


__all__ = ["MetricPlotGrid", "SeriesStyle", "GrowingSeries", "RUN_PALETTE", "exponential_moving_average"]
