"""Spin boxes and combo boxes show their arrows under the studio's style sheet (Fusion drew
their buttons as bare lines once the frames had a border)."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402

pytestmark = pytest.mark.gui


def _dark_pixels(widget, x0: int, x1: int, y0: int, y1: int) -> int:
    image = widget.grab().toImage()
    return sum(1 for x in range(x0, x1) for y in range(y0, y1) if image.pixelColor(x, y).lightness() < 120)


def test_spin_and_combo_arrows_are_drawn(qtbot):
    from PySide6.QtWidgets import QApplication, QComboBox, QSpinBox, QVBoxLayout, QWidget

    from app.theme import apply_theme, arrow_rules

    assert "spin_up.svg" in arrow_rules() and os.path.isfile(arrow_rules().split('url("')[1].split('"')[0])
    apply_theme(QApplication.instance())
    host = QWidget()
    qtbot.addWidget(host)
    spin, combo = QSpinBox(), QComboBox()
    combo.addItem("x")
    layout = QVBoxLayout(host)
    layout.addWidget(spin)
    layout.addWidget(combo)
    host.resize(200, 80)
    host.show()
    qtbot.waitExposed(host)
    # Each arrow is a small filled triangle in the middle of its button, where the bare lines
    # Fusion drew instead leave nothing: the up arrow in the button's upper half, the down one below.
    w, h = spin.width(), spin.height()
    assert _dark_pixels(spin, w - 13, w - 5, 3, h // 2 - 1) >= 6
    assert _dark_pixels(spin, w - 13, w - 5, h // 2 + 1, h - 3) >= 6
    assert _dark_pixels(combo, combo.width() - 20, combo.width() - 2, 3, combo.height() - 3) >= 6
