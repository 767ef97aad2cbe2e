"""The Export dialog: pick a format and precision, watch the worker, stop it, read the checks.

The export itself runs in ``backend.export.worker`` (a child process, like
training). Following its event stream blocks, so it runs on the thread pool
(``app.background_call.follow_worker_events``); each event is relayed to the
GUI thread by a queued signal. Stop asks the worker to stop at
its next safe point; if it has not stopped after a grace period it is
terminated. Either way nothing appears under the final name.
"""

from __future__ import annotations

import html
from pathlib import Path

from PySide6.QtCore import QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDialog, QFileDialog, QFormLayout, QHBoxLayout, QLabel,
                               QLineEdit, QProgressBar, QPushButton, QVBoxLayout, QWidget)

from app.background_call import EventRelay, follow_worker_events, stop_worker
from backend.export.plan import (DEFAULT_QUANTIZATION, EXPORT_FORMATS, FORMAT_LABELS, QUANTIZATIONS, ExportError,
                                 ExportRequest, converter_dir, converter_installed)
from widgets.notice_banner import NoticeBanner

QUANTIZATION_HINTS = {
    "float32": "float32: reproduces base + adapter exactly; 4 bytes per weight",
    "bfloat16": "bfloat16: half the size; answers may drift slightly",
    "float16": "float16: half the size; for GPUs without bfloat16",
    "f16": "f16: half precision; matched the merged model token for token",
    "q8_0": "q8_0: 8-bit, about half of f16; may drift after a few tokens",
    "bf16": "bf16: bfloat16 weights in the GGUF file",
    "f32": "f32: full precision, largest file",
}
STOP_GRACE_MS = 20_000


