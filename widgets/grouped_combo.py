"""A combo box whose choices sit under section headers, each with a muted line of detail.

Headers cannot be picked; the detail line shows in the open list only, so the
closed box stays one line high.
"""

from __future__ import annotations

from PySide6.QtCore import QRect, QSize, Qt
from PySide6.QtGui import QColor, QFont, QPalette, QStandardItem, QStandardItemModel
from PySide6.QtWidgets import QComboBox, QStyle, QStyledItemDelegate, QStyleOptionViewItem

DETAIL_ROLE = Qt.ItemDataRole.UserRole + 1
HEADER_ROLE = Qt.ItemDataRole.UserRole + 2


def _faded(colour: QColor, alpha: int) -> QColor:
    faded = QColor(colour)
    faded.setAlpha(alpha)
    return faded


class _DetailDelegate(QStyledItemDelegate):
    def sizeHint(self, option, index) -> QSize:
        size = super().sizeHint(option, index)
        if index.data(DETAIL_ROLE):
            size.setHeight(size.height() + option.fontMetrics.height() + 4)
        return size

    def paint(self, painter, option, index) -> None:
        detail = index.data(DETAIL_ROLE)
        if not detail:
            super().paint(painter, option, index)
            return
        line = option.fontMetrics.height()
        top = QRect(option.rect)
        top.setHeight(option.rect.height() - line - 2)
        # The item's background and selection are drawn over both lines, its text by hand.
        first = QStyleOptionViewItem(option)
        self.initStyleOption(first, index)
        first.text = ""
        style = option.widget.style() if option.widget else None
        if style is not None:
            style.drawControl(QStyle.ControlElement.CE_ItemViewItem, first, painter, option.widget)
        enabled = bool(index.flags() & Qt.ItemFlag.ItemIsEnabled)
        selected = bool(option.state & QStyle.StateFlag.State_Selected)
        role = QPalette.ColorRole.HighlightedText if selected else QPalette.ColorRole.Text
        # Faded by alpha rather than by the palette's disabled colours: a style sheet that sets
        # `color` makes those the same as the normal ones, and a disabled entry must look disabled.
        text = option.palette.color(QPalette.ColorGroup.Normal, role)
        painter.save()
        painter.setPen(_faded(text, 255 if enabled else 120))
        text_rect = top.adjusted(8, 2, -6, 0)
        painter.drawText(text_rect, Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter,
                         str(index.data(Qt.ItemDataRole.DisplayRole)))
        painter.setPen(_faded(text, 165 if enabled else 120))
        small = QFont(option.font)
        small.setPointSizeF(max(6.0, option.font.pointSizeF() * 0.9))
        painter.setFont(small)
        detail_rect = QRect(option.rect.left() + 8, top.bottom(), option.rect.width() - 14, line + 2)
        painter.drawText(detail_rect, Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter,
                         option.fontMetrics.elidedText(str(detail), Qt.TextElideMode.ElideRight,
                                                       detail_rect.width()))
        painter.restore()


class GroupedComboBox(QComboBox):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.setModel(QStandardItemModel(self))
        self.setItemDelegate(_DetailDelegate(self))
        # Sized by its longest entry (a group title), the closed box was 583 px wide and pushed the
        # whole setup column past its 530 px: every card was cut off on the right. The open list
        # still shows each entry whole.
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(16)

    def add_group(self, title: str) -> None:
        item = QStandardItem(title)
        item.setFlags(Qt.ItemFlag.NoItemFlags)
        item.setData(True, HEADER_ROLE)
        font = item.font()
        font.setBold(True)
        item.setFont(font)
        self.model().appendRow(item)

    def add_choice(self, text: str, data, detail: str = "") -> None:
        item = QStandardItem(text)
        item.setData(data, Qt.ItemDataRole.UserRole)
        item.setData(detail, DETAIL_ROLE)
        item.setToolTip(detail)
        self.model().appendRow(item)

    def set_detail(self, index: int, detail: str) -> None:
        """Replace the muted line under choice ``index`` (and its tooltip, which shows it whole)."""
        item = self.model().item(index)
        item.setData(detail, DETAIL_ROLE)
        item.setToolTip(detail)

    def is_header(self, index: int) -> bool:
        return bool(self.model().item(index).data(HEADER_ROLE))
