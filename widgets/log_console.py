"""A read-only console for a process's output, fed in arbitrary chunks.

An optional line filter (anything with ``feed(lines) -> lines`` and ``reset()``)
decides what is shown; the raw lines are kept, so the view can switch between
the filtered and the raw output at any time.
"""

from __future__ import annotations

from collections import deque

from PySide6.QtCore import QTimer
from PySide6.QtGui import QFontDatabase, QTextCursor
from PySide6.QtWidgets import QPlainTextEdit


class LogConsole(QPlainTextEdit):
    """Keeps the last ``max_lines`` lines and follows the end unless the user scrolled up."""

    def __init__(self, parent=None, max_lines: int = 5000, line_filter=None):
        super().__init__(parent)
        self._raw_lines: deque[str] = deque(maxlen=max_lines)
        self._filter = line_filter
        self._show_raw = line_filter is None
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
        self._raw_lines.clear()
        if self._filter is not None:
            self._filter.reset()
        self.clear()

    def raw_text(self) -> str:
        """Every line received (up to ``max_lines``), unfiltered."""
        return "\n".join(self._raw_lines)

    def showing_raw(self) -> bool:
        return self._show_raw

    def set_show_raw(self, raw: bool) -> None:
        """Show the raw lines, or the filtered view; the text is rebuilt from the kept lines."""
        if self._filter is None or raw == self._show_raw:
            return
        self._show_raw = raw
        self._filter.reset()
        self.clear()
        self._follow = True
        self._insert(self._visible(list(self._raw_lines)))

    def _visible(self, lines: list[str]) -> list[str]:
        return lines if self._show_raw or self._filter is None else self._filter.feed(lines)

    def _append_lines(self, lines: list[str]) -> None:
        self._raw_lines.extend(lines)
        self._insert(self._visible(lines))

    def _insert(self, lines: list[str]) -> None:
        if not lines:
            return
        cursor = QTextCursor(self.document())
        cursor.movePosition(QTextCursor.MoveOperation.End)
        prefix = "\n" if not self.document().isEmpty() else ""
        cursor.insertText(prefix + "\n".join(lines))
        if self._follow:
            bar = self.verticalScrollBar()
            bar.setValue(bar.maximum())
