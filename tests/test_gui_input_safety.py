"""The window never edits a setting behind the user's back: a wheel turn over a field
scrolls the panel unless the field has focus, and each tab's Ctrl+Enter does that
tab's thing (Train, Generate, Send) without colliding with the others."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402
from PySide6.QtCore import QPoint, QPointF, Qt  # noqa: E402
from PySide6.QtGui import QWheelEvent  # noqa: E402
from PySide6.QtWidgets import QAbstractSpinBox, QApplication, QComboBox  # noqa: E402

from tests.gui_helpers import make_studio_window  # noqa: E402

pytestmark = pytest.mark.gui


@pytest.fixture
def window(qtbot, studio_home):
    window = make_studio_window(qtbot)
    window.activateWindow()
    qtbot.waitActive(window)
    return window


def wheel(widget, notches: int = -1) -> None:
    """One wheel turn over the middle of ``widget`` (negative: towards the user, scrolling down),
    delivered as the system delivers it: to the window, which hands it to the widget under the pointer."""
    top = widget.window()
    at = QPointF(widget.mapTo(top, widget.rect().center()))
    event = QWheelEvent(at, QPointF(top.mapToGlobal(at.toPoint())), QPoint(0, 0), QPoint(0, 120 * notches),
                        Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase,
                        False)
    assert top.childAt(at.toPoint()) is widget or widget.isAncestorOf(top.childAt(at.toPoint()))
    QApplication.sendEvent(top.windowHandle(), event)


def _scroll_to(window, widget) -> None:
    window.setup_scroll.ensureWidgetVisible(widget, 0, 200)
    QApplication.processEvents()


def test_wheel_over_unfocused_method_dropdown_scrolls_the_setup_instead(qtbot, window):
    combo = window.method_panel.method_combo
    assert window.method_panel.method() == "dpo"
    bar = window.setup_scroll.verticalScrollBar()
    assert bar.maximum() > 0, "the setup column should be taller than the window for this test"
    _scroll_to(window, combo)
    before = bar.value()
    for _ in range(3):
        wheel(combo)
    assert window.method_panel.method() == "dpo"
    assert combo.currentData() == "dpo"
    assert bar.value() > before  # the turn went to the panel

    combo.setFocus()
    qtbot.waitUntil(combo.hasFocus, timeout=2_000)
    wheel(combo)  # a focused field still takes the wheel, on purpose
    assert window.method_panel.method() != "dpo"


def test_wheel_over_unfocused_number_field_leaves_it_alone(qtbot, window):
    spin = window.method_panel.editor("max_steps")
    assert isinstance(spin, QAbstractSpinBox)
    bar = window.setup_scroll.verticalScrollBar()
    bar.setValue(bar.maximum())
    _scroll_to(window, spin)  # from below: the panel has room to scroll up
    before_value, before_scroll = spin.value(), bar.value()
    assert before_scroll > 0 and before_value < spin.maximum()
    wheel(spin, notches=1)  # up: the field would grow, the panel scrolls up
    wheel(spin, notches=1)
    assert spin.value() == before_value
    assert bar.value() < before_scroll


def test_every_combo_and_spin_box_takes_focus_by_click_not_by_wheel(qtbot, window):
    for tab in range(window.tabs.count()):
        window.tabs.setCurrentIndex(tab)  # polishes the tab's fields
        QApplication.processEvents()
    window.method_panel.set_method("orpo")  # a rebuilt form's fields too
    QApplication.processEvents()
    fields = window.findChildren(QComboBox) + window.findChildren(QAbstractSpinBox)
    assert len(fields) > 10
    wheel_focus = [f.objectName() or type(f).__name__ for f in fields
                   if f.focusPolicy() == Qt.FocusPolicy.WheelFocus]
    assert wheel_focus == []
