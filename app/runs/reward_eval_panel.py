"""Evaluate rewards: pick a run and a preference file, score every pair in a worker, read
the accuracy per subset and whether the reward mostly follows answer length.

The scoring runs in ``backend.rewards.evaluation``'s worker process (the window never loads a
model); following its event stream blocks, so it runs through ``call_in_background`` and each
event is relayed to the GUI thread by a queued signal. Stop asks the worker to stop between
batches; a worker that has not stopped after a grace period is terminated.
"""

from __future__ import annotations

import html
import math
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QDialog, QFileDialog, QFormLayout, QHBoxLayout,
                               QHeaderView, QLabel, QLineEdit, QProgressBar, QPushButton, QSpinBox, QTableWidget,
                               QTableWidgetItem, QVBoxLayout, QWidget)

from app.background_call import EventRelay, follow_worker_events, stop_worker
from backend.rewards.evaluation import RewardEvalError, RewardEvalReport, reward_source
from backend.runs.folder import EVAL_SPLIT_FILE
from widgets.notice_banner import NoticeBanner

STOP_GRACE_MS = 15_000
TABLE_COLUMNS = ("Subset", "Pairs", "Correct", "Accuracy")


def reward_runs(run_dirs: list[str]) -> list[tuple[str, str]]:
    """(run folder, what gives its reward) for the runs that can be evaluated (files only)."""
    found = []
    for run in run_dirs:
        try:
            source = reward_source(run)
        except RewardEvalError:
            continue
        found.append((str(run), source.reward_kind))
    return found


