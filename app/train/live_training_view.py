"""The right-hand side of the Train tab: Train/Stop, progress, live plots,
plain-language diagnostics and the worker's log.

It consumes the supervisor's typed events; it never talks to the worker
itself. Plots are created lazily (pyqtgraph costs half a second to import,
which the window's first paint should not wait for).
"""

from __future__ import annotations

import math
import time
from collections import deque
from PySide6.QtCore import QTimer, QUrl, Qt, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QCheckBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QSlider,
    QSplitter,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from app.log_tail import LogTailer
from app.train.metric_catalog import points_from_event, style_for_key, styles_for_method
from backend.runs.diagnostics import TrainingDiagnostics
from backend.core.events import EvalLog, SampleBatch, TrainLog
from backend.methods import find_method, method_label
from backend.runs.clock import format_duration
from backend.core.worker_log_filter import WorkerLogFilter
from widgets.log_console import LogConsole
from widgets.notes_panel import NotesPanel
from widgets.notice_banner import NoticeBanner

READY_TEXT = "Ready when you are: load a dataset, pick a method, press Train."
PHASE_TEXT = {
    "loading_model": "Loading the model…",
    "preparing_data": "Preparing the data…",
    "training": "Training",
    "evaluating": "Evaluating on the held-out rows…",
    "saving": "Saving the adapter…",
}

FORCE_STOP_AFTER_MS = 15000
FORCE_STOP_TEXT = "Force stop"

FAILURE_TITLES = {
    "out_of_memory": "The run ran out of memory",
    "bad_data": "The dataset could not be used for training",
    "bad_config": "A setting is not valid",
    "bad_model": "The model could not be loaded",
    "nan_loss": "The loss became NaN",
    "interrupted": "The run was interrupted",
    "killed": "The training worker was killed",
    "crash": "The training worker crashed",
}


def format_memory(mb: float | None, kind: str = "") -> str:
    if mb is None:
        return ""
    where = {"gpu": " GPU", "rss": " RAM"}.get(kind, "")
    return f"{mb / 1024:.2f} GB{where}" if mb >= 1024 else f"{mb:.0f} MB{where}"


