"""Batch compare: both models over many held-out prompts, a table, the verdict, exports.

The verdict that matters is preference accuracy on held-out pairs before and
after training (did the run learn the preference, or memorise its training
pairs?) and the length change (did it also learn to talk more?). The figures
are recomputed from the rows as they arrive, with the same arithmetic the
worker uses (``backend.compare.scoring``), and replaced by the worker's own
summary when the batch ends.
"""

from __future__ import annotations

import time
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from app.compare.request_view import RequestView, split
from app.compare.sampling import keep_spin_text_visible
from backend.compare.scoring import summarize
from app.compare.text_format import finish_text, signed
from app.compare.summary import CompareSummaryPanel
from app.compare.table_model import TEXT_COLUMNS, CompareRowsModel

EXPORT_FILTERS = {
    "CSV table (*.csv)": ".csv",
    "JSON Lines (*.jsonl)": ".jsonl",
    "HTML page (*.html)": ".html",
}
# The whole held-out split when it is small; a CPU takes seconds per prompt on a real model.
DEFAULT_PROMPTS = 32


class BatchCompareView(RequestView):
    sig_open_prompt = Signal(object)
    """The user wants to compare one row's prompt on its own (its prompt as sent)."""

    start_tip = "Generate both answers for each prompt and score the held-out pairs."

    def __init__(self, host, parent=None):
        super().__init__(host, "Stop after the prompts being generated now; the finished rows are kept and "
                               "summarised.", parent)
        self._total = 0
        self._started = 0.0
        self._summary = None
        self._beta = 0.1
        self._context: dict = {}

        # ---- controls
        controls = QFrame()
        controls.setObjectName("card")
        self.count = QSpinBox()
        self.count.setRange(1, 10_000)
        self.count.setValue(DEFAULT_PROMPTS)
        self.count.setToolTip("How many prompts to compare, from the top of the chosen source.")
        keep_spin_text_visible(self.count)
        self.count.valueChanged.connect(lambda _n: self._show_planned())
        self.source = QComboBox()
        self.source.setToolTip("The run's held-out split is the honest test: the run never trained on it.")
        self.source.currentIndexChanged.connect(self._on_source_changed)
        self.source.activated.connect(lambda _i: setattr(self, "_chosen_source", self.source.currentData()))
        self._chosen_source = None  # what the user picked; otherwise the held-out split wins
        self.scores_only = QCheckBox("Scores only")
        self.scores_only.setToolTip("Skip generation: only score each pair's chosen and rejected responses. "
                                    "Fast preference accuracy; the answer columns stay empty.")
        self.run_button = QPushButton("Run batch")
        self.run_button.setObjectName("primaryButton")
        self.run_button.clicked.connect(self.run_batch)
        self.export_button = QPushButton("Export…")
        self.export_button.setToolTip("Save the table and the summary as CSV, JSON Lines or a self-contained "
                                      "HTML page.")
        self.export_button.setEnabled(False)
        self.export_button.clicked.connect(self._choose_export_path)
        top = QHBoxLayout()
        top.setSpacing(8)
        top.addWidget(QLabel("Compare"))
        top.addWidget(self.count)
        top.addWidget(QLabel("prompts from"))
        top.addWidget(self.source, 1)
        top.addWidget(self.scores_only)
        top.addSpacing(8)
        top.addWidget(self.stop_button)
        top.addWidget(self.run_button)
        top.addWidget(self.export_button)
        self.progress = QProgressBar()
        self.progress.setFormat("%v / %m prompts")
        self.progress_label = QLabel()
        self.progress_label.setObjectName("mutedText")
        progress_row = QHBoxLayout()
        progress_row.setSpacing(10)
        progress_row.addWidget(self.progress, 1)
        progress_row.addWidget(self.progress_label)
        self.summary_panel = CompareSummaryPanel()
        cl = QVBoxLayout(controls)
        cl.setContentsMargins(14, 12, 14, 12)
        cl.setSpacing(10)
        cl.addLayout(top)
        cl.addLayout(progress_row)
        cl.addWidget(self.summary_panel)

        # ---- table and the selected row in full
        self.model = CompareRowsModel(self)
        self.table = QTableView()
        self.table.setModel(self.model)
        self.table.setAlternatingRowColors(True)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setWordWrap(False)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(26)
        header = self.table.horizontalHeader()
        header.setHighlightSections(False)
        for column in range(self.model.columnCount()):
            mode = QHeaderView.ResizeMode.Stretch if column in TEXT_COLUMNS else \
                QHeaderView.ResizeMode.ResizeToContents
            header.setSectionResizeMode(column, mode)
        self.table.setToolTip("Double-click a row to compare its prompt on its own.")
        self.table.doubleClicked.connect(self._on_double_click)
        self.table.selectionModel().currentRowChanged.connect(lambda current, _prev: self._show_row(current.row()))
        self.detail = QPlainTextEdit()
        self.detail.setObjectName("previewDetail")
        self.detail.setReadOnly(True)
        self.detail.setPlaceholderText("Select a row to read its prompt, both answers and its held-out pair in "
                                       "full.")
        self.lay_out(controls, split(Qt.Orientation.Vertical, self.table, self.detail, (3, 1)))

        self._clock = QTimer(self)
        self._clock.setInterval(500)
        self._clock.timeout.connect(self._show_progress)
        self.link.sig_batch_row.connect(self._on_row)
        self.link.sig_batch_summary.connect(self._on_summary)
        self._sources: dict[str, list] = {}
        self.set_sources({}, 0, 0)

    # ----------------------------------------------------------------- sources
    def set_sources(self, extra: dict[str, list], heldout_rows: int, heldout_pairs: int) -> None:
        """``extra`` maps source key (training, dataset) to PromptChoice lists; the held-out
        split is read by the worker itself, so only its size is needed here."""
        from app.compare.prompts import SOURCE_TITLES

        keep = self._chosen_source or "heldout"
        self._sources = {k: v for k, v in extra.items() if v}
        self._heldout = heldout_rows
        self.source.blockSignals(True)
        self.source.clear()
        if heldout_rows:
            pairs = f", {heldout_pairs} pairs" if heldout_pairs else ""
            self.source.addItem(f"the run's held-out split ({heldout_rows} prompts{pairs})", "heldout")
        for key, choices in self._sources.items():
            note = "the run trained on these" if key == "training" else "not held out"
            self.source.addItem(f"{SOURCE_TITLES[key].lower()} (first {len(choices)}; {note})", key)
        if self.source.count() == 0:
            self.source.addItem("no prompts: this run held none out", None)
        index = max(0, self.source.findData(keep))
        self.source.setCurrentIndex(index)
        self.source.blockSignals(False)
        self._on_source_changed()

    def _source_size(self) -> int:
        key = self.source.currentData()
        if key == "heldout":
            return self._heldout
        return len(self._sources.get(key, []))

    def _on_source_changed(self, *_args) -> None:
        size = self._source_size()
        if size:
            fresh = self.count.maximum() != size
            self.count.setMaximum(size)
            if fresh:
                self.count.setValue(min(size, DEFAULT_PROMPTS))
        self._show_planned()
        self.host.refresh_actions()

    def planned_count(self) -> int:
        """How many prompts Run batch will compare: the field, capped by the source."""
        size = self._source_size()
        return min(self.count.value(), size) if size else 0

    def _show_planned(self) -> None:
        """Between batches the bar reads "0 / N": N is what the next batch will run."""
        if self._request_id:
            return
        planned = self.planned_count()
        self.progress.setRange(0, max(1, planned))
        self.progress.setValue(0)
        self.progress.setFormat("%v / %m prompts" if planned else "no prompts to compare")

    def has_source(self) -> bool:
        return self._source_size() > 0

    # ------------------------------------------------------------------- run
    def run_batch(self) -> None:
        if self._request_id or not self.run_button.isEnabled():
            return
        sampling = self.sampling_or_problem()
        if sampling is not None:
            self.host.run_when_ready(lambda: self._send(sampling), "Run batch")

    def _send(self, sampling: dict) -> None:
        key = self.source.currentData()
        if key is None:
            return
        n = self.count.value()
        rows = None if key == "heldout" else [c.row for c in self._sources.get(key, [])][:n]
        request_id = self.link.batch_compare(rows, n, sampling, generate=not self.scores_only.isChecked())
        if request_id is None:
            return
        ready = self.link.ready_event()
        self._beta = ready.beta if ready is not None else 0.1
        self._context = {"source": "heldout" if key == "heldout" else "rows", "sampling": sampling,
                         "model_label": ready.model_label if ready else "", "adapter": ready.adapter if ready else "",
                         "run_dir": ready.run_dir if ready else "", "method": ready.method if ready else ""}
        self._total = self.planned_count() or n
        self._started = time.monotonic()
        self._summary = None
        self.model.clear()
        self.detail.clear()
        self.summary_panel.show_summary(None, "Comparing…")
        self.progress.setRange(0, max(1, self._total))
        self.progress.setFormat("%v / %m prompts")
        self.progress.setValue(0)
        self.begin(request_id)
        self._clock.start()
        self._show_progress()

    def on_stopping(self) -> None:
        self.progress_label.setText("Stopping after the prompts in progress…")

    def show_status(self, text: str) -> None:
        self.progress_label.setText(text)

    def _on_row(self, event) -> None:
        if event.request_id != self._request_id:
            return
        self._total = event.total or self._total
        self.model.add_row(event.row)
        self.progress.setRange(0, max(1, self._total))
        self.progress.setValue(self.model.rowCount())
        partial = summarize(self.model.rows(), beta=self._beta, **self._context)
        self.summary_panel.show_summary(partial, running=True)
        if self.model.rowCount() == 1:
            self.table.selectRow(0)
        self._show_progress()

    def _on_summary(self, event) -> None:
        if event.request_id != self._request_id:
            return
        self._summary = event.summary
        self.summary_panel.show_summary(event.summary, event.headline)

    def on_request_finished(self, event) -> None:
        self._clock.stop()
        rows = self.model.rowCount()
        if self._summary is None and rows:
            # Released or crashed before the worker summarised: the rows that did finish still count.
            self._summary = summarize(self.model.rows(), beta=self._beta, cancelled=True, **self._context)
            self.summary_panel.show_summary(self._summary)
        elapsed = time.monotonic() - self._started
        state = "stopped" if event.cancelled else ("failed" if not event.ok else "done")
        self.progress_label.setText(f"{state.capitalize()}: {rows} of {self._total} prompts in {elapsed:.0f} s")

    def _show_progress(self) -> None:
        if not self._request_id:
            return
        elapsed = time.monotonic() - self._started
        done = self.model.rowCount()
        text = f"{elapsed:.0f} s"
        if done and self._total > done:
            text += f", about {elapsed / done * (self._total - done):.0f} s left"
        self.progress_label.setText(text)

    # ---------------------------------------------------------------- reading
    def summary(self):
        return self._summary

    def rows(self) -> list:
        return self.model.rows()

    def _show_row(self, position: int) -> None:
        row = self.model.row_at(position)
        if row is None:
            self.detail.clear()
            return
        lines = [f"Prompt {row.index + 1}:", row.prompt, ""]
        for side in ("base", "aligned"):
            finish = getattr(row, f"{side}_finish")
            if finish:
                heading = (f"{side.capitalize()} answer ({getattr(row, f'{side}_tokens')} tokens, "
                           f"{finish_text(finish, getattr(row, f'{side}_stop_string'))}; implicit reward "
                           f"{signed(getattr(row, f'{side}_answer_reward'))}):")
                lines += [heading, getattr(row, f"{side}_answer"), ""]
        if row.chosen is not None:
            lines += [f"Chosen (reward {signed(row.chosen_reward)}):", row.chosen, "",
                      f"Rejected (reward {signed(row.rejected_reward)}):", row.rejected or ""]
        self.detail.setPlainText("\n".join(lines).strip())

    def _on_double_click(self, index) -> None:
        row = self.model.row_at(index.row())
        if row is not None:
            self.sig_open_prompt.emit(row.prompt_source if row.prompt_source is not None else row.prompt)

    # ----------------------------------------------------------------- export
    def _choose_export_path(self) -> None:
        ready = self.link.ready_event()
        name = Path(self._context.get("run_dir") or (ready.run_dir if ready else "") or "compare").name
        start = str(Path(self.host.export_dir()) / f"{name}-compare.html")
        path, chosen = QFileDialog.getSaveFileName(self, "Export the comparison", start, ";;".join(EXPORT_FILTERS),
                                                   "HTML page (*.html)")
        if not path:
            return
        if Path(path).suffix.lower() not in (".csv", ".jsonl", ".html", ".htm"):
            path += EXPORT_FILTERS.get(chosen, ".html")
        self.export_to(path)

    def export_to(self, path: str | Path) -> list[Path]:
        """Write the table and summary (format from the suffix); reports the result in the tab."""
        from backend.compare.export import export_compare

        summary = self._summary or summarize(self.model.rows(), beta=self._beta, **self._context)
        try:
            written = export_compare(path, self.model.rows(), summary)
        except (OSError, ValueError) as exc:
            self.host.show_problem("The export could not be written", str(exc))
            return []
        self.host.remember_export_dir(str(Path(path).parent))
        self.host.show_notice("success", "Comparison exported", "\n".join(str(p) for p in written))
        return written

    # ---------------------------------------------------------------- buttons
    def start_button(self) -> QPushButton:
        return self.run_button

    def can_start_here(self) -> tuple[bool, str]:
        return self.has_source(), "This run held out no prompts."

    def locked_while_running(self) -> tuple[QWidget, ...]:
        return self.count, self.source, self.scores_only

    def sync_buttons(self) -> None:
        self.export_button.setEnabled(not self._request_id and self.model.rowCount() > 0)
        super().sync_buttons()