class ExportDialog(QDialog):
    sig_finished = Signal(object)
    """The export ended: ExportFinished or ExportFailed."""

    def __init__(self, run_dir: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.run_dir = Path(run_dir)
        self.setWindowTitle(f"Export {self.run_dir.name}")
        self.setMinimumWidth(560)
        self._export = None
        self._relay = EventRelay(self)
        self._relay.sig_event.connect(self._on_event)
        self._result_path = ""
        self.following = False  # the worker's event stream is still being read on the pool

        intro = QLabel(f"<b>{html.escape(self.run_dir.name)}</b><br>The adapter is merged into a copy of its base "
                       "model dequantized to float32, and every result is checked by loading it back and comparing "
                       "greedy answers.")
        intro.setWordWrap(True)
        self.format_box = QComboBox()
        for fmt in EXPORT_FORMATS:
            self.format_box.addItem(FORMAT_LABELS[fmt], fmt)
        self.quant_box = QComboBox()
        self.quant_hint = QLabel()
        self.quant_hint.setObjectName("hint")
        self.quant_hint.setWordWrap(True)
        # Room for two lines: a dialog sized from the one-line hint did not grow when it wrapped,
        # and the second line was drawn under the combo box above it.
        self.quant_hint.setMinimumHeight(2 * self.quant_hint.fontMetrics().lineSpacing() + 2)
        self.out_edit = QLineEdit(str(self.run_dir / "exports"))
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        out_row = QHBoxLayout()
        out_row.addWidget(self.out_edit, 1)
        out_row.addWidget(browse)
        self.compare_edit = QLineEdit()
        self.compare_edit.setPlaceholderText("batch compare .jsonl (optional)")
        self.compare_edit.setToolTip("A batch compare exported as JSON Lines from the Compare tab: its summary goes "
                                     "into the model card. Without one, a *compare*.jsonl in the run folder is used.")
        compare_browse = QPushButton("Browse…")
        compare_browse.clicked.connect(self._browse_compare)
        compare_row = QHBoxLayout()
        compare_row.addWidget(self.compare_edit, 1)
        compare_row.addWidget(compare_browse)
        self.push_check = QCheckBox("Also upload to the Hugging Face Hub")
        self.repo_edit = QLineEdit()
        self.repo_edit.setPlaceholderText("user-or-org/model-name")
        self.repo_edit.setEnabled(False)
        self.push_check.toggled.connect(self.repo_edit.setEnabled)
        form = QFormLayout()
        form.addRow("Format", self.format_box)
        form.addRow("Precision", self.quant_box)
        form.addRow("", self.quant_hint)
        form.addRow("Save in", out_row)
        form.addRow("Model card", compare_row)
        form.addRow(self.push_check, self.repo_edit)

        self.banner = NoticeBanner()
        self.banner.hide()
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.progress.setValue(0)
        self.status = QLabel("Ready.")
        self.status.setWordWrap(True)
        self.checks = QLabel()
        self.checks.setWordWrap(True)
        self.checks.hide()

        self.export_button = QPushButton("Export")
        self.export_button.setDefault(True)
        self.export_button.clicked.connect(self.start_export)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.stop_button.clicked.connect(self.stop_export)
        self.open_button = QPushButton("Open folder")
        self.open_button.setEnabled(False)
        self.open_button.clicked.connect(self._open_folder)
        self.close_button = QPushButton("Close")
        self.close_button.clicked.connect(self.close)
        buttons = QHBoxLayout()
        buttons.addWidget(self.open_button)
        buttons.addStretch(1)
        buttons.addWidget(self.stop_button)
        buttons.addWidget(self.export_button)
        buttons.addWidget(self.close_button)

        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addLayout(form)
        layout.addWidget(self.banner)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.checks)
        layout.addStretch(1)
        layout.addLayout(buttons)

        self.format_box.currentIndexChanged.connect(self._format_changed)
        self.quant_box.currentIndexChanged.connect(self._quant_changed)
        self._format_changed()

    # ------------------------------------------------------------------ form
    def set_format(self, fmt: str, quantization: str = "") -> None:
        self.format_box.setCurrentIndex(EXPORT_FORMATS.index(fmt))
        if quantization:
            self.quant_box.setCurrentIndex(self.quant_box.findData(quantization))

    def _format_changed(self) -> None:
        fmt = self.format_box.currentData()
        self.quant_box.clear()
        for q in QUANTIZATIONS[fmt]:
            self.quant_box.addItem(q, q)
        self.quant_box.setEnabled(bool(QUANTIZATIONS[fmt]))
        if DEFAULT_QUANTIZATION[fmt]:
            self.quant_box.setCurrentIndex(self.quant_box.findData(DEFAULT_QUANTIZATION[fmt]))
        self._quant_changed()
        if fmt in ("gguf", "ollama") and not converter_installed():
            self.banner.show_notice("warning", "llama.cpp's converter is not installed",
                                    f"A {fmt} export needs it in {converter_dir()}. "
                                    "installer/test.sh and installer/run_studio.sh install it there.")
            self.banner.show()
        elif self._export is None:
            self.banner.hide()

    def _quant_changed(self) -> None:
        q = self.quant_box.currentData()
        self.quant_hint.setText(QUANTIZATION_HINTS.get(q, "The adapter keeps its own precision; it needs the base "
                                                          "model to run.") if q or not self.quant_box.isEnabled()
                                else "")

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Save the export in", self.out_edit.text())
        if folder:
            self.out_edit.setText(folder)

    def _browse_compare(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Batch compare for the model card", str(self.run_dir),
                                              "JSON Lines (*.jsonl)")
        if path:
            self.compare_edit.setText(path)

    def request(self) -> ExportRequest:
        return ExportRequest(run_dir=str(self.run_dir), format=self.format_box.currentData(),
                             quantization=self.quant_box.currentData() or "", out_dir=self.out_edit.text().strip(),
                             push_repo=self.repo_edit.text().strip() if self.push_check.isChecked() else "",
                             compare_file=self.compare_edit.text().strip())

    # ------------------------------------------------------------------ running
    def start_export(self) -> None:
        from backend.export.client import ExportRun

        request = self.request()
        try:
            export = ExportRun.start(request)  # checks the request first: a bad one is refused in a sentence
        except ExportError as exc:
            self.banner.show_notice("error", "Cannot export", str(exc))
            self.banner.show()
            return
        self._export = export
        self.banner.hide()
        self.checks.hide()
        self.progress.setValue(0)
        self.status.setText("Starting the export worker…")
        self._set_running(True)
        self.following = True
        follow_worker_events(export, self._relay, owner=self, on_end=lambda: setattr(self, "following", False))

    def stop_export(self) -> None:
        if self._export is None:
            return
        self.status.setText("Stopping at the next safe point…")
        self.stop_button.setEnabled(False)
        stop_worker(self._export, STOP_GRACE_MS)

    def is_running(self) -> bool:
        return self._export is not None

    def _set_running(self, running: bool) -> None:
        for widget in (self.format_box, self.quant_box, self.out_edit, self.compare_edit, self.push_check,
                       self.export_button):
            widget.setEnabled(not running)
        self.quant_box.setEnabled(not running and bool(QUANTIZATIONS[self.format_box.currentData()]))
        self.repo_edit.setEnabled(not running and self.push_check.isChecked())
        self.stop_button.setEnabled(running)

    def _on_event(self, event) -> None:
        from backend.export.events import ExportFailed, ExportFinished, ExportPhase

        if isinstance(event, ExportPhase):
            if event.fraction is not None:
                self.progress.setValue(int(event.fraction * 100))
            self.status.setText(event.message)
        elif isinstance(event, ExportFinished):
            self._export = None
            self._set_running(False)
            self.progress.setValue(100)
            self._result_path = event.path
            self.status.setText(f"Exported to {event.path} in {event.seconds:.0f} s."
                                + (f" Uploaded to {event.pushed_to}." if event.pushed_to else ""))
            self._show_checks(event.checks)
            self.open_button.setEnabled(True)
            self.banner.show_notice("success", "Export finished", event.path)
            self.banner.show()
            self.sig_finished.emit(event)
        elif isinstance(event, ExportFailed):
            self._export = None
            self._set_running(False)
            severity = "info" if event.kind in ("stopped", "killed") else "error"
            title = "Export stopped" if severity == "info" else "Export failed"
            self.progress.setValue(0)
            self.status.setText(title + ".")
            self.banner.show_notice(severity, title, event.message, details=event.traceback)
            self.banner.show()
            self.sig_finished.emit(event)

    def _show_checks(self, checks: list[dict]) -> None:
        rows = []
        for check in checks:
            mark = "✔" if check.get("identical") else "≈"
            rows.append(f"{mark} <b>{html.escape(check['name'])}</b>: {html.escape(check['verdict'])}")
        self.checks.setText("<br>".join(rows))
        self.checks.setVisible(bool(rows))

    def _open_folder(self) -> None:
        if self._result_path:
            path = Path(self._result_path)
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(path if path.is_dir() else path.parent)))

    def closeEvent(self, event) -> None:
        # Closing while exporting stops the worker: nothing is left half-written.
        if self._export is not None:
            self.stop_export()
        super().closeEvent(event)
