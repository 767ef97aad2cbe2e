"""The batch compare table: one CompareRow per line, appended as the worker finishes them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, Qt
from PySide6.QtGui import QColor

from app.compare.text_format import flag, signed

_TEXT_CHARS = 160
_GOOD, _BAD, _MUTED = QColor("#15803d"), QColor("#b91c1c"), QColor("#9ca3af")


def _short(text: str | None) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= _TEXT_CHARS else flat[: _TEXT_CHARS - 1] + "…"


def _tokens(row) -> str:
    base = str(row.base_tokens) if row.base_finish else "–"
    aligned = str(row.aligned_tokens) if row.aligned_finish else "–"
    return f"{base} → {aligned}"


def _prefers(value_of: Callable[[Any], bool | None]) -> Callable[[Any], str]:
    return lambda row: flag(value_of(row)) if row.has_pair else "–"


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


def _aligned_reward_colour(row) -> QColor | None:
    if row.aligned_answer_reward is None or row.base_answer_reward is None:
        return None
    return _GOOD if row.aligned_answer_reward > row.base_answer_reward else _BAD


def _aligned_prefers_colour(row) -> QColor | None:
    return (_GOOD if row.aligned_prefers_chosen else _BAD) if row.has_pair else None


@dataclass(frozen=True)
class Column:
    header: str  # two short lines at most, so the pair columns stay narrow
    text_of: Callable[[Any], str]
    tip: str
    numeric: bool = False
    full_text: str = ""  # the row field a cell's tooltip shows in full
    pair: bool = False  # a verdict on the row's held-out pair
    colour: Callable[[Any], QColor | None] | None = None  # green/red where a cell reads as good/bad


_PAIR_NOTE = ("\n\nFrom the row's held-out pair (the chosen and rejected responses the run never trained on). "
              "✓ yes, ✗ no, – the row has no pair.")
COLUMNS: list[Column] = [
    Column("#", lambda r: str(r.index + 1), "Position of the prompt in the batch.", numeric=True),
    Column("Prompt", lambda r: _short(r.prompt), "The prompt both models answered.", full_text="prompt"),
    Column("Base answer", lambda r: _short(r.base_answer), "The base model's answer (adapter off).",
           full_text="base_answer"),
    Column("Aligned answer", lambda r: _short(r.aligned_answer), "The aligned model's answer (adapter on).",
           full_text="aligned_answer"),
    Column("Length\nbase → aligned", _tokens, "Answer lengths in tokens, base model → aligned model.", True),
    Column("Reward of\nbase answer", lambda r: signed(r.base_answer_reward),
           "Implicit reward β·(log p aligned − log p base) of the base model's answer.", True),
    Column("Reward of\naligned answer", lambda r: signed(r.aligned_answer_reward),
           "Implicit reward of the aligned model's answer. Green when it is higher than the base answer's: the "
           "aligned model prefers its own answer.", True, colour=_aligned_reward_colour),
    Column("Base model\nprefers chosen", _prefers(lambda r: r.base_prefers_chosen),
           "Does the base model (adapter off) find the chosen response more likely than the rejected one?"
           + _PAIR_NOTE, True, pair=True),
    Column("Aligned model\nprefers chosen", _prefers(lambda r: r.aligned_prefers_chosen),
           "Does the aligned model (adapter on) find the chosen response more likely than the rejected one? "
           "Green when it does." + _PAIR_NOTE, True, pair=True, colour=_aligned_prefers_colour),
    Column("Reward\nprefers chosen", _prefers(lambda r: r.reward_prefers_chosen),
           "Does the implicit reward rank the chosen response above the rejected one? This is what preference methods with a reference model train "
           "for, and what preference accuracy counts." + _PAIR_NOTE, True, pair=True),
]
TEXT_COLUMNS = tuple(i for i, c in enumerate(COLUMNS) if c.full_text)


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
            return COLUMNS[section].header
        if role == Qt.ItemDataRole.ToolTipRole:
            return COLUMNS[section].tip
        return None

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        row = self._rows[index.row()]
        column = COLUMNS[index.column()]
        if role == Qt.ItemDataRole.DisplayRole:
            return column.text_of(row)
        if role == Qt.ItemDataRole.ToolTipRole:
            if column.full_text:
                return getattr(row, column.full_text) or None
            if column.pair:
                return _pair_tip(row)
            return None
        if role == Qt.ItemDataRole.TextAlignmentRole:
            if column.pair:
                return int(Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop)
            if column.numeric:
                return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignTop)
            return int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        if role == Qt.ItemDataRole.ForegroundRole:
            colour = column.colour(row) if column.colour is not None else None
            if colour is not None:
                return colour
            if column.text_of(row) == "–":
                return _MUTED
        return None
