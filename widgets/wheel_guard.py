"""Keep the mouse wheel from editing a field the user is only scrolling past.

Qt gives combo boxes, spin boxes and sliders the wheel whether or not they
have focus, so scrolling a long settings column with the pointer resting on
the Method dropdown switched to another method (and reset its settings). A guard on
each top-level window sees every wheel turn before Qt hands it to the widget
under the pointer, so it covers every such field in the window, including the
ones built later (forms are rebuilt when the method changes):

- a wheel turn over an unfocused field scrolls the nearest scroll area instead;
- the fields take focus on click or Tab, never on a wheel turn (``StrongFocus``).

A field that has focus (clicked, or reached with Tab) still takes the wheel,
which is how a user who wants to wheel through values does it.

The guard filters the window's QWindow rather than the application: an
application-wide Python filter runs for every paint and timer event of every
widget (about 11,000 a second while plots update, measured: ~10% of a core).
"""

from __future__ import annotations

from PySide6.QtCore import QEvent, QObject, Qt
from PySide6.QtGui import QWheelEvent
from PySide6.QtWidgets import QAbstractScrollArea, QAbstractSpinBox, QApplication, QComboBox, QSlider, QWidget

GUARDED = (QComboBox, QAbstractSpinBox, QSlider)


def calm_focus(widget: QWidget) -> None:
    """Focus by click or Tab only, so that a wheel turn never selects the field."""
    if widget.focusPolicy() == Qt.FocusPolicy.WheelFocus:
        widget.setFocusPolicy(Qt.FocusPolicy.StrongFocus)


def calm_fields(root: QWidget) -> None:
    for kind in GUARDED:
        for widget in root.findChildren(kind):
            calm_focus(widget)


def guarded_field_at(widget: QWidget | None) -> QWidget | None:
    """The combo box, spin box or slider that ``widget`` is (or is part of: its line edit)."""
    while widget is not None and not widget.isWindow():
        if isinstance(widget, GUARDED):
            return widget
        widget = widget.parentWidget()
    return None


def scroll_area_around(widget: QWidget) -> QAbstractScrollArea | None:
    parent = widget.parentWidget()
    while parent is not None:
        if isinstance(parent, QAbstractScrollArea):
            return parent
        parent = parent.parentWidget()
    return None


def _has_focus(widget: QWidget) -> bool:
    focused = QApplication.focusWidget()
    return focused is not None and (focused is widget or widget.isAncestorOf(focused))


class WheelGuard(QObject):
    """Event filter on one top-level window's QWindow; see the module docstring."""

    def __init__(self, window: QWidget):
        super().__init__(window)
        self._window = window

    def eventFilter(self, obj, event):
        if event.type() != QEvent.Type.Wheel or QApplication.activePopupWidget() is not None:
            return False  # an open dropdown list scrolls itself, as Qt would have it
        field = guarded_field_at(self._window.childAt(event.position().toPoint()))
        if field is None or _has_focus(field):
            return False
        self._scroll_instead(field, event)
        return True

    @staticmethod
    def _scroll_instead(field: QWidget, event: QWheelEvent) -> None:
        area = scroll_area_around(field)
        if area is None:
            return  # nothing to scroll: the turn is dropped rather than given to the field
        viewport = area.viewport()
        forwarded = QWheelEvent(viewport.mapFromGlobal(event.globalPosition()), event.globalPosition(),
                                event.pixelDelta(), event.angleDelta(), event.buttons(), event.modifiers(),
                                event.phase(), event.inverted(), event.source())
        QApplication.sendEvent(viewport, forwarded)


def install_wheel_guard(window: QWidget) -> WheelGuard:
    """Guard ``window`` (a top-level widget) and calm the fields it holds now."""
    window.winId()  # creates the QWindow the guard listens on
    guard = WheelGuard(window)
    window.windowHandle().installEventFilter(guard)
    calm_fields(window)
    return guard
