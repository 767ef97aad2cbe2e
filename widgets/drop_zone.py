"""A drop target for a local file or folder, with buttons for the same through a dialog."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QMimeData, Qt, Signal
from PySide6.QtWidgets import QFileDialog, QFrame, QHBoxLayout, QLabel, QPushButton, QVBoxLayout


def local_paths_from_mime(mime: QMimeData | None) -> list[str]:
    """Local file or folder paths carried by a drag (remote URLs are ignored)."""
    if mime is None or not mime.hasUrls():
        return []
    return [url.toLocalFile() for url in mime.urls() if url.isLocalFile() and url.toLocalFile()]


class DropZone(QFrame):
    """Shows where to drop, highlights while a usable drag hovers, and emits the path."""

    sig_path_chosen = Signal(str)
    """A file or folder was dropped here or picked in a dialog; carries its local path."""

    def __init__(self, title: str, hint: str, file_filter: str = "All files (*)", parent=None):
        super().__init__(parent)
        self.setObjectName("dropZone")
        self.setAcceptDrops(True)
        self.setProperty("dragActive", False)
        self._file_filter = file_filter
        self._start_dir = ""

        self._title = QLabel(title)
        self._title.setObjectName("dropTitle")
        self._title.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self._hint = QLabel(hint)
        self._hint.setObjectName("dropHint")
        self._hint.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self._hint.setWordWrap(True)
        self._current = QLabel()
        self._current.setObjectName("dropCurrent")
        self._current.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self._current.setWordWrap(True)
        self._current.setVisible(False)

        self.file_button = QPushButton("Choose file…")
        self.folder_button = QPushButton("Choose folder…")
        self.file_button.clicked.connect(self._pick_file)
        self.folder_button.clicked.connect(self._pick_folder)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.file_button)
        buttons.addWidget(self.folder_button)
        buttons.addStretch(1)
        self._buttons = buttons

        layout = QVBoxLayout(self)
        layout.setContentsMargins(16, 14, 16, 14)
        layout.setSpacing(6)
        layout.addWidget(self._title)
        layout.addWidget(self._hint)
        layout.addWidget(self._current)
        layout.addLayout(buttons)

    def set_current(self, text: str) -> None:
        """A one-line summary of what is loaded, shown under the hint."""
        self._current.setText(text)
        self._current.setVisible(bool(text))

    def add_button(self, widget) -> None:
        """Put another control (a recent-files menu, say) beside the dialog buttons."""
        self._buttons.insertWidget(self._buttons.count() - 1, widget)

    def set_start_dir(self, folder: str) -> None:
        self._start_dir = folder

    def _pick_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a dataset file", self._start_dir, self._file_filter)
        if path:
            self.sig_path_chosen.emit(path)

    def _pick_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open a dataset folder", self._start_dir)
        if path:
            self.sig_path_chosen.emit(path)

    def _set_drag_active(self, active: bool) -> None:
        self.setProperty("dragActive", active)
        self.style().unpolish(self)
        self.style().polish(self)

    def dragEnterEvent(self, event):
        if local_paths_from_mime(event.mimeData()):
            event.acceptProposedAction()
            self._set_drag_active(True)
        else:
            event.ignore()

    def dragMoveEvent(self, event):
        if local_paths_from_mime(event.mimeData()):
            event.acceptProposedAction()

    def dragLeaveEvent(self, event):
        self._set_drag_active(False)
        super().dragLeaveEvent(event)

    def dropEvent(self, event):
        self._set_drag_active(False)
        paths = local_paths_from_mime(event.mimeData())
        if not paths:
            event.ignore()
            return
        event.acceptProposedAction()
        self.sig_path_chosen.emit(str(Path(paths[0])))
