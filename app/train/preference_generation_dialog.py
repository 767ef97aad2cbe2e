"""The window for making preference data with models: AI feedback and Constitutional AI.

The job runs in ``backend.generation.preferences.worker`` (a child process); its event stream is
followed on the window's background mechanism and relayed to the GUI thread. Stop cuts the row
in progress short and keeps the finished ones; starting the same job again (the button then says
Resume) continues from them. When it finishes, "Open in Data panel" hands the new file to the
Data panel, ready for preference training. The rows made so far are listed as they come, each
with why it exists (the judge's verdicts, or the principle and the critique).
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QDialog, QDoubleSpinBox, QFileDialog, QFormLayout,
                               QGroupBox, QHBoxLayout, QHeaderView, QLabel, QLineEdit, QProgressBar, QPushButton,
                               QSpinBox, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from app.background_call import EventRelay, follow_worker_events, stop_worker
from backend.generation.preferences.request import (AI_FEEDBACK, CONSTITUTIONAL, JOB_LABELS, JOBS, GenerationRequest,
                                                   RequestError)
from widgets.notice_banner import NoticeBanner

STOP_GRACE_MS = 20_000
ANSWER_SOURCES = (("file", "From the file (pairs or two answer columns)"),
                  ("one", "Sampled twice from one model"),
                  ("two", "One answer from each of two models"))
DATA_FILTER = "Data files (*.jsonl *.json *.csv *.tsv *.parquet *.gz *.zst);;All files (*)"
EMBEDDED_HINT = "empty: the embedded Gemma 3 270M; or a model folder, .gguf file, hub id or run folder"


def _model_row(edit: QLineEdit, parent: QWidget) -> QHBoxLayout:
    edit.setPlaceholderText(EMBEDDED_HINT)
    button = QPushButton("Folder…")

    def pick():
        folder = QFileDialog.getExistingDirectory(parent, "Model or run folder", edit.text())
        if folder:
            edit.setText(folder)

    button.clicked.connect(pick)
    row = QHBoxLayout()
    row.addWidget(edit, 1)
    row.addWidget(button)
    return row


class PrinciplesEditor(QGroupBox):
    """The constitution as an editable table: a name, a critique request and a revision request per row."""

    COLUMNS = ("name", "critique", "revision")

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Principles (one is used per prompt, in turn)", parent)
        self.table = QTableWidget(0, 3)
        self.table.setHorizontalHeaderLabels(["Name", "Critique request", "Revision request"])
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        self.table.verticalHeader().setVisible(False)
        self.table.setWordWrap(True)
        buttons = QHBoxLayout()
        for text, slot in (("Add", self.add_row), ("Remove", self.remove_row), ("Load…", self.load),
                           ("Save as…", self.save_as), ("Default list", self.reset)):
            button = QPushButton(text)
            button.clicked.connect(slot)
            buttons.addWidget(button)
        buttons.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addWidget(self.table)
        layout.addLayout(buttons)
        self.reset()

    def principles(self) -> list[dict[str, str]]:
        out = []
        for r in range(self.table.rowCount()):
            values = {key: (self.table.item(r, c).text() if self.table.item(r, c) else "").strip()
                      for c, key in enumerate(self.COLUMNS)}
            if any(values.values()):
                out.append(values)
        return out

    def set_principles(self, principles: list[dict[str, str]]) -> None:
        self.table.setRowCount(0)
        for p in principles:
            self.add_row(p)
        self.table.resizeRowsToContents()

    def add_row(self, principle: dict | None = None) -> None:
        principle = principle if isinstance(principle, dict) else {}
        r = self.table.rowCount()
        self.table.insertRow(r)
        for c, key in enumerate(self.COLUMNS):
            self.table.setItem(r, c, QTableWidgetItem(str(principle.get(key, ""))))

    def remove_row(self) -> None:
        rows = sorted({i.row() for i in self.table.selectedIndexes()}, reverse=True)
        for r in rows or [self.table.rowCount() - 1]:
            if r >= 0:
                self.table.removeRow(r)

    def reset(self) -> None:
        from backend.generation.preferences.constitution import default_principles

        self.set_principles(default_principles())

    def load(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load principles", "", "YAML (*.yaml *.yml)")
        if path:
            self.load_file(path)

    def load_file(self, path: str) -> str:
        """Load ``path``; the error message ("" when loaded) is also shown to the user."""
        from backend.generation.preferences.constitution import load_principles

        try:
            self.set_principles(load_principles(path))
        except RequestError as exc:
            self._tell(str(exc))
            return str(exc)
        return ""

    def save_as(self) -> None:
        from backend.generation.preferences.constitution import save_principles

        path, _ = QFileDialog.getSaveFileName(self, "Save principles", "constitution.yaml", "YAML (*.yaml)")
        if path:
            try:
                save_principles(path, self.principles())
            except (RequestError, OSError) as exc:
                self._tell(str(exc))

    def _tell(self, message: str) -> None:
        dialog = self.window()
        if isinstance(dialog, PreferenceGenerationDialog):
            dialog.show_problem("The principles cannot be used", message)


class PreferenceGenerationDialog(QDialog):
    sig_open_in_data_panel = Signal(str)
    """The user asked to open the generated file in the Data panel."""

    def __init__(self, input_path: str = "", parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Generate preference data")
        self.setMinimumWidth(820)
        self._job = None
        self._result_path = ""
        self.following = False
        self._relay = EventRelay(self)
        self._relay.sig_event.connect(self._on_event)

        self.job_box = QComboBox()
        for job in JOBS:
            self.job_box.addItem(JOB_LABELS[job], job)
        self.input_edit = QLineEdit(input_path)
        self.input_edit.setPlaceholderText("prompts, preference pairs, or a prompt with two answer columns")
        self.output_edit = QLineEdit()
        self.model_edit = QLineEdit()
        self.model_label = QLabel("Judge")
        self.answers_box = QComboBox()
        for key, label in ANSWER_SOURCES:
            self.answers_box.addItem(label, key)
        self.answer_edits = [QLineEdit(), QLineEdit()]
        self.answer_labels = [QLabel("Answer model"), QLabel("Second answer model")]
        self.tokens_spin = QSpinBox()
        self.tokens_spin.setRange(1, 4096)
        self.tokens_spin.setValue(96)
        self.temperature_spin = QDoubleSpinBox()
        self.temperature_spin.setRange(0.0, 5.0)
        self.temperature_spin.setSingleStep(0.1)
        self.temperature_spin.setValue(0.7)
        self.limit_spin = QSpinBox()
        self.limit_spin.setRange(0, 10_000_000)
        self.limit_spin.setSpecialValueText("all rows")
        self.seed_spin = QSpinBox()
        self.seed_spin.setRange(0, 2**31 - 1)
        numbers = QHBoxLayout()
        for label, widget in (("Max new tokens", self.tokens_spin), ("Temperature", self.temperature_spin),
                              ("Rows", self.limit_spin), ("Seed", self.seed_spin)):
            numbers.addWidget(QLabel(label))
            numbers.addWidget(widget)
        numbers.addStretch(1)

        form = QFormLayout()
        form.addRow("Job", self.job_box)
        form.addRow("Input", self._file_row(self.input_edit, self._browse_input))
        form.addRow("Output", self._file_row(self.output_edit, self._browse_output))
        form.addRow(self.model_label, _model_row(self.model_edit, self))
        form.addRow("Answers", self.answers_box)
        for label, edit in zip(self.answer_labels, self.answer_edits):
            form.addRow(label, _model_row(edit, self))
        form.addRow("", numbers)
        self.form = form
        self.principles = PrinciplesEditor()

        self.banner = NoticeBanner()
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.status = QLabel("Ready.")
        self.status.setWordWrap(True)
        self.summary = QLabel()
        self.summary.setWordWrap(True)
        self.results = QTableWidget(0, 5)
        self.results.setHorizontalHeaderLabels(["Line", "Pair", "Chosen", "Rejected", "Why"])
        self.results.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.results.verticalHeader().setVisible(False)
        header = self.results.horizontalHeader()
        for c in (0, 1):
            header.setSectionResizeMode(c, QHeaderView.ResizeMode.ResizeToContents)
        for c in (2, 3, 4):
            header.setSectionResizeMode(c, QHeaderView.ResizeMode.Stretch)

        self.start_button = QPushButton("Start")
        self.start_button.setDefault(True)
        self.start_button.clicked.connect(lambda: self.start())
        self.restart_button = QPushButton("Start over")
        self.restart_button.setToolTip("Discard the rows a stopped run of this output finished, and begin again")
        self.restart_button.clicked.connect(lambda: self.start(restart=True))
        self.stop_button = QPushButton("Stop")
        self.stop_button.clicked.connect(self.stop)
        self.open_button = QPushButton("Open in Data panel")
        self.open_button.clicked.connect(self._open_in_data_panel)
        close = QPushButton("Close")
        close.clicked.connect(self.close)
        buttons = QHBoxLayout()
        buttons.addWidget(self.open_button)
        buttons.addStretch(1)
        for button in (self.restart_button, self.stop_button, self.start_button, close):
            buttons.addWidget(button)

        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.principles, 3)
        layout.addWidget(self.banner)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.summary)
        layout.addWidget(self.results, 2)
        layout.addLayout(buttons)

        self.job_box.currentIndexChanged.connect(self._job_changed)
        self.answers_box.currentIndexChanged.connect(self._job_changed)
        # Any setting in the job's fingerprint decides whether a half-done run can be resumed.
        for edit in (self.input_edit, self.output_edit, self.model_edit, *self.answer_edits):
            edit.textChanged.connect(self._paths_changed)
        for spin in (self.tokens_spin, self.temperature_spin, self.seed_spin):
            spin.valueChanged.connect(self._paths_changed)
        self.principles.table.itemChanged.connect(self._paths_changed)
        self._set_running(False)
        self._job_changed()

    # ------------------------------------------------------------------ form
    def _file_row(self, edit: QLineEdit, browse) -> QHBoxLayout:
        button = QPushButton("Browse…")
        button.clicked.connect(browse)
        row = QHBoxLayout()
        row.addWidget(edit, 1)
        row.addWidget(button)
        return row

    def _browse_input(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Input prompts or pairs", self.input_edit.text(), DATA_FILTER)
        if path:
            self.input_edit.setText(path)

    def _browse_output(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save the pairs as", self.output_edit.text() or
                                              str(self.request().output), "JSON Lines (*.jsonl)")
        if path:
            self.output_edit.setText(path)

    def set_job(self, job: str) -> None:
        self.job_box.setCurrentIndex(JOBS.index(job))

    def job(self) -> str:
        return self.job_box.currentData()

    def _job_changed(self, *_args) -> None:
        feedback = self.job() == AI_FEEDBACK
        self.model_label.setText("Judge" if feedback else "Model")
        self.model_edit.setToolTip("The judge compares two answers, in both orders" if feedback else
                                   "The model answers, critiques its answer and revises it")
        self.form.setRowVisible(self.answers_box, feedback)
        source = self.answers_box.currentData()
        for i, (label, edit) in enumerate(zip(self.answer_labels, self.answer_edits)):
            visible = feedback and (source == "two" or (source == "one" and i == 0))
            self.form.setRowVisible(label, visible)
        self.principles.setVisible(not feedback)
        # A dropped AI-feedback row shows the two answers judged, in the file's order.
        self.results.setHorizontalHeaderLabels(
            ["Line", "Pair", "Chosen / answer 1", "Rejected / answer 2", "Judge: P(1 better), both orders"] if feedback
            else ["Line", "Pair", "Chosen (revision)", "Rejected (first answer)", "Principle and critique"])
        self._paths_changed()

    def _paths_changed(self, *_args) -> None:
        request = self.request()
        self.output_edit.setPlaceholderText(str(request.output) if request.input_path.strip() else
                                            "<input>.<job>.jsonl next to the input")
        if self._job is None:
            done = _partial_rows(request)
            self.start_button.setText(f"Resume ({done} rows done)" if done else "Start")
            self.restart_button.setVisible(bool(done))

    def request(self, restart: bool = False) -> GenerationRequest:
        feedback = self.job() == AI_FEEDBACK
        source = self.answers_box.currentData()
        answer_models = []
        if feedback and source == "one":
            answer_models = [self.answer_edits[0].text().strip()]
        elif feedback and source == "two":
            answer_models = [e.text().strip() for e in self.answer_edits]
        return GenerationRequest(job=self.job(), input_path=self.input_edit.text().strip(),
                                 output_path=self.output_edit.text().strip(), model=self.model_edit.text().strip(),
                                 answer_models=answer_models,
                                 principles=[] if feedback else self.principles.principles(),
                                 max_new_tokens=self.tokens_spin.value(), temperature=self.temperature_spin.value(),
                                 seed=self.seed_spin.value(), limit=self.limit_spin.value(), restart=restart)

    # ------------------------------------------------------------------ running
    def start(self, restart: bool = False) -> bool:
        from backend.runs.code_permissions import stored_launch_subjects
        from backend.generation.preferences.job_run import GenerationJob

        request = self.request(restart=restart)
        try:
            job = GenerationJob.start(request, grants=stored_launch_subjects())
        except RequestError as exc:
            self.show_problem("Cannot start", str(exc))
            return False
        self._job = job
        self._result_path = ""
        self.banner.setVisible(False)
        self.results.setRowCount(0)
        self.summary.clear()
        self.progress.setValue(0)
        self.status.setText("Starting the generation worker…")
        self._set_running(True)
        self.following = True
        follow_worker_events(job, self._relay, self, on_end=lambda: setattr(self, "following", False))
        return True

    def stop(self) -> None:
        if self._job is None:
            return
        self.status.setText("Stopping: the row in progress is cut short, the finished rows are kept…")
        self.stop_button.setEnabled(False)
        stop_worker(self._job, STOP_GRACE_MS)

    def is_running(self) -> bool:
        return self._job is not None

    def _set_running(self, running: bool) -> None:
        for widget in (self.job_box, self.input_edit, self.output_edit, self.model_edit, self.answers_box,
                       self.tokens_spin, self.temperature_spin, self.limit_spin, self.seed_spin, self.principles,
                       self.start_button, self.restart_button, *self.answer_edits):
            widget.setEnabled(not running)
        self.stop_button.setEnabled(running)
        self.open_button.setEnabled(not running and bool(self._result_path))

    def show_problem(self, title: str, message: str, details: str = "") -> None:
        self.banner.show_notice("error", title, message, details=details)
        self.banner.setVisible(True)

    def _on_event(self, event) -> None:
        from backend.generation.preferences.events import JobFailed, JobFinished, JobPhase, JobStarted, RowDone

        if isinstance(event, JobStarted):
            again = f"; {event.rows_done} done by an earlier run are kept" if event.rows_done else ""
            self.status.setText(f"Input: {event.input_summary}{again}.")
            self.progress.setValue(int(100 * event.rows_done / max(event.rows_total, 1)))
            if event.input_skipped:
                self.banner.show_notice("warning", f"{event.input_skipped} input rows skipped",
                                        "\n".join(event.input_skip_messages[:5]))
                self.banner.setVisible(True)
        elif isinstance(event, JobPhase):
            self.status.setText(event.message)
        elif isinstance(event, RowDone):
            self.progress.setValue(int(100 * event.rows_done / max(event.rows_total, 1)))
            rate = (f" · both orders agreed on {event.agreement_rate:.0%}" if event.agreement_rate is not None else "")
            self.status.setText(f"{event.rows_done} of {event.rows_total} rows · {event.kept_total} pairs{rate} · "
                                f"{event.seconds:.1f} s for the last row")
            self._add_result(event)
        elif isinstance(event, JobFinished):
            self._job = None
            self._result_path = event.path if event.report["kept"] else ""  # an empty file has nothing to open
            self._set_running(False)
            self.progress.setValue(100)
            self.status.setText(f"Wrote {event.report['kept']} preference pairs to {event.path}.")
            self.summary.setText(summary_text(event.report))
            note = event.report.get("judge_note") or ""
            if event.report["kept"]:
                self.banner.show_notice("warning" if note else "success", "Preference data ready",
                                        f"{event.path}\nOpen it in the Data panel to train on it."
                                        + (f"\n{note}" if note else ""))
            else:  # an empty file is not "ready": say why nothing was kept
                self.banner.show_notice("warning", "No preference pairs kept",
                                        note or "Every row was dropped; the table says why for each.")
            self.banner.setVisible(True)
            self._paths_changed()
        elif isinstance(event, JobFailed):
            self._job = None
            self._set_running(False)
            stopped = event.kind in ("stopped", "killed")
            self.status.setText("Stopped." if stopped else "Failed.")
            self.banner.show_notice("info" if stopped else "error",
                                    "Generation stopped" if stopped else "Generation failed", event.message,
                                    details=event.traceback)
            self.banner.setVisible(True)
            self._paths_changed()

    def _add_result(self, event) -> None:
        row = event.row or {}
        r = self.results.rowCount()
        self.results.insertRow(r)
        if event.kept:
            pair = [_text(row.get("chosen")), _text(row.get("rejected"))]
        else:  # what was judged, in the file's order, so the user sees what the judge could not settle
            pair = [_text(a) for a in (event.answers or ["", ""])]
        why = event.reason
        if event.kept and "critique" in row:
            why = f"{row.get('principle', '')}: {row['critique']}"
        elif event.p_ab is not None:
            verdict = (f"both orders prefer answer {1 if event.p_ab > 0.5 else 2}" if event.kept
                       else "the orders split")
            why = f"{verdict} ({event.p_ab:.2f} / {event.p_ba:.2f})"
        cells = [str(event.line), "kept" if event.kept else "dropped", *pair, why]
        for c, text in enumerate(cells):
            item = QTableWidgetItem(text)
            item.setToolTip(text)
            if c < 2:
                item.setTextAlignment(Qt.AlignmentFlag.AlignCenter)
            if not event.kept:
                item.setForeground(self.palette().placeholderText())
            self.results.setItem(r, c, item)
        self.results.scrollToBottom()

    def _open_in_data_panel(self) -> None:
        if self._result_path:
            self.sig_open_in_data_panel.emit(self._result_path)

    def showEvent(self, event) -> None:
        self._paths_changed()  # a run stopped elsewhere (the CLI) may have left rows to resume
        super().showEvent(event)

    def closeEvent(self, event) -> None:
        # Closing while generating stops the worker; the finished rows stay for a resume.
        if self._job is not None:
            self.stop()
        super().closeEvent(event)


def summary_text(report: dict) -> str:
    parts = [f"{report['kept']} pairs from {report['rows_total']} rows"]
    if report.get("agreement_rate") is not None:
        parts.append(f"the judge's two orders agreed on {report['agreement_rate']:.0%} of {report['judged']} pairs")
    if report.get("file_label_agreement") is not None:
        parts.append(f"its choice matched the file's chosen answer on {report['file_label_agreement']:.0%}")
    if report.get("dropped"):
        parts.append("dropped: " + ", ".join(f"{n} ({reason})" for reason, n in report["dropped"].items()))
    if report.get("seconds_per_row") is not None:
        parts.append(f"{report['seconds_per_row']:.1f} s per row")
    return html.escape(" · ".join(parts), quote=False)


def _text(value) -> str:
    from backend.data.prompt_rendering import display_text

    return display_text(value).strip()


def _partial_rows(request: GenerationRequest) -> int:
    """Rows a stopped run of this output finished (0 when there is none or it was made otherwise)."""
    if not request.input_path.strip():
        return 0
    try:
        path = request.partial
        if not path.is_file():
            return 0
        with path.open(encoding="utf-8", errors="replace") as fh:
            header = json.loads(fh.readline() or "{}")
            if header.get("fingerprint") != request.fingerprint():
                return 0
            return sum(1 for line in fh if line.strip().endswith("}"))
    except (OSError, ValueError):
        return 0


def open_generation_dialog(window) -> PreferenceGenerationDialog:
    """The dialog for the studio window: it starts on the Data panel's file and opens its result there."""
    dialog = PreferenceGenerationDialog(window.data_panel.current_path(), parent=window)

    def open_in_data_panel(path: str) -> None:
        window.tabs.setCurrentWidget(window.train_page)
        window.data_panel.load_path(path)
        window.raise_()

    dialog.sig_open_in_data_panel.connect(open_in_data_panel)
    dialog.show()
    return dialog
