"""A table of text rows: long cells are elided, the full text shows on hover and on selection."""

from __future__ import annotations

import html
from typing import Sequence

from PySide6.QtCore import QAbstractTableModel, QModelIndex, Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QLabel,
    QPlainTextEdit,
    QSplitter,
    QTableView,
    QVBoxLayout,
    QWidget,
)

FULL_TEXT_ROLE = Qt.ItemDataRole.UserRole + 1
_CELL_CHARS = 240  # enough to fill a wide column; the view elides the rest visually
_TOOLTIP_CHARS = 3000


class TextRowsModel(QAbstractTableModel):
    """Rows of ``{column: text}``; the display shows one line per cell."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self._columns: list[str] = []
        self._rows: list[dict[str, str]] = []

    def set_rows(self, rows: Sequence[dict[str, str]], columns: Sequence[str] | None = None) -> None:
        self.beginResetModel()
        self._rows = [dict(r) for r in rows]
        if columns is None:
            seen: dict[str, None] = {}
            for r in self._rows:
                for k in r:
                    seen.setdefault(k, None)
            columns = list(seen)
        self._columns = list(columns)
        self.endResetModel()

    def columns(self) -> list[str]:
        return list(self._columns)

    def rowCount(self, parent=QModelIndex()):
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent=QModelIndex()):
        return 0 if parent.isValid() else len(self._columns)

    def full_text(self, row: int, column: int) -> str:
        value = self._rows[row].get(self._columns[column], "")
        return "" if value is None else str(value)

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        text = self.full_text(index.row(), index.column())
        if role == Qt.ItemDataRole.DisplayRole:
            one_line = " ⏎ ".join(part.strip() for part in text.strip().splitlines() if part.strip())
            return one_line[:_CELL_CHARS] + ("…" if len(one_line) > _CELL_CHARS else "")
        if role == Qt.ItemDataRole.ToolTipRole:
            if not text:
                return None
            shown = text if len(text) <= _TOOLTIP_CHARS else text[:_TOOLTIP_CHARS] + " …"
            # Rich text so Qt wraps long lines instead of drawing one screen-wide tooltip.
            return f"<p style='white-space:pre-wrap'>{html.escape(shown)}</p>"
        if role == FULL_TEXT_ROLE:
            return text
        return None

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):
        if role != Qt.ItemDataRole.DisplayRole:
            return None
        if orientation == Qt.Orientation.Horizontal:
            return self._columns[section] if section < len(self._columns) else None
        return str(section + 1)


class PreviewTable(QWidget):
    """The table above, plus a pane that shows the selected cell in full."""

    sig_cell_selected = Signal(str, str)
    """A cell was selected; carries its column name and full text."""

    def __init__(self, parent=None, placeholder: str = "Select a cell to read it in full."):
        super().__init__(parent)
        self.model = TextRowsModel(self)
        self.view = QTableView()
        self.view.setObjectName("previewTable")
        self.view.setModel(self.model)
        self.view.setWordWrap(False)
        self.view.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectItems)
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.view.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.view.setAlternatingRowColors(True)
        self.view.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.view.verticalHeader().setDefaultSectionSize(24)
        self.view.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        self.view.selectionModel().currentChanged.connect(self._on_current)

        self.detail = QPlainTextEdit()
        self.detail.setObjectName("previewDetail")
        self.detail.setReadOnly(True)
        self.detail.setPlaceholderText(placeholder)
        self.detail_title = QLabel()
        self.detail_title.setObjectName("previewDetailTitle")

        detail_host = QWidget()
        dl = QVBoxLayout(detail_host)
        dl.setContentsMargins(0, 4, 0, 0)
        dl.setSpacing(2)
        dl.addWidget(self.detail_title)
        dl.addWidget(self.detail)

        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(self.view)
        splitter.addWidget(detail_host)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 1)
        splitter.setChildrenCollapsible(False)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(splitter)

    def set_rows(self, rows: Sequence[dict[str, str]], columns: Sequence[str] | None = None) -> None:
        self.model.set_rows(rows, columns)
        self.detail.clear()
        self.detail_title.clear()

    def row_count(self) -> int:
        return self.model.rowCount()

    def select_cell(self, row: int, column: int) -> None:
        self.view.setCurrentIndex(self.model.index(row, column))

    def _on_current(self, current: QModelIndex, _previous: QModelIndex) -> None:
        if not current.isValid():
            return
        column = self.model.columns()[current.column()]
        text = self.model.full_text(current.row(), current.column())
        self.detail_title.setText(f"Row {current.row() + 1} · {column}")
        self.detail.setPlainText(text)
        self.sig_cell_selected.emit(column, text)