class RewardEvalPanel(QDialog):
    sig_finished = Signal(object)
    """The evaluation ended: EvalFinished or EvalFailed."""

    def __init__(self, run_dir: str = "", run_dirs: list[str] | None = None, data_path: str = "",
                 parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Evaluate rewards")
        self.setMinimumWidth(620)
        self._worker = None
        self.following = False
        self.report: RewardEvalReport | None = None
        self._relay = EventRelay(self)
        self._relay.sig_event.connect(self._on_event)

        intro = QLabel("Scores every pair of a preference file with a reward model run, or with the implicit "
                       "reward of a preference run that has one, and counts how often the chosen answer scores higher. A "
                       "<i>subset</i> or <i>category</i> column (as in RewardBench) gives one row per subset.")
        intro.setWordWrap(True)
        self.run_box = QComboBox()
        self.run_box.setMinimumContentsLength(40)
        self.run_box.currentIndexChanged.connect(self._run_changed)
        run_browse = QPushButton("Folder…")
        run_browse.clicked.connect(self._browse_run)
        run_row = QHBoxLayout()
        run_row.addWidget(self.run_box, 1)
        run_row.addWidget(run_browse)
        self.data_edit = QLineEdit(data_path)
        self.data_edit.setPlaceholderText("preference pairs: prompt, chosen, rejected (+ subset)")
        data_browse = QPushButton("Browse…")
        data_browse.clicked.connect(self._browse_data)
        data_row = QHBoxLayout()
        data_row.addWidget(self.data_edit, 1)
        data_row.addWidget(data_browse)
        self.limit_box = QSpinBox()
        self.limit_box.setRange(0, 10_000_000)
        self.limit_box.setSpecialValueText("all")
        self.limit_box.setToolTip("Score only the first N pairs (all when 0).")
        self.limit_box.setMaximumWidth(140)
        form = QFormLayout()
        form.addRow("Run", run_row)
        form.addRow("Pairs", data_row)
        form.addRow("Pairs to score", self.limit_box)

        self.banner = NoticeBanner()
        self.banner.hide()
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.status = QLabel("Pick a run and a preference file, then Evaluate.")
        self.status.setWordWrap(True)
        self.headline = QLabel()
        self.headline.setObjectName("panelTitle")
        self.headline.setWordWrap(True)
        self.table = QTableWidget(0, len(TABLE_COLUMNS))
        self.table.setHorizontalHeaderLabels(TABLE_COLUMNS)
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setAlternatingRowColors(True)
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        # A warning when the reward mostly follows length: a policy trained on it learns to ramble.
        self.length_banner = NoticeBanner()
        self.length_banner.hide()

        self.evaluate_button = QPushButton("Evaluate")
        self.evaluate_button.setObjectName("primaryButton")
        self.evaluate_button.setDefault(True)
        self.evaluate_button.clicked.connect(self.start)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.stop_button.clicked.connect(self.stop)
        close = QPushButton("Close")
        close.clicked.connect(self.close)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.stop_button)
        buttons.addWidget(self.evaluate_button)
        buttons.addWidget(close)

        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addLayout(form)
        layout.addWidget(self.banner)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.headline)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.length_banner)
        layout.addLayout(buttons)
        self._show_report(None)
        self.set_runs(run_dirs or ([run_dir] if run_dir else []), select=run_dir)

    # ----------------------------------------------------------------- inputs
    def set_runs(self, run_dirs: list[str], select: str = "") -> None:
        """List the runs that give a reward; the others are left out (their reason shows when picked by folder)."""
        self.run_box.blockSignals(True)
        self.run_box.clear()
        for run, kind in reward_runs(run_dirs):
            self.run_box.addItem(f"{Path(run).name}  ({kind})", run)
        self.run_box.blockSignals(False)
        if select:
            self.select_run(select)
        self._run_changed()

    def select_run(self, run_dir: str) -> None:
        index = self.run_box.findData(str(run_dir))
        if index < 0:
            try:
                kind = reward_source(run_dir).reward_kind
            except RewardEvalError as exc:
                self._error("This run gives no reward", str(exc))
                return
            self.run_box.addItem(f"{Path(run_dir).name}  ({kind})", str(run_dir))
            index = self.run_box.count() - 1
        self.run_box.setCurrentIndex(index)

    def run_dir(self) -> str:
        return str(self.run_box.currentData() or "")

    def _run_changed(self) -> None:
        # A run's held-out pairs are the fair default: it never trained on them.
        run = self.run_dir()
        held_out = Path(run) / EVAL_SPLIT_FILE if run else None
        if held_out is not None and held_out.is_file() and not self.data_edit.text().strip():
            self.data_edit.setText(str(held_out))

    def _browse_run(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Reward model run or run folder", self.run_dir())
        if folder:
            self.banner.hide()
            self.select_run(folder)

    def _browse_data(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Preference pairs", self.data_edit.text(),
                                              "Data (*.jsonl *.json *.csv *.parquet *.gz *.zst);;All files (*)")
        if path:
            self.data_edit.setText(path)

    # ---------------------------------------------------------------- running
    def start(self) -> None:
        from backend.rewards.evaluation import RewardEvaluationRun

        run, data = self.run_dir(), self.data_edit.text().strip()
        if not run:
            self._error("No run picked", "Pick a reward model run, or a run of a method with an implicit reward.")
            return
        if not data:
            self._error("No preference file", "Pick a file of pairs with prompt, chosen and rejected columns.")
            return
        try:
            worker = RewardEvaluationRun.start(run, data, limit=self.limit_box.value())
        except RewardEvalError as exc:
            self._error("Cannot evaluate", str(exc))
            return
        self._worker = worker
        self.banner.hide()
        self._show_report(None)
        self.progress.setValue(0)
        self.status.setText("Starting the evaluation worker…")
        self._set_running(True)
        self.following = True
        follow_worker_events(worker, self._relay, owner=self, on_end=self._followed)

    def _followed(self) -> None:
        self.following = False

    def stop(self) -> None:
        worker = self._worker
        if worker is None:
            return
        self.status.setText("Stopping after the current batch…")
        self.stop_button.setEnabled(False)
        stop_worker(worker, STOP_GRACE_MS)

    def is_running(self) -> bool:
        return self._worker is not None

    def _set_running(self, running: bool) -> None:
        for widget in (self.run_box, self.data_edit, self.limit_box, self.evaluate_button):
            widget.setEnabled(not running)
        self.stop_button.setEnabled(running)

    def _on_event(self, event) -> None:
        from backend.rewards.evaluation import EvalFailed, EvalFinished, EvalProgress

        if isinstance(event, EvalProgress):
            if event.total:
                self.progress.setValue(int(100 * event.done / event.total))
            self.status.setText(event.message)
        elif isinstance(event, EvalFinished):
            self._worker = None
            self._set_running(False)
            self.progress.setValue(100)
            self.report = RewardEvalReport.from_dict(event.report)
            self.status.setText(f"Scored {self.report.pairs} pairs in {self.report.seconds:.0f} s"
                                + (f"; {self.report.dropped} rows skipped." if self.report.dropped else "."))
            self._show_report(self.report)
            self.sig_finished.emit(event)
        elif isinstance(event, EvalFailed):
            self._worker = None
            self._set_running(False)
            self.progress.setValue(0)
            if event.kind == "stopped":
                self.status.setText("Stopped; no figures were kept.")
                self.banner.show_notice("info", "Evaluation stopped", event.message)
            else:
                self.status.setText("The evaluation failed.")
                self.banner.show_notice("error", "Evaluation failed", event.message,
                                        details=event.traceback if event.kind != "bad_request" else "")
            self.banner.show()
            self.sig_finished.emit(event)

    def _error(self, title: str, message: str) -> None:
        self.banner.show_notice("error", title, message)
        self.banner.show()

    # ----------------------------------------------------------------- result
    def _show_report(self, report: RewardEvalReport | None) -> None:
        self.table.setRowCount(0)
        if report is None:
            self.headline.setText("")
            self.length_banner.hide()
            return
        # The mean rewards say how far apart the two sides sit, which accuracy alone hides.
        means = ("" if report.mean_chosen is None else
                 f" · mean reward chosen {report.mean_chosen:+.3f}, rejected {report.mean_rejected:+.3f}")
        self.headline.setText(f"Accuracy {_pct(report.accuracy)} ({report.correct} of {report.pairs} pairs){means} · "
                              f"{report.reward_kind} of {report.source}")
        rows = [("All pairs", report.pairs, report.correct, report.accuracy)]
        rows += [(s.name, s.pairs, s.correct, s.accuracy) for s in report.subsets]
        self.table.setRowCount(len(rows))
        for r, (name, pairs, correct, accuracy) in enumerate(rows):
            for c, value in enumerate((name, str(pairs), str(correct), _pct(accuracy))):
                item = QTableWidgetItem(value)
                if c:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                if r == 0:
                    font = item.font()
                    font.setBold(True)
                    item.setFont(font)
                self.table.setItem(r, c, item)
        self.table.resizeColumnsToContents()
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        r = "n/a" if report.length_r is None else f"{report.length_r:+.2f}"
        biased = report.length_verdict in ("follows_length", "follows_brevity")
        self.length_banner.show_notice(
            "warning" if biased else "info",
            f"Reward and length: Pearson r = {r}, the longer answer wins {_pct(report.longer_wins)} of "
            f"{report.unequal_pairs} pairs of unequal length",
            html.escape(report.length_note))
        self.length_banner.show()

    def closeEvent(self, event) -> None:
        # Closing while evaluating stops the worker; nothing is kept from a half-done evaluation.
        if self._worker is not None:
            self.stop()
        super().closeEvent(event)


def _pct(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.1f}%"
