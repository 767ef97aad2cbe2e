"""The method dropdown on real data: the methods the loaded file cannot feed are disabled,
and the open list says why in each one's own detail line (not only in a tooltip)."""

from __future__ import annotations

import json
import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402

pytestmark = pytest.mark.gui


def test_a_disabled_method_shows_its_reason_in_the_open_list(qtbot, tmp_path):
    from app.studio_settings import StudioSettings
    from app.train.method_settings_panel import MethodSettingsPanel
    from backend.data.loading import load_dataset_file, unsupported_reason
    from backend.methods import get_method, method_keys
    from widgets.grouped_combo import DETAIL_ROLE

    path = tmp_path / "thumbs.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"Q{i}?", "completion": f"A{i}.", "label": bool(i % 2)}) + "\n"
                            for i in range(8)), encoding="utf-8")
    loaded = load_dataset_file(path)
    refused = [k for k in method_keys() if k not in loaded.supported_methods]
    reasons = {k: unsupported_reason(k, loaded.format) for k in refused}
    assert refused and "kto" in loaded.supported_methods

    panel = MethodSettingsPanel(StudioSettings(tmp_path / "settings.ini"))
    qtbot.addWidget(panel)
    panel.set_supported(loaded.supported_methods, reasons)
    combo = panel.method_combo
    rows = {combo.itemData(i): i for i in range(combo.count()) if not combo.is_header(i)}
    for key in refused:
        item = combo.model().item(rows[key])
        reason = reasons[key]
        assert not item.isEnabled() and reason
        assert combo.itemData(rows[key], DETAIL_ROLE) == reason == item.toolTip()
    kto = rows["kto"]
    assert combo.model().item(kto).isEnabled()
    assert combo.itemData(kto, DETAIL_ROLE) == get_method("kto").summary

    panel.set_supported(None)  # data cleared: every summary comes back
    assert all(combo.itemData(i, DETAIL_ROLE) == get_method(k).summary for k, i in rows.items())


def _darkest(combo, row: int, selected: bool = False) -> int:
    """The darkest grey level the list's delegate paints for ``row`` on white."""
    from PySide6.QtCore import QRect
    from PySide6.QtGui import QColor, QImage, QPainter
    from PySide6.QtWidgets import QStyle, QStyleOptionViewItem

    view = combo.view()
    option = QStyleOptionViewItem()
    option.initFrom(view)
    option.rect = QRect(0, 0, 600, 44)
    option.widget = view
    if selected:
        option.state |= QStyle.StateFlag.State_Selected
    image = QImage(600, 44, QImage.Format.Format_ARGB32)
    image.fill(QColor("white"))
    painter = QPainter(image)
    combo.itemDelegate().paint(painter, option, combo.model().index(row, 0))
    painter.end()
    return min(QColor(image.pixel(x, y)).lightness() for x in range(0, 600, 2) for y in range(44))


def test_a_disabled_entry_is_painted_fainter_and_the_picked_one_stays_legible(qtbot, tmp_path):
    """Both were wrong on screen: a style sheet's text colour made disabled entries as dark as the
    others, and the picked entry's text came out white on the pale selection."""
    from app.studio_settings import StudioSettings
    from app.theme import apply_theme
    from app.train.method_settings_panel import MethodSettingsPanel
    from PySide6.QtWidgets import QApplication

    apply_theme(QApplication.instance())
    panel = MethodSettingsPanel(StudioSettings(tmp_path / "settings.ini"))
    qtbot.addWidget(panel)
    panel.set_supported(["sft", "kto"], {})
    combo = panel.method_combo
    rows = {combo.itemData(i): i for i in range(combo.count()) if not combo.is_header(i)}
    combo.showPopup()
    enabled, disabled = _darkest(combo, rows["kto"]), _darkest(combo, rows["dpo"])
    assert disabled > enabled + 40, (enabled, disabled)
    assert _darkest(combo, rows["kto"], selected=True) < 100
    combo.hidePopup()
