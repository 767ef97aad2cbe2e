"""A read-only console for a process's output, fed in arbitrary chunks."""

from __future__ import annotations

from PySide6.QtCore import QTimer
from PySide6.QtGui import QFontDatabase, QTextCursor
from PySide6.QtWidgets import QPlainTextEdit


class LogConsole(QPlainTextEdit):
    """Keeps the last ``max_lines`` lines and follows the end unless the user scrolled up."""

    def __init__(self, parent=None, max_lines: int = 5000):
        super().__init__(parent)
        self.setObjectName("logConsole")
        self.setReadOnly(True)
        self.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.setMaximumBlockCount(max_lines)
        self.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self._partial = ""
        self._follow = True
        bar = self.verticalScrollBar()
        # Follow the end through range changes (new lines, a horizontal scroll bar
        # appearing), which Qt applies after layout, not at insertion time; only the
        # user scrolling away from the end stops following.
        bar.rangeChanged.connect(lambda _lo, hi: bar.setValue(hi) if self._follow else None)
        bar.actionTriggered.connect(lambda _action: QTimer.singleShot(0, self, self._update_follow))
        bar.sliderReleased.connect(self._update_follow)

    def _update_follow(self) -> None:
        bar = self.verticalScrollBar()
        self._follow = bar.value() >= bar.maximum() - 1

    def wheelEvent(self, event):
        super().wheelEvent(event)
        self._update_follow()

    def append_text(self, chunk: str) -> None:
        """Add output; a trailing partial line waits for the rest of it."""
        if not chunk:
            return
        text = self._partial + chunk.replace("\r\n", "\n")
        lines = text.split("\n")
        self._partial = lines.pop()
        if lines:
            # Progress bars redraw a line with bare carriage returns; only the
            # last state of such a line is worth keeping.
            self._append_lines([line.rsplit("\r", 1)[-1] for line in lines])

    def flush(self) -> None:
        if self._partial:
            self._append_lines([self._partial.rsplit("\r", 1)[-1]])
            self._partial = ""

    def append_line(self, line: str) -> None:
        self.flush()
        self._append_lines([line])

    def clear_console(self) -> None:
        self._partial = ""
        self._follow = True
        self.clear()

    def _append_lines(self, lines: list[str]) -> None:
        cursor = QTextCursor(self.document())
        cursor.movePosition(QTextCursor.MoveOperation.End)
        prefix = "\n" if not self.document().isEmpty() else ""
        cursor.insertText(prefix + "\n".join(lines))
        if self._follow:
            bar = self.verticalScrollBar()
            bar.setValue(bar.maximum())
