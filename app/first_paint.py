"""Run something once a widget has been painted for the first time from now on."""

from __future__ import annotations

from typing import Callable

from PySide6.QtCore import QEvent, QObject, QTimer


class _FirstPaint(QObject):
    def __init__(self, widget, callback: Callable[[], None], at_latest_ms: int | None) -> None:
        super().__init__(widget)
        self._widget = widget
        self._callback: Callable[[], None] | None = callback
        widget.installEventFilter(self)
        if at_latest_ms is not None:
            QTimer.singleShot(at_latest_ms, self, self._fire)

    def eventFilter(self, _watched, event) -> bool:  # noqa: N802 (Qt's name)
        if event.type() == QEvent.Type.Paint:
            QTimer.singleShot(0, self, self._fire)  # once this paint is done, not inside it
        return False

    def _fire(self) -> None:
        if self._callback is None:
            return
        callback, self._callback = self._callback, None
        self._widget.removeEventFilter(self)
        self.deleteLater()
        callback()


def after_first_paint(widget, callback: Callable[[], None], at_latest_ms: int | None = None) -> None:
    """Call ``callback`` (on the GUI thread) right after ``widget``'s next paint, or after
    ``at_latest_ms`` if it is not painted by then (a window that is never exposed).

    ``showEvent`` plus a zero timer is not enough to wait for the window to appear:
    the window system's expose, hence the first paint, usually comes after the timer."""
    _FirstPaint(widget, callback, at_latest_ms)
