"""The Runs tab: every run folder, reopened or overlaid on the same plots.

The list is built from the run folders alone (``backend.runs.folder``), so runs
made by the CLI, by an earlier session or by another machine show up the same
way. Reading folders and replaying their metrics happens on the thread pool.
"""

from __future__ import annotations

import datetime as _dt
import math
from pathlib import Path

from PySide6.QtCore import QTimer, QUrl, Qt, Signal
from PySide6.QtGui import QColor, QDesktopServices
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMessageBox,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QStackedWidget,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app.background_call import call_in_background
from app.runs.tensorboard_launcher import TENSORBOARD_LOG, TensorBoardLauncher, why_no_tensorboard
from backend.runs.config_diff import config_differences, parse_config_text, value_text
from backend.methods import all_methods, method_label
from backend.runs.clock import format_duration
from app.train.metric_catalog import collect_points, feed_points, style_for_key, styles_for_method
from backend.core.paths import runs_dir



def _metric_columns() -> tuple[tuple[str, str], ...]:
    """(key, header) of the final-metric columns: every registered method's summary metrics, once."""
    columns: dict[str, str] = {}
    for spec in all_methods():
        for key, label in spec.summary_metrics:
            columns.setdefault(key, label[:1].upper() + label[1:])
    return tuple(columns.items())


METRIC_COLUMNS = _metric_columns()
COLUMNS = ("Run", "Status", "Method", "Model", "Data", "Started", "Duration", "Steps") + tuple(
    header for _key, header in METRIC_COLUMNS)
STATUS_COLOURS = {
    "completed": "#15803d", "stopped": "#2563eb", "running": "#7c3aed",
    "failed": "#b91c1c", "damaged": "#b45309", "interrupted": "#b45309",
}
RUN_DIR_ROLE = Qt.ItemDataRole.UserRole + 10
TENSORBOARD_START_S = 60.0  # its first start imports a lot
SORT_ROLE = Qt.ItemDataRole.UserRole + 11


class _SortableItem(QTableWidgetItem):
    def __lt__(self, other):
        a, b = self.data(SORT_ROLE), other.data(SORT_ROLE)
        if a is None or b is None:
            # Not super().__lt__: PySide dispatches that back to this override.
            return self.text().lower() < other.text().lower()
        return a < b


def _metric_text(value) -> tuple[str, float | None]:
    if value is None:
        return "", None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return str(value), None
    return (f"{value:.4g}" if math.isfinite(value) else str(value)), value


def _setting_labels(configs: list[dict]) -> dict[str, str]:
    """Each setting's label in the settings form, for the methods of ``configs``."""
    from backend.methods import method_keys
    from backend.runs.config import default_config, user_fields

    labels: dict[str, str] = {"method": "Method"}
    for method in dict.fromkeys(c.get("method") for c in configs):
        if method in method_keys():
            for f in user_fields(default_config(method)):
                labels.setdefault(f.name, f.metadata.get("label") or f.name)
    return labels


def _load_runs(roots: list[str]):
    from backend.runs.folder import list_runs

    runs, seen = [], set()
    for root in roots:
        for summary in list_runs(root):
            key = str(Path(summary.run_dir).resolve())
            if key not in seen:
                seen.add(key)
                runs.append(summary)
    runs.sort(key=lambda r: r.started_at or 0, reverse=True)
    return runs


def _load_run_details(run_dirs: list[str]):
    """(run folder, plotted series, config text, number of events) for each run; on the pool."""
    from backend.runs.folder import CONFIG_FILE, current_attempt_events, read_events

    details = []
    for run_dir in run_dirs:
        try:
            config_text = (Path(run_dir) / CONFIG_FILE).read_text(encoding="utf-8")
        except OSError as exc:
            config_text = f"# config.yaml cannot be read: {exc}"
        events = current_attempt_events(read_events(run_dir))
        details.append((run_dir, collect_points(events), config_text, len(events)))
    return details