class LiveTrainingView(QWidget):
    sig_train_requested = Signal()
    """The Train button was pressed."""

    sig_stop_requested = Signal()
    """The Stop button was pressed."""

    sig_stop_advised = Signal(str)
    """A diagnostic says the run is beyond saving (NaN loss); carries the reason."""

    sig_force_stop_requested = Signal()
    """Stop was pressed, the worker did not end in time, and the user chose to end it now."""

    sig_resume_requested = Signal(str)
    """Resume was pressed after a stopped or failed run; carries the run folder."""

    def __init__(self, settings=None, parent=None):
        super().__init__(parent)
        self._settings = settings
        self._grid = None
        self._run_dir = ""
        self._method = ""
        self._running = False
        self._can_train = (False, "")
        self._ready_note = ""  # what Train would do to the data (cut prompts), under the ready line
        self._pending_log = None
        self._queue: deque = deque()
        self._drain_timer = QTimer(self)
        self._drain_timer.setSingleShot(True)
        self._drain_timer.setInterval(0)
        self._drain_timer.timeout.connect(self._drain)
        # Dragging the smoothing slider re-smooths every series (13 x 100,000 points take tens
        # of milliseconds): once per pause of the drag, not at each of its dozens of values.
        self._smoothing_timer = QTimer(self)
        self._smoothing_timer.setSingleShot(True)
        self._smoothing_timer.setInterval(60)
        self._smoothing_timer.timeout.connect(self._apply_smoothing)
        self._text_timer = QTimer(self)
        self._text_timer.setSingleShot(True)
        self._text_timer.setInterval(100)
        self._text_timer.timeout.connect(self._show_log_text)
        self.diagnostics = TrainingDiagnostics()
        # The run clock ticks here between events (an evaluation can run minutes without a
        # log line); each event with a reading re-anchors it, so it never drifts from the worker's.
        self._clock_zero: float | None = None
        self._eta_deadline: float | None = None
        self._eval_eta_deadline: float | None = None
        self._stat_parts: list[str] = []
        self._evaluation = None  # the latest EvalProgress while an evaluation runs
        self._last_train_log = None
        self._clock_stopped_at: float | None = None
        self._clock_timer = QTimer(self)
        self._clock_timer.setInterval(1000)
        self._clock_timer.timeout.connect(self._render_stats)

        self.train_button = QPushButton("Train")
        self.train_button.setObjectName("primaryButton")
        self.train_button.clicked.connect(self.sig_train_requested)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setObjectName("stopButton")
        self.stop_button.setEnabled(False)
        self.stop_button.setToolTip("Stop after the current step and save the adapter trained so far.")
        self.stop_button.clicked.connect(self._on_stop_clicked)
        self._force_timer = QTimer(self)
        self._force_timer.setSingleShot(True)
        self._force_timer.setInterval(FORCE_STOP_AFTER_MS)
        self._force_timer.timeout.connect(self._offer_force_stop)
        self.resume_button = QPushButton("Resume")
        self.resume_button.setVisible(False)
        self.resume_button.clicked.connect(lambda: self.sig_resume_requested.emit(self._resumable_dir))
        self._resumable_dir = ""
        self.phase_label = QLabel(READY_TEXT)
        self.phase_label.setObjectName("phaseLabel")
        self.phase_label.setWordWrap(True)
        self.ready_hint = QLabel()
        self.ready_hint.setObjectName("mutedText")
        self.ready_hint.setWordWrap(True)
        self.folder_button = QPushButton("Open run folder")
        self.folder_button.setVisible(False)
        self.folder_button.clicked.connect(self.open_run_folder)

        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("no run yet")
        self.stats_label = QLabel()
        self.stats_label.setObjectName("statLine")
        # Text that grows with the run (ETA, memory, loss) must not widen the panel: where the
        # window was at its narrowest, a longer line widened the window and so every plot,
        # which re-rendered them all in one turn. Clipped at the panel's edge instead.
        self.stats_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.banner = NoticeBanner()
        self.banner.sig_action.connect(self.open_run_folder)

        self.smoothing = QSlider(Qt.Orientation.Horizontal)
        self.smoothing.setRange(0, 99)
        self.smoothing.setFixedWidth(160)
        self.smoothing.setToolTip("Exponential moving average of each curve. The raw points stay visible, faded.")
        self.smoothing_value = QLabel()
        self.smoothing_value.setMinimumWidth(34)
        self.smoothing.valueChanged.connect(self._on_smoothing)
        start = int(round(100 * float(settings.value("view/smoothing", 0.6)))) if settings else 60
        self.smoothing.setValue(start)
        self._on_smoothing(self.smoothing.value())
        self.metric_count = QLabel()
        self.metric_count.setObjectName("mutedText")
        # Wide enough for "· 88 plots" from the start: see the stats line.
        self.metric_count.setMinimumWidth(self.metric_count.fontMetrics().horizontalAdvance("· 88 plots"))
        self.fit_button = QPushButton("Show all steps")
        self.fit_button.setToolTip("Undo zooming and panning: every plot shows the whole run and follows new steps.")
        self.fit_button.clicked.connect(lambda: self._grid.follow_all() if self._grid is not None else None)

        self.plots_stack = QStackedWidget()
        empty = QLabel("Live plots appear here when training starts: loss, reward margins, chosen vs rejected "
                       "rewards and log-probs, accuracy, learning rate, gradient norm, memory — whatever the "
                       "method logs.")
        empty.setObjectName("emptyState")
        empty.setWordWrap(True)
        empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.plots_stack.addWidget(empty)

        self.notes = NotesPanel("Diagnostics", "Nothing worrying so far. Notes about the run appear here "
                                                "as the metrics come in, each with what to try.")
        self.notes.setMinimumWidth(240)
        self.notes.setMaximumWidth(340)

        # Known harmless library messages are explained once instead of shown; worker.log keeps them.
        self.console = LogConsole(line_filter=WorkerLogFilter())
        self.raw_log_box = QCheckBox("Show raw log")
        self.raw_log_box.setToolTip("Show everything the worker printed, including library messages known to be "
                                    "harmless. worker.log in the run folder always has all of it.")
        self.raw_log_box.toggled.connect(self.console.set_show_raw)
        self.tailer = LogTailer(self)
        self.tailer.sig_text.connect(self.console.append_text)

        # ---- layout
        buttons = QHBoxLayout()
        buttons.setSpacing(8)
        buttons.addWidget(self.train_button)
        buttons.addWidget(self.stop_button)
        buttons.addWidget(self.resume_button)
        buttons.addSpacing(8)
        texts = QVBoxLayout()
        texts.setSpacing(0)
        texts.addWidget(self.phase_label)
        texts.addWidget(self.ready_hint)
        buttons.addLayout(texts, 1)
        buttons.addWidget(self.folder_button)

        plot_bar = QHBoxLayout()
        title = QLabel("Metrics")
        title.setObjectName("panelTitle")
        plot_bar.addWidget(title)
        plot_bar.addWidget(self.metric_count)
        plot_bar.addStretch(1)
        plot_bar.addWidget(self.fit_button)
        plot_bar.addSpacing(12)
        plot_bar.addWidget(QLabel("Smoothing"))
        plot_bar.addWidget(self.smoothing)
        plot_bar.addWidget(self.smoothing_value)
        plots_side = QWidget()
        pl = QVBoxLayout(plots_side)
        pl.setContentsMargins(0, 0, 0, 0)
        pl.setSpacing(6)
        pl.addLayout(plot_bar)
        pl.addWidget(self.plots_stack, 1)

        upper = QSplitter(Qt.Orientation.Horizontal)
        upper.addWidget(plots_side)
        upper.addWidget(self.notes)
        upper.setStretchFactor(0, 1)
        upper.setStretchFactor(1, 0)
        upper.setChildrenCollapsible(False)

        console_side = QWidget()
        cl = QVBoxLayout(console_side)
        cl.setContentsMargins(0, 4, 0, 0)
        cl.setSpacing(4)
        log_title = QLabel("Worker log")
        log_title.setObjectName("panelTitle")
        log_bar = QHBoxLayout()
        log_bar.addWidget(log_title)
        log_bar.addStretch(1)
        log_bar.addWidget(self.raw_log_box)
        cl.addLayout(log_bar)
        cl.addWidget(self.console, 1)

        self.splitter = QSplitter(Qt.Orientation.Vertical)
        self.splitter.addWidget(upper)
        self.splitter.addWidget(console_side)
        self.sample_table = None  # created for a method whose spec samples completions (spec.samples)
        self.splitter.setStretchFactor(0, 4)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setSizes([620, 170])
        self.splitter.setChildrenCollapsible(False)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 12, 12, 12)
        layout.setSpacing(8)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.stats_label)
        layout.addWidget(self.banner)
        layout.addWidget(self.splitter, 1)

    # ----------------------------------------------------------------- plots
    def ensure_plots(self):
        """The plot grid, created (and pyqtgraph imported) on first use."""
        if self._grid is None:
            from widgets.metric_plots import MetricPlotGrid

            # A preference run logs about a dozen plotted keys; their widgets are built while idle.
            self._grid = MetricPlotGrid(style_for_key, empty_text="Waiting for the first logged step…",
                                        follow_headroom=0.25, prebuild_plots=14)
            self._grid.set_smoothing(self.smoothing.value() / 100)
            self._grid.sig_plot_added.connect(self._on_plot_added)
            self.plots_stack.addWidget(self._grid)
        return self._grid

    @property
    def plots(self):
        return self.ensure_plots()

    def _hold_plot_pool(self, held: bool) -> None:
        """No spare plot widgets are built while a run goes on; the next run's are built after it."""
        if self._grid is not None:
            from widgets.metric_plots import PLOT_POOL

            PLOT_POOL.hold(held)

    def _on_plot_added(self, _plot_id: str) -> None:
        self.metric_count.setText(f"· {len(self._grid.plot_ids())} plots")

    def _on_smoothing(self, value: int) -> None:
        self.smoothing_value.setText(f"{value / 100:.2f}")
        self._smoothing_timer.start()
        if self._settings is not None:
            self._settings.set_value("view/smoothing", value / 100)

    def _apply_smoothing(self) -> None:
        if self._grid is not None:
            self._grid.set_smoothing(self.smoothing.value() / 100)

    # -------------------------------------------------------------- controls
    def set_can_train(self, ok: bool, reason: str = "") -> None:
        self._can_train = (ok, reason)
        self._apply_train_state()

    def show_ready(self, text: str, note: str = "") -> None:
        """Say what Train would do, unless a run or its outcome is on screen; ``note``
        (the smaller line under it) says what it would do to the data, e.g. cut prompts."""
        self._ready_note = note
        if not self._running and not self.banner.isVisible():
            self.phase_label.setText(text)
        self._apply_train_state()

    def show_not_started(self) -> None:
        """Train was refused before anything started: "Ready to train" above the refusal
        would contradict it."""
        if not self._running:
            self.phase_label.setText("Training was not started: see why below.")
            self._apply_train_state()

    def clear_outcome(self, *_args) -> None:
        """A new dataset, a data error or a changed setting: the last run's outcome
        ("Done", its banner) is no longer the news. The run stays in the Runs tab."""
        if self._running:
            return
        self.banner.hide_notice()
        self.phase_label.setText(READY_TEXT)

    def is_running(self) -> bool:
        return self._running

    def _apply_train_state(self) -> None:
        ok, reason = self._can_train
        self.train_button.setEnabled(ok and not self._running)
        self.train_button.setToolTip(reason if not ok else "Start training with these settings.")
        hint = reason if not ok else self._ready_note
        self.ready_hint.setText(hint)
        # A note about the data belongs to "Ready to train", not under a run's outcome.
        shown = bool(reason) if not ok else bool(hint) and not self.banner.isVisible()
        self.ready_hint.setVisible(shown and not self._running)

    def request_stop(self) -> None:
        """Behave as if Stop was pressed (also used by the window on close and on a NaN loss)."""
        self.stop_button.setEnabled(False)
        self.stop_button.setText("Stopping…")
        self.phase_label.setText(
            "Stopping the evaluation; the adapter trained so far will be saved…" if self._evaluation is not None
            else "Stopping after the current step; the adapter trained so far will be saved…")
        self._force_timer.start()
        self.sig_stop_requested.emit()

    def _on_stop_clicked(self) -> None:
        if self.stop_button.text() == FORCE_STOP_TEXT:
            self.stop_button.setEnabled(False)
            self.phase_label.setText("Ending the worker now; the run keeps its last checkpoint…")
            self.sig_force_stop_requested.emit()
        else:
            self.request_stop()

    def _offer_force_stop(self) -> None:
        # A step on a CPU can take a minute; the cooperative stop waits for it. After a
        # while the user may prefer to lose that step rather than wait.
        if not self._running:
            return
        self.stop_button.setText(FORCE_STOP_TEXT)
        self.stop_button.setEnabled(True)
        self.stop_button.setToolTip("The worker has not stopped yet. Force stop ends it now; the metrics so far "
                                    "and the last checkpoint stay in the run folder, and Resume continues from it.")

    def set_resumable(self, run_dir: str, checkpoint_step: int | None) -> None:
        """Offer Resume for a run that ended early with a checkpoint (hide it with an empty run_dir)."""
        self._resumable_dir = run_dir if checkpoint_step is not None else ""
        self.resume_button.setVisible(bool(self._resumable_dir) and not self._running)
        if self._resumable_dir:
            self.resume_button.setText(f"Resume from step {checkpoint_step}")
            self.resume_button.setToolTip("Continue this run from its last checkpoint, in the same folder.")

    def open_run_folder(self) -> None:
        if self._run_dir:
            QDesktopServices.openUrl(QUrl.fromLocalFile(self._run_dir))

    def run_dir(self) -> str:
        return self._run_dir

    # ------------------------------------------------------------ run events
    def begin_run(self, method: str, description: str = "", history=()) -> None:
        """A run was requested: reset the view and show that it is starting. A resumed
        run passes the events it logged so far (``history``): its plots go on from them."""
        self._method = method
        self._run_dir = ""
        self._queue.clear()
        self._drain_timer.stop()
        self.diagnostics.reset(0, method)
        self.notes.clear_notes()
        self.banner.hide_notice()
        self.console.clear_console()
        grid = self.ensure_plots()
        grid.clear()
        grid.set_style_for_key(styles_for_method(method))
        self._hold_plot_pool(True)
        grid.set_follow_headroom(0.25)
        self.plots_stack.setCurrentWidget(grid)
        self.metric_count.setText("")
        self._show_samples_for(method)
        for event in history:
            if isinstance(event, (TrainLog, EvalLog)):
                grid.add_step(event.step, {key: value for key, _step, value in points_from_event(event)})
            elif isinstance(event, SampleBatch):
                self._ensure_sample_table().add_batch(event)
        self._running = True
        self._apply_train_state()
        self._force_timer.stop()
        self._resumable_dir = ""
        self.resume_button.setVisible(False)
        self.stop_button.setEnabled(True)
        self.stop_button.setText("Stop")
        self.stop_button.setToolTip("Stop after the current step and save the adapter trained so far.")
        self.folder_button.setVisible(False)
        self.progress.setRange(0, 0)  # busy until the worker knows the step count
        self.progress.setFormat("starting…")
        self.phase_label.setText("Starting the training worker…" + (f" {description}" if description else ""))
        self._evaluation = self._last_train_log = self._clock_stopped_at = None
        self._eta_deadline = self._eval_eta_deadline = None
        self._stat_parts = []
        self._clock_zero = time.monotonic()  # until the worker's first reading
        self._clock_timer.start()
        self._render_stats()

    def on_launched(self, run_dir: str, log_path: str) -> None:
        self._run_dir = run_dir
        self.folder_button.setVisible(True)
        self.tailer.follow(log_path)

    def on_run_started(self, event) -> None:
        self._method = event.method or self._method
        self.diagnostics.reset(event.total_steps, event.method, event.eval_rows)
        self.progress.setRange(0, max(1, event.total_steps))
        self.progress.setValue(event.resumed_from_step)
        self.progress.setFormat("step %v of %m")
        device = event.device or {}
        where = device.get("name", "GPU") if device.get("kind") == "cuda" else "CPU"
        precision = device.get("precision", "")
        self.phase_label.setText(
            f"Training {method_label(event.method)} on {event.train_rows:,} examples"
            + (f" ({event.eval_rows:,} held out)" if event.eval_rows else "")
            + f" · {event.trainable_params:,} trainable of {event.total_params:,} parameters"
            + f" · {where}" + (f", {precision}" if precision else "")
        )

    def on_phase(self, event) -> None:
        self._read_clock(event.elapsed_seconds)
        if event.phase != "evaluating" and self._evaluation is not None:
            self._end_evaluation()
        if self.stop_button.text() == "Stopping…" and event.phase != "saving":
            return
        # The worker's message says it in full; the table is for phases sent without one.
        text = (event.message or PHASE_TEXT.get(event.phase, event.phase.replace("_", " ").capitalize()))
        if event.phase != "training":
            self.phase_label.setText(text.rstrip("…") + "…")

    def on_eval_progress(self, event) -> None:
        """An evaluation's batches: the progress bar follows them, and both ETAs show."""
        self._read_clock(event.elapsed_seconds)
        self._evaluation = event
        now = time.monotonic()
        self._eval_eta_deadline = now + event.eval_eta_seconds if event.eval_eta_seconds is not None else None
        self._eta_deadline = now + event.eta_seconds if event.eta_seconds is not None else None
        total = max(1, event.total_batches)
        if self.progress.maximum() != total or not self.progress.format().startswith("evaluating"):
            self.progress.setRange(0, total)
            what = "final evaluation" if event.final else f"evaluating at step {event.step}"
            self.progress.setFormat(f"{what}: batch %v of %m")
        self.progress.setValue(min(event.batch, total))
        self._render_stats()

    def _end_evaluation(self) -> None:
        self._evaluation = None
        self._eval_eta_deadline = None
        event = self._last_train_log
        if event is not None and event.total_steps:
            self.progress.setRange(0, event.total_steps)
            self.progress.setFormat("step %v of %m")
            self.progress.setValue(min(event.step, event.total_steps))
        self._render_stats()

    def _read_clock(self, elapsed: float | None) -> None:
        if elapsed is not None and math.isfinite(elapsed):
            self._clock_zero = time.monotonic() - elapsed

    def _stop_clock(self, elapsed: float | None = None) -> None:
        """The run ended: the clock stops at the worker's last reading."""
        if self._clock_stopped_at is not None:
            return
        self._read_clock(elapsed)
        self._clock_stopped_at = time.monotonic()
        self._clock_timer.stop()
        self._evaluation = None
        self._eta_deadline = self._eval_eta_deadline = None
        self._render_stats()

    def _render_stats(self) -> None:
        now = self._clock_stopped_at or time.monotonic()
        parts = []
        if self._clock_zero is not None:
            parts.append(f"Elapsed {format_duration(now - self._clock_zero)}")
        if self._evaluation is not None and self._eval_eta_deadline is not None:
            parts.append(f"evaluation ETA {format_duration(max(0.0, self._eval_eta_deadline - now))}")
        final = self._evaluation is not None and self._evaluation.final
        if self._eta_deadline is not None and not final:  # after the final evaluation only saving is left
            parts.append(f"ETA {format_duration(max(0.0, self._eta_deadline - now))}")
        self.stats_label.setText("  ·  ".join(parts + self._stat_parts))

    def on_train_log(self, event) -> None:
        """Queue a step's metrics; they are applied in slices of at most ~12 ms (see ``_drain``)."""
        self._queue.append(event)
        if not self._drain_timer.isActive():
            self._drain_timer.start()

    def on_eval_log(self, event) -> None:
        self._queue.append(event)
        if not self._drain_timer.isActive():
            self._drain_timer.start()

    def _drain(self, budget: float | None = 0.012) -> None:
        # However fast a worker logs, the GUI thread takes the steps in bounded slices
        # and lets painting and input in between.
        start = time.perf_counter()
        while self._queue:
            event = self._queue.popleft()
            if isinstance(event, TrainLog):
                self._apply_train_log(event)
            else:
                self._apply_eval_log(event)
            if budget is not None and self._queue and time.perf_counter() - start > budget:
                self._drain_timer.start()
                return

    def flush(self) -> None:
        """Apply every queued step now (at the end of a run, in tests)."""
        self._drain_timer.stop()
        self._drain(budget=None)
        self._show_log_text()

    def _apply_train_log(self, event) -> None:
        self.ensure_plots().add_step(event.step, {key: value for key, _step, value in points_from_event(event)})
        # Text and progress change at most ~10 times a second, however fast steps arrive.
        self._pending_log = event
        if not self._text_timer.isActive():
            self._text_timer.start()
        self._diagnose(event.step, event.metrics, evaluation=False)

    def _show_log_text(self) -> None:
        event, self._pending_log = self._pending_log, None
        if event is None:
            return
        self._last_train_log = event
        if event.total_steps and self._evaluation is None:
            if self.progress.maximum() != event.total_steps:
                self.progress.setRange(0, event.total_steps)
                self.progress.setFormat("step %v of %m")
            self.progress.setValue(min(event.step, event.total_steps))
        # The log of the step an evaluation follows can arrive after the evaluation began;
        # its clock reading is older than the evaluation's, so it only sets the ETA outside one.
        if self._evaluation is None:
            self._read_clock(event.elapsed_seconds)
            self._eta_deadline = (time.monotonic() + event.eta_seconds if event.eta_seconds is not None
                                  else None)
        parts = []
        if event.tokens_per_second:
            parts.append(f"{event.tokens_per_second:,.0f} tokens/s")
        if event.seconds_per_step:
            parts.append(f"{event.seconds_per_step:.2f} s/step")
        if event.peak_memory_mb:
            parts.append(f"peak {format_memory(event.peak_memory_mb, event.memory_kind)}")
        loss = event.metrics.get("loss")
        if loss is not None:
            parts.append(f"loss {loss:.4g}")
        self._stat_parts = parts
        self._render_stats()

    def _apply_eval_log(self, event) -> None:
        self.ensure_plots().add_step(event.step, {key: value for key, _step, value in points_from_event(event)})
        self._diagnose(event.step, event.metrics, evaluation=True)

    def _diagnose(self, step: int, metrics: dict, evaluation: bool) -> None:
        raised, cleared = self.diagnostics.observe(step, metrics, evaluation=evaluation)
        for code in cleared:
            self.notes.remove_note(code)
        for note in raised:
            self.notes.add_note(note.code, note.severity, note.title, note.text, note.advice)
            if note.stop_recommended and self.stop_button.isEnabled():
                self.sig_stop_advised.emit(note.title)

    # --------------------------------------------------------------- samples
    def _show_samples_for(self, method: str) -> None:
        """The sample table sits between the plots and the log for a method that samples."""
        spec = find_method(method)
        wanted = bool(spec is not None and spec.samples)
        if wanted:
            self._ensure_sample_table()
        if self.sample_table is not None:
            self.sample_table.clear()
            self.sample_table.setHidden(not wanted)

    def _ensure_sample_table(self):
        if self.sample_table is None:
            from widgets.sample_table import SampleTable

            self.sample_table = SampleTable()
            self.sample_table.setMinimumHeight(160)
            self.splitter.insertWidget(1, self.sample_table)
            self.splitter.setStretchFactor(1, 2)
            # Half for the plots, a third for the samples, the rest for the log.
            total = max(820, sum(self.splitter.sizes()))
            self.splitter.setSizes([total // 2, total // 3, total - total // 2 - total // 3])
        self.sample_table.setHidden(False)
        return self.sample_table

    def on_samples(self, event) -> None:
        """A SampleBatch: the newest completions go on top of the table."""
        self._ensure_sample_table().add_batch(event)

    def on_checkpoint(self, event) -> None:
        self.console.append_line(f"[studio] checkpoint saved at step {event.step}: {event.path}")

    def on_warning(self, event) -> None:
        self.console.append_line(f"[studio] warning: {event.message}")
        self.notes.add_note(f"worker:{event.kind or event.message[:40]}", "info", "Message from the worker",
                            event.message)

    def on_finished(self, event) -> None:
        self.flush()
        self._stop_clock(event.elapsed_seconds)
        if self._grid is not None:
            self._grid.set_follow_headroom(0.0)  # the run is complete: fit the steps it has
        stopped = event.stopped
        self.progress.setRange(0, max(1, event.total_steps or event.step))
        self.progress.setValue(event.step)
        title = (f"Stopped at step {event.step}: the adapter trained so far is saved" if stopped
                 else f"Finished {event.step} steps in {format_duration(event.elapsed_seconds)}")
        summary = []
        spec = find_method(self._method)
        for key, label in spec.summary_metrics if spec else (("loss", "loss"),):
            x, y = self._grid.series_data(key) if self._grid else ((), ())
            if len(y):
                summary.append(f"{label} {y[-1]:.3g}")
        text = f"Adapter: {event.adapter_path}"
        if summary:
            text = "Last values: " + ", ".join(summary) + "\n" + text
        if event.peak_memory_mb:
            text += f"\nPeak memory {format_memory(event.peak_memory_mb)}"
        self.banner.show_notice("success" if not stopped else "info", title, text, action="Open folder")
        self.phase_label.setText("Stopped." if stopped else "Done. The run is in the Runs tab.")

    def on_failed(self, event) -> None:
        self.flush()
        self._stop_clock(event.elapsed_seconds)
        if self._grid is not None:
            self._grid.set_follow_headroom(0.0)
        title = FAILURE_TITLES.get(event.kind, "The run failed")
        text = event.message + (f"\n\nWhat to try: {event.hint}" if event.hint else "")
        # When the worker died without a word, the end of its log is the explanation.
        self.banner.show_notice("error", title, text, details=event.traceback,
                                action="Open folder" if self._run_dir else "",
                                open_details=event.kind in ("crash", "killed", "interrupted"))
        self.phase_label.setText("The run ended with an error (details below).")
        if self.progress.maximum() == 0:
            self.progress.setRange(0, 1)
            self.progress.setFormat("failed")

    def on_idle(self) -> None:
        """The worker exited: controls go back to their resting state."""
        self._hold_plot_pool(False)
        self.tailer.stop()
        self.console.flush()
        self._force_timer.stop()
        if self._clock_zero is not None:
            self._stop_clock()
        self.stop_button.setEnabled(False)
        self.stop_button.setText("Stop")
        self.stop_button.setToolTip("Stop after the current step and save the adapter trained so far.")
        self._running = False
        self._apply_train_state()
        self.resume_button.setVisible(bool(self._resumable_dir))
        if self.progress.maximum() == 0:
            self.progress.setRange(0, 1)
            self.progress.setFormat("no run")
