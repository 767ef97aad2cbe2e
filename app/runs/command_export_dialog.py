"""The "Export as command" dialog: train a run again in several processes, outside the window.

It writes (``backend.export.launch_command``) the run's config, an accelerate config for
the chosen layout and the launch scripts, on the window's one background
mechanism (reading the data and, for the embedded model, converting it once can
take a while), and shows what to type.
"""

from __future__ import annotations

import html
from pathlib import Path

from PySide6.QtCore import QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDialog, QFormLayout, QHBoxLayout, QLabel, QPlainTextEdit,
                               QPushButton, QSpinBox, QVBoxLayout, QWidget)

from app.background_call import call_in_background
from backend.export.launch_layouts import LAYOUT_LABELS, LAYOUTS
from widgets.notice_banner import NoticeBanner


class CommandExportDialog(QDialog):
    sig_exported = Signal(object)
    """The folder was written: a backend.export.launch_command.CommandExport."""

    def __init__(self, run_dir: str, parent: QWidget | None = None):
        from backend.methods import method_label
        from backend.export.trl_cli_config import trl_cli_methods

        super().__init__(parent)
        self.run_dir = Path(run_dir)
        self.setWindowTitle(f"Export {self.run_dir.name} as a command")
        self.setMinimumWidth(620)
        self.resize(680, 500)
        self.result = None

        intro = QLabel(f"<b>{html.escape(self.run_dir.name)}</b><br>Writes this run's settings, an accelerate "
                       "config and launch scripts that train it again in several processes (one per GPU) with "
                       "<code>accelerate launch</code>; for a method TRL's command line has ("
                       f"{html.escape(', '.join(method_label(m) for m in trl_cli_methods()))}) also a config for TRL's own "
                       "<code>trl</code> command.")
        intro.setWordWrap(True)
        self.layout_box = QComboBox()
        for layout in LAYOUTS:
            self.layout_box.addItem(LAYOUT_LABELS[layout], layout)
        self.processes_box = QSpinBox()
        self.processes_box.setRange(1, 64)
        self.processes_box.setValue(2)
        self.processes_box.setSuffix(" processes")
        self.cpu_box = QCheckBox("TRL's config trains on the CPU (fp32) instead of GPUs (bf16)")
        form = QFormLayout()
        form.addRow("Layout", self.layout_box)
        form.addRow("Processes (GPUs)", self.processes_box)
        form.addRow("", self.cpu_box)

        self.banner = NoticeBanner()
        self.banner.hide()
        self.status = QLabel()
        self.status.setObjectName("mutedText")
        self.status.setWordWrap(True)
        self.commands_view = QPlainTextEdit()
        self.commands_view.setObjectName("commandView")
        self.commands_view.setReadOnly(True)
        self.commands_view.setPlaceholderText("The commands to run appear here.")
        self.commands_view.setMinimumHeight(190)

        self.export_button = QPushButton("Export")
        self.export_button.setObjectName("primaryButton")
        self.export_button.clicked.connect(self.start)
        self.open_button = QPushButton("Open folder")
        self.open_button.setEnabled(False)
        self.open_button.clicked.connect(
            lambda: QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.result.folder))) if self.result else None)
        close = QPushButton("Close")
        close.clicked.connect(self.close)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        for b in (self.open_button, self.export_button, close):
            buttons.addWidget(b)

        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addLayout(form)
        layout.addWidget(self.banner)
        layout.addWidget(self.status)
        layout.addWidget(self.commands_view, 1)
        layout.addLayout(buttons)

    def start(self) -> None:
        from backend.export.launch_command import export_as_command

        layout = self.layout_box.currentData()
        processes = self.processes_box.value()
        on_gpu = not self.cpu_box.isChecked()
        self.export_button.setEnabled(False)
        self.banner.hide()
        self.status.setText("Writing the command folder…")
        call_in_background(lambda: export_as_command(self.run_dir, layout=layout, num_processes=processes,
                                                     on_gpu=on_gpu, log=lambda m: None),
                           self._done, self._failed, owner=self)

    def _done(self, result) -> None:
        self.result = result
        self.export_button.setEnabled(True)
        self.open_button.setEnabled(True)
        # The folder goes in the text view: a long path cannot wrap in a label.
        self.status.setText(f"Written: {', '.join(result.files)}")
        lines = [f"# Folder: {result.folder}", "", "# Train again with the studio's runner:", result.commands[0]]
        if len(result.commands) > 1:
            lines += ["", "# Or with TRL's own command line:", result.commands[1]]
        lines += [""] + [f"# {note}" for note in result.notes]
        self.commands_view.setPlainText("\n".join(lines))
        self.sig_exported.emit(result)

    def _failed(self, exc: BaseException, tb: str) -> None:
        self.export_button.setEnabled(True)
        self.status.setText("")
        from backend.export.launch_command import CommandExportError

        # A refusal says what is wrong by itself; anything else keeps its traceback to hand.
        self.banner.show_notice("error", "Not exported", str(exc),
                                details="" if isinstance(exc, CommandExportError) else tb)