class RunsTab(QWidget):
    sig_use_settings = Signal(str)
    """The user wants to train again with a run's settings; carries the run folder."""

    sig_compare_requested = Signal(str)
    """The user wants to compare a run's adapter with its base model; carries the run folder."""

    sig_resume_requested = Signal(str)
    """The user wants a stopped or crashed run to continue from its last checkpoint; carries the run folder."""

    sig_runs_listed = Signal(list)
    """The run list was (re)built; carries the RunSummary objects."""

    sig_runs_opened = Signal(list)
    """The viewer now shows these run folders (one: reopened, several: overlaid)."""

    def __init__(self, extra_roots=None, parent=None):
        super().__init__(parent)
        self.setObjectName("runsPage")
        self._extra_roots = extra_roots or (lambda: [])
        self._summaries: dict[str, object] = {}
        self._grid = None
        self._open_generation = 0
        self._shown: list[str] = []
        self.confirm = self._ask  # replaced in tests

        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.clicked.connect(self.refresh)
        self.overlay_button = QPushButton("Overlay selected")
        self.overlay_button.setToolTip("Draw every selected run on the same plots (select with Ctrl or Shift).")
        self.overlay_button.clicked.connect(self._overlay_selected)
        self.folder_button = QPushButton("Open folder")
        self.folder_button.clicked.connect(self._open_folder)
        self.compare_button = QPushButton("Compare…")
        self.compare_button.setToolTip("Open this run's adapter in the Compare tab, next to its base model.")
        self.compare_button.clicked.connect(self._compare)
        self.export_button = QPushButton("Export…")
        self.export_button.setToolTip("Export the adapter, a merged model, a GGUF file or an Ollama model.")
        self.export_button.clicked.connect(self._export)
        self.command_button = QPushButton("Export as command…")
        self.command_button.setToolTip("Write this run's config, an accelerate config and launch scripts that train "
                                       "it again in several processes (DDP, FSDP, DeepSpeed ZeRO-2/3).")
        self.command_button.clicked.connect(self._export_command)
        self.tensorboard_button = QPushButton("TensorBoard")
        self.tensorboard_button.clicked.connect(self._open_tensorboard)
        self.tensorboard = TensorBoardLauncher()
        self.destroyed.connect(lambda *_, launcher=self.tensorboard: launcher.stop())
        self.resume_button = QPushButton("Resume")
        self.resume_button.setObjectName("primaryButton")
        self.resume_button.clicked.connect(self._resume)
        self.reuse_button = QPushButton("Train again with these settings")
        self.reuse_button.clicked.connect(self._reuse)
        self.delete_button = QPushButton("Delete…")
        self.delete_button.clicked.connect(self.delete_selected)
        self.count_label = QLabel()
        self.count_label.setObjectName("mutedText")

        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setObjectName("runsTable")
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setAlternatingRowColors(True)
        self.table.verticalHeader().setVisible(False)
        self.table.setSortingEnabled(True)
        self.table.setWordWrap(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setStretchLastSection(True)
        self.table.itemSelectionChanged.connect(self._on_selection)
        self.table.itemDoubleClicked.connect(lambda *_: self.open_runs(self.selected_run_dirs()[:1]))

        self.viewer_title = QLabel("Select a run to see its plots; select several to overlay them.")
        self.viewer_title.setObjectName("panelTitle")
        self.viewer_title.setWordWrap(True)
        self.viewer_summary = QLabel()
        self.viewer_summary.setObjectName("mutedText")
        self.viewer_summary.setWordWrap(True)
        self.viewer_stack = QStackedWidget()
        empty = QLabel("No run open.")
        empty.setObjectName("emptyState")
        empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.viewer_stack.addWidget(empty)
        self.config_view = QPlainTextEdit()
        self.config_view.setObjectName("configView")
        self.config_view.setReadOnly(True)
        # Several runs: a table of the settings that differ, not their YAML one after the other.
        self.diff_note = QLabel()
        self.diff_note.setObjectName("mutedText")
        self.diff_note.setWordWrap(True)
        self.diff_table = QTableWidget(0, 0)
        self.diff_table.setObjectName("configDiff")
        self.diff_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.diff_table.setAlternatingRowColors(True)
        self.diff_table.setWordWrap(False)
        self.diff_table.horizontalHeader().setStretchLastSection(True)
        diff_page = QWidget()
        diff_layout = QVBoxLayout(diff_page)
        diff_layout.setContentsMargins(0, 4, 0, 0)
        diff_layout.addWidget(self.diff_note)
        diff_layout.addWidget(self.diff_table, 1)
        self.config_stack = QStackedWidget()
        self.config_stack.addWidget(self.config_view)
        self.config_stack.addWidget(diff_page)
        self.fit_button = QPushButton("Show all steps")
        self.fit_button.clicked.connect(lambda: self._grid.follow_all() if self._grid is not None else None)
        self.detail_tabs = QTabWidget()
        self.detail_tabs.setCornerWidget(self.fit_button)
        self.detail_tabs.addTab(self.viewer_stack, "Plots")
        self.detail_tabs.addTab(self.config_stack, "Config")

        bar = QHBoxLayout()
        for b in (self.refresh_button, self.overlay_button, self.folder_button, self.compare_button, self.export_button,
                  self.command_button, self.tensorboard_button, self.resume_button, self.reuse_button,
                  self.delete_button):
            bar.addWidget(b)
        bar.addStretch(1)
        bar.addWidget(self.count_label)

        detail = QWidget()
        dl = QVBoxLayout(detail)
        dl.setContentsMargins(0, 6, 0, 0)
        dl.setSpacing(4)
        dl.addWidget(self.viewer_title)
        dl.addWidget(self.viewer_summary)
        dl.addWidget(self.detail_tabs, 1)

        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(self.table)
        splitter.addWidget(detail)
        splitter.setStretchFactor(0, 2)
        splitter.setStretchFactor(1, 5)
        splitter.setSizes([230, 600])
        splitter.setChildrenCollapsible(False)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 12, 12, 12)
        layout.setSpacing(8)
        layout.addLayout(bar)
        layout.addWidget(splitter, 1)

        self._selection_timer = QTimer(self)
        self._selection_timer.setSingleShot(True)
        self._selection_timer.setInterval(150)
        self._selection_timer.timeout.connect(lambda: self.open_runs(self.selected_run_dirs()))
        self._update_buttons()

    # ------------------------------------------------------------------ list
    def roots(self) -> list[str]:
        roots = [str(runs_dir())]
        for extra in self._extra_roots():
            if extra and extra not in roots:
                roots.append(extra)
        return roots

    def refresh(self) -> None:
        roots = self.roots()
        call_in_background(lambda: _load_runs(roots), self._fill,
                           lambda exc, tb: self.count_label.setText(f"Could not list runs: {exc}"), owner=self)

    def summaries(self) -> list:
        return list(self._summaries.values())

    def _fill(self, runs: list) -> None:
        selected = set(self.selected_run_dirs())
        self._summaries = {str(r.run_dir): r for r in runs}
        self.table.setSortingEnabled(False)
        self.table.blockSignals(True)
        self.table.setRowCount(len(runs))
        for row, run in enumerate(runs):
            started = _dt.datetime.fromtimestamp(run.started_at).strftime("%Y-%m-%d %H:%M") if run.started_at else ""
            metrics = dict(run.final_metrics or {})
            cells = [
                (run.name, None), (run.status, None), (method_label(run.method), None),
                (Path(run.model).name if run.model and Path(run.model).is_absolute() else run.model, None),
                # A hub dataset's id is its name; a file is known by its own name.
                (Path(run.data_path).name if run.data_path and Path(run.data_path).is_absolute()
                 else run.data_path or "", None),
                (started, run.started_at or 0.0),
                (format_duration(run.duration_s) if run.duration_s is not None else "", run.duration_s or 0.0),
                (f"{run.step}/{run.total_steps}" if run.total_steps else str(run.step), float(run.step)),
            ]
            for key, _header in METRIC_COLUMNS:
                cells.append(_metric_text(metrics.get(key)))
            for col, (text, sort_value) in enumerate(cells):
                item = _SortableItem(text)
                item.setData(RUN_DIR_ROLE, str(run.run_dir))
                if sort_value is not None:
                    item.setData(SORT_ROLE, sort_value)
                if col == 1:
                    item.setForeground(QColor(STATUS_COLOURS.get(run.status, "#374151")))
                    if run.error:
                        item.setToolTip(run.error)
                if col in (3, 4):
                    item.setToolTip(run.model if col == 3 else run.data_path)
                if col == 0:
                    item.setToolTip(str(run.run_dir))
                self.table.setItem(row, col, item)
        self.table.blockSignals(False)
        self.table.setSortingEnabled(True)
        self.table.resizeColumnsToContents()
        for col in range(self.table.columnCount()):
            self.table.setColumnWidth(col, min(self.table.columnWidth(col) + 12, 260))
        if selected:
            self.select_runs(sorted(selected))
        self.count_label.setText(f"{len(runs)} run{'s' if len(runs) != 1 else ''} in {', '.join(self.roots())}")
        self._update_buttons()
        self.sig_runs_listed.emit(runs)

    def run_dirs(self) -> list[str]:
        return [self.table.item(r, 0).data(RUN_DIR_ROLE) for r in range(self.table.rowCount())]

    def selected_run_dirs(self) -> list[str]:
        rows = sorted({index.row() for index in self.table.selectionModel().selectedRows()})
        return [self.table.item(r, 0).data(RUN_DIR_ROLE) for r in rows]

    def select_runs(self, run_dirs: list[str]) -> None:
        wanted = {str(d) for d in run_dirs}
        self.table.clearSelection()
        mode = self.table.selectionMode()
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.MultiSelection)
        for row in range(self.table.rowCount()):
            if self.table.item(row, 0).data(RUN_DIR_ROLE) in wanted:
                self.table.selectRow(row)
        self.table.setSelectionMode(mode)

    def _on_selection(self) -> None:
        self._update_buttons()
        if self.selected_run_dirs():
            self._selection_timer.start()

    def _update_buttons(self) -> None:
        selected = self.selected_run_dirs()
        running = any(getattr(self._summaries.get(d), "status", "") == "running" for d in selected)
        already = len(selected) >= 2 and selected == self._shown
        self.overlay_button.setEnabled(len(selected) >= 2 and not already)
        self.overlay_button.setToolTip(
            "The selected runs are overlaid below." if already else
            "Draw every selected run on the same plots (select with Ctrl or Shift).")
        self.folder_button.setEnabled(len(selected) == 1)
        self.reuse_button.setEnabled(len(selected) == 1)
        adapter = len(selected) == 1 and bool(getattr(self._summaries.get(selected[0]), "adapter_path", ""))
        self.compare_button.setEnabled(adapter)
        self.export_button.setEnabled(adapter)
        self.command_button.setEnabled(len(selected) == 1)
        why_not = why_no_tensorboard(selected[0]) if len(selected) == 1 else "Select one run."
        self.tensorboard_button.setEnabled(not why_not)
        self.tensorboard_button.setToolTip(why_not or "Open TensorBoard on this run's event files in the browser.")
        self._update_resume_button(selected)
        self.delete_button.setEnabled(bool(selected) and not running)
        self.delete_button.setToolTip("Stop the run before deleting it." if running
                                      else "Delete the selected run folders.")

    # ---------------------------------------------------------------- viewer
    def ensure_plots(self):
        if self._grid is None:
            from widgets.metric_plots import MetricPlotGrid

            self._grid = MetricPlotGrid(style_for_key, empty_text="This run logged no metrics.")
            self._grid.set_smoothing(0.6)
            self.viewer_stack.addWidget(self._grid)
        return self._grid

    @property
    def plots(self):
        return self.ensure_plots()

    def shown_runs(self) -> list[str]:
        return list(self._shown)

    def _overlay_selected(self) -> None:
        self.detail_tabs.setCurrentIndex(0)  # the overlay is in the plots
        self.open_runs(self.selected_run_dirs())

    def open_runs(self, run_dirs: list[str]) -> None:
        """Show one run's plots and config, or overlay several runs on the same plots."""
        if not run_dirs:
            return
        self.viewer_summary.setText(f"Reading {len(run_dirs)} run{'s' if len(run_dirs) > 1 else ''}…")
        self._open_generation += 1
        generation = self._open_generation
        call_in_background(lambda: _load_run_details(list(run_dirs)),
                           lambda details: self._show(generation, details),
                           lambda exc, tb: self.viewer_summary.setText(f"Could not read the run: {exc}"),
                           owner=self)

    def _show(self, generation: int, details: list) -> None:
        if generation != self._open_generation:
            return
        grid = self.ensure_plots()
        grid.clear()
        # Overlaid runs of different methods: the first one's titles; the keys they share plot together.
        first = self._summaries.get(details[0][0]) if details else None
        grid.set_style_for_key(styles_for_method(first.method if first else ""))
        names = []
        for run_dir, _points, _config, _count in details:
            summary = self._summaries.get(run_dir)
            label = Path(run_dir).name
            if summary is not None and len(details) > 1:
                label = f"{label} ({method_label(summary.method)})"
            grid.add_run(run_dir, label)
            names.append(label)
        for run_dir, points, _config, _count in details:
            feed_points(grid, points, run=run_dir)
        self.viewer_stack.setCurrentWidget(grid)
        self._shown = [d for d, _p, _c, _n in details]
        if len(details) == 1:
            run_dir, _points, config_text, count = details[0]
            summary = self._summaries.get(run_dir)
            self.viewer_title.setText(Path(run_dir).name)
            self.viewer_summary.setText(self._describe(summary, count))
            self.config_view.setPlainText(config_text)
            self.config_stack.setCurrentIndex(0)
        else:
            self.viewer_title.setText(f"Overlay of {len(details)} runs")
            self.viewer_summary.setText("Each run has its own colour; within a run, dashed lines are the "
                                        "rejected side and dotted lines with markers are evaluations.")
            self._show_differences(names, [parse_config_text(c) for _d, _p, c, _n in details])
        self._update_buttons()
        self.sig_runs_opened.emit(list(self._shown))

    def _show_differences(self, names: list[str], configs: list[dict]) -> None:
        differing, same = config_differences(configs)
        table = self.diff_table
        table.clear()
        table.setColumnCount(len(names))
        table.setHorizontalHeaderLabels(names)
        table.setRowCount(len(differing))
        labels = _setting_labels(configs)
        table.setVerticalHeaderLabels([labels.get(key, key) for key, _values in differing])
        for row, (key, values) in enumerate(differing):
            table.verticalHeaderItem(row).setToolTip(f"{key} in config.yaml")
            for col, value in enumerate(values):
                item = QTableWidgetItem(value_text(value))
                item.setToolTip(f"{key}: {value_text(value)}")
                table.setItem(row, col, item)
        table.resizeColumnsToContents()
        self.diff_note.setText(
            (f"{len(differing)} setting{'s differ' if len(differing) != 1 else ' differs'}" if differing
             else "The runs have the same settings")
            + f"; {same} {'is' if same == 1 else 'are'} the same in all of them and not shown.")
        self.config_stack.setCurrentIndex(1)

    @staticmethod
    def _describe(summary, event_count: int) -> str:
        if summary is None:
            return f"{event_count} events"
        parts = [f"{method_label(summary.method)} on {Path(summary.data_path).name if summary.data_path else '?'}",
                 f"model {summary.model}", f"status {summary.status}"]
        if summary.duration_s is not None:
            parts.append(f"took {format_duration(summary.duration_s)}")
        if summary.error:
            parts.append(f"error: {summary.error}")
        if summary.adapter_path:
            parts.append(f"adapter in {summary.adapter_path}")
        return " · ".join(parts)

    # --------------------------------------------------------------- actions
    def _open_folder(self) -> None:
        selected = self.selected_run_dirs()
        if selected:
            QDesktopServices.openUrl(QUrl.fromLocalFile(selected[0]))

    def _compare(self) -> None:
        selected = self.selected_run_dirs()
        if selected:
            self.sig_compare_requested.emit(selected[0])

    def _export(self) -> None:
        from app.runs.export_dialog import ExportDialog

        selected = self.selected_run_dirs()
        if selected:
            self.export_dialog = ExportDialog(selected[0], parent=self)
            self.export_dialog.show()

    def _export_command(self) -> None:
        from app.runs.command_export_dialog import CommandExportDialog

        selected = self.selected_run_dirs()
        if selected:
            self.command_dialog = CommandExportDialog(selected[0], parent=self)
            self.command_dialog.show()

    def _open_tensorboard(self) -> None:
        selected = self.selected_run_dirs()
        if not selected:
            return
        url = self.tensorboard.start(selected[0])
        launcher = self.tensorboard
        self.tensorboard_button.setEnabled(False)
        self.tensorboard_button.setText("TensorBoard starting…")

        def opened(answering: bool) -> None:
            self.tensorboard_button.setText("TensorBoard")
            self._update_buttons()
            if answering:
                QDesktopServices.openUrl(QUrl(url))
            else:
                QMessageBox.warning(self, "TensorBoard did not start",
                                    f"TensorBoard did not answer at {url}. Its output is in "
                                    f"{Path(selected[0]) / TENSORBOARD_LOG}.")

        call_in_background(lambda: launcher.wait_until_answering(TENSORBOARD_START_S), opened, owner=self)

    def _update_resume_button(self, selected: list[str]) -> None:
        summary = self._summaries.get(selected[0]) if len(selected) == 1 else None
        resumable = bool(summary is not None and summary.resumable)
        self.resume_button.setEnabled(resumable)
        if resumable:
            tip = (f"Continue this run from its checkpoint at step {summary.checkpoint_step} "
                   f"of {summary.total_steps or '?'}, in the same folder; its plots go on where they stopped.")
        elif summary is not None and summary.status in ("stopped", "failed", "interrupted"):
            tip = "This run saved no checkpoint to continue from."
        else:
            tip = "Select one stopped or failed run to continue it from its last checkpoint."
        self.resume_button.setToolTip(tip)

    def _resume(self) -> None:
        selected = self.selected_run_dirs()
        if len(selected) == 1:
            self.sig_resume_requested.emit(selected[0])

    def _reuse(self) -> None:
        selected = self.selected_run_dirs()
        if selected:
            self.sig_use_settings.emit(selected[0])

    def _ask(self, title: str, text: str) -> bool:
        answer = QMessageBox.question(self, title, text, QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                                      QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    def delete_selected(self) -> None:
        from backend.runs.folder import delete_run

        selected = self.selected_run_dirs()
        if not selected:
            return
        names = ", ".join(Path(d).name for d in selected[:5]) + ("…" if len(selected) > 5 else "")
        if not self.confirm("Delete runs?", f"Delete {len(selected)} run folder(s) for good?\n\n{names}\n\n"
                                            "Their metrics, adapters and checkpoints are removed from disk."):
            return
        errors = []
        for run_dir in selected:
            try:
                delete_run(run_dir)
            except (OSError, ValueError, RuntimeError) as exc:
                errors.append(f"{Path(run_dir).name}: {exc}")
        if set(selected) & set(self._shown):
            if self._grid is not None:
                self._grid.clear()
            self._shown = []
            self.viewer_title.setText("Select a run to see its plots; select several to overlay them.")
            self.viewer_summary.clear()
            self.config_view.clear()
            self.diff_table.setRowCount(0)
        if errors:
            QMessageBox.warning(self, "Some runs were not deleted", "\n".join(errors))
        self.refresh()
