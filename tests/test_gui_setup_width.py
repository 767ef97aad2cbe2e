"""The setup column fits its default width: no card is cut off on the right."""

from __future__ import annotations

import pytest
from PySide6.QtWidgets import QWidget

from tests.gui_helpers import make_studio_window

pytestmark = pytest.mark.gui


@pytest.fixture
def window(qtbot, studio_home):
    return make_studio_window(qtbot)


def test_every_setup_card_fits_the_column_at_the_default_size(qtbot, window):
    window.resize(1480, 920)  # the first start's size
    qtbot.wait(50)
    column = window.findChild(QWidget, "setupColumn")
    viewport = window.setup_scroll.viewport()
    # The scroll area has no horizontal bar: anything wider than its viewport is cut off.
    assert column.minimumSizeHint().width() <= viewport.width(), (column.minimumSizeHint().width(), viewport.width())
    assert column.width() <= viewport.width()
    combo = window.method_panel.method_combo
    assert combo.geometry().right() <= combo.parentWidget().width()

    # The open method list still shows every entry whole.
    combo.showPopup()
    try:
        view = combo.view()
        qtbot.waitUntil(view.isVisible, timeout=2_000)
        widest = max(view.sizeHintForColumn(0), *(view.fontMetrics().horizontalAdvance(combo.itemText(i))
                                                   for i in range(combo.count())))
        assert view.width() >= widest
    finally:
        combo.hidePopup()
