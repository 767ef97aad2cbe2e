"""The batch compare table: one CompareRow per line, appended as the worker finishes them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, Qt
from PySide6.QtGui import QColor

from widgets.compare_format import flag, signed

_TEXT_CHARS = 160
_GOOD, _BAD, _MUTED = QColor("#15803d"), QColor("#b91c1c"), QColor("#9ca3af")


def _short(text: str | None) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= _TEXT_CHARS else flat[: _TEXT_CHARS - 1] + "…"


def _tokens(row) -> str:
    base = str(row.base_tokens) if row.base_finish else "–"
    aligned = str(row.aligned_tokens) if row.aligned_finish else "–"
    return f"{base} → {aligned}"


def _pair_flags(row) -> str:
    if not row.has_pair:
        return "–"
    return f"{flag(row.base_prefers_chosen)}  {flag(row.aligned_prefers_chosen)}  {flag(row.reward_prefers_chosen)}"


def _pair_tip(row) -> str:
    if not row.has_pair:
        return "This row has no chosen/rejected pair."
    words = {True: "yes", False: "no", None: "n/a"}
    margin = (row.chosen_reward - row.rejected_reward
              if row.chosen_reward is not None and row.rejected_reward is not None else None)
    return (f"Base model prefers chosen: {words[row.base_prefers_chosen]}\n"
            f"Aligned model prefers chosen: {words[row.aligned_prefers_chosen]}\n"
            f"Implicit reward ranks chosen first: {words[row.reward_prefers_chosen]} "
            f"(margin {signed(margin)})\n\nChosen: {row.chosen}\nRejected: {row.rejected}")


# header, cell text, tooltip for the header, numeric
COLUMNS: list[tuple[str, Callable[[Any], str], str, bool]] = [
    ("#", lambda r: str(r.index + 1), "Position of the prompt in the batch.", True),
    ("Prompt", lambda r: _short(r.prompt), "The prompt both models answered.", False),
    ("Base answer", lambda r: _short(r.base_answer), "The base model's answer (adapter off).", False),
    ("Aligned answer", lambda r: _short(r.aligned_answer), "The aligned model's answer (adapter on).", False),
    ("Tokens", _tokens, "Answer lengths in tokens, base → aligned.", True),
    ("Base reward", lambda r: signed(r.base_answer_reward),
     "Implicit reward β·(log p aligned − log p base) of the base model's answer.", True),
    ("Aligned reward", lambda r: signed(r.aligned_answer_reward),
     ("Implicit reward of the aligned model's answer. Higher than the base answer's: the aligned model "
      "prefers its own answer."), True),
    ("Chosen? B A R", _pair_flags,
     ("On the row's held-out pair: does the Base model, the Aligned model, and the implicit Reward rank the "
      "chosen response above the rejected one? ✓ yes, ✗ no."), True),
]
FULL_TEXT = {1: "prompt", 2: "base_answer", 3: "aligned_answer"}


class CompareRowsModel(QAbstractTableModel):
    def __init__(self, parent=None):
        super().__init__(parent)
        self._rows: list = []

    # ------------------------------------------------------------ contents
    def clear(self) -> None:
        self.beginResetModel()
        self._rows = []
        self.endResetModel()

    def add_row(self, row) -> None:
        """Rows arrive in order of completion; they are kept in prompt order."""
        position = len(self._rows)
        while position > 0 and self._rows[position - 1].index > row.index:
            position -= 1
        self.beginInsertRows(QModelIndex(), position, position)
        self._rows.insert(position, row)
        self.endInsertRows()

    def rows(self) -> list:
        return list(self._rows)

    def row_at(self, position: int):
        return self._rows[position] if 0 <= position < len(self._rows) else None

    # ------------------------------------------------------------ Qt model
    def rowCount(self, parent: QModelIndex | None = None) -> int:
        return 0 if parent is not None and parent.isValid() else len(self._rows)

    def columnCount(self, parent: QModelIndex | None = None) -> int:
        return 0 if parent is not None and parent.isValid() else len(COLUMNS)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):
        if orientation != Qt.Orientation.Horizontal or not 0 <= section < len(COLUMNS):
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section][0]
        if role == Qt.ItemDataRole.ToolTipRole:
            return COLUMNS[section][2]
        return None

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        row = self._rows[index.row()]
        column = index.column()
        _header, text_of, _tip, numeric = COLUMNS[column]
        if role == Qt.ItemDataRole.DisplayRole:
            return text_of(row)
        if role == Qt.ItemDataRole.ToolTipRole:
            if column in FULL_TEXT:
                return getattr(row, FULL_TEXT[column]) or None
            if column == 7:
                return _pair_tip(row)
            return None
        if role == Qt.ItemDataRole.TextAlignmentRole:
            if numeric:
                return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignTop)
            return int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        if role == Qt.ItemDataRole.ForegroundRole:
            if column == 6 and row.aligned_answer_reward is not None and row.base_answer_reward is not None:
                return _GOOD if row.aligned_answer_reward > row.base_answer_reward else _BAD
            if column == 7 and row.has_pair:
                return _GOOD if row.aligned_prefers_chosen else _BAD
            if text_of(row) == "–":
                return _MUTED
        return None
