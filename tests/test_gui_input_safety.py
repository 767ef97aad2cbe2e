"""The window never edits a setting behind the user's back: a wheel turn over a field
scrolls the panel unless the field has focus, and each tab's Ctrl+Enter does that
tab's thing (Train, Generate, Send) without colliding with the others."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402
from PySide6.QtCore import QPoint, QPointF, Qt  # noqa: E402
from PySide6.QtGui import QShortcut, QWheelEvent  # noqa: E402
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


class _Count:
    def __init__(self, *signals):
        self.n = 0
        for signal in signals:
            signal.connect(self)

    def __call__(self, *_args):
        self.n += 1


def _shortcut_counts(widget):
    """How often the Ctrl+Enter shortcuts on ``widget`` fired, and fired ambiguously."""
    shortcuts = widget.findChildren(QShortcut)
    assert shortcuts, f"no shortcut on {widget.objectName()}"
    return (_Count(*[s.activated for s in shortcuts]), _Count(*[s.activatedAmbiguously for s in shortcuts]))


def _ctrl_enter(qtbot, widget) -> None:
    widget.setFocus()
    qtbot.waitUntil(widget.hasFocus, timeout=2_000)
    qtbot.keyClick(widget, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)


def test_ctrl_enter_does_what_each_tab_says_and_nothing_else(qtbot, window, qtlog):
    side, play = window.compare_tab.side_by_side, window.compare_tab.playground
    side_fired, side_ambiguous = _shortcut_counts(side.prompt_edit)
    play_fired, play_ambiguous = _shortcut_counts(play.input)
    trained = _Count(window.train_action.triggered)
    window.train_action.setEnabled(True)  # no dataset: Train is refused, with the reason in the status bar

    _ctrl_enter(qtbot, window.method_panel.method_combo)
    assert trained.n == 1
    assert "dataset" in window.statusBar().currentMessage()
    assert side_fired.n == play_fired.n == 0

    # Enabled again, as it is whenever a dataset is ready: that is when the keys collided.
    window.train_action.setEnabled(True)
    window.tabs.setCurrentWidget(window.compare_tab)
    window.compare_tab.views.setCurrentWidget(side)
    _ctrl_enter(qtbot, side.prompt_edit)
    assert side_fired.n == 1 and trained.n == 1

    window.train_action.setEnabled(True)
    window.compare_tab.views.setCurrentWidget(play)
    _ctrl_enter(qtbot, play.input)
    assert play_fired.n == 1 and side_fired.n == 1 and trained.n == 1

    assert side_ambiguous.n == play_ambiguous.n == 0
    assert not [r for r in qtlog.records if "mbiguous" in r.message]
    assert window.train_action.shortcut().isEmpty()  # the menu does not offer it outside the Train tab
    window.tabs.setCurrentWidget(window.train_page)
    assert window.train_action.shortcut().toString() == "Ctrl+Return"
