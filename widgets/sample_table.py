"""A table of the completions an RL run sampled, newest first, with each grader's score.

Rows answering the same prompt at the same step form a group; the group's best
completion is marked ▲ on green, its worst ▼ on red, and a group whose
completions all scored the same is marked = on grey: it taught the model
nothing. Long texts are one elided line in the table, whole in the tooltip and
in the pane under the table for the selected row.
"""

from __future__ import annotations

import html
import math
from typing import Any, Iterable

from PySide6.QtCore import QAbstractTableModel, QModelIndex, Qt
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPlainTextEdit,
    QSplitter,
    QStyledItemDelegate,
    QTableView,
    QVBoxLayout,
    QWidget,
)

MAX_ROWS = 256  # the newest rows kept; older ones are in the run folder's metrics.jsonl
_CELL_CHARS = 240
_TOOLTIP_CHARS = 3000
# Rewards closer than this count as equal (TRL's own zero-std test is as loose).
TIE_TOLERANCE = 1e-6

BEST, WORST, TIE, MIDDLE = "best", "worst", "tie", ""
MARKS = {BEST: "▲ best", WORST: "▼ worst", TIE: "= all equal", MIDDLE: ""}
MARK_TIPS = {
    BEST: "The highest total reward of its group: the update makes completions like it more likely.",
    WORST: "The lowest total reward of its group: the update makes completions like it less likely.",
    TIE: "Every completion of this group got the same reward: no learning signal from this prompt.",
}
BACKGROUNDS = {BEST: QColor("#dcfce7"), WORST: QColor("#fee2e2"), TIE: QColor("#f1f5f9")}
POSITIVE = QColor("#15803d")
NEGATIVE = QColor("#b91c1c")
FULL_TEXT_ROLE = Qt.ItemDataRole.UserRole + 1
MARK_ROLE = Qt.ItemDataRole.UserRole + 2


def one_line(text: str, limit: int = _CELL_CHARS) -> str:
    line = " ⏎ ".join(part.strip() for part in str(text).strip().splitlines() if part.strip())
    if len(line) <= limit:
        return line
    return f"{line[: limit * 2 // 3]} … {line[-(limit // 3):]}"


def format_score(value: Any) -> str:
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return "—"
    return f"{value:.3g}"


def group_marks(rewards: list[float]) -> list[str]:
    """best / worst / tie / "" for each reward of one group (NaN rewards are never best or worst)."""
    finite = [r for r in rewards if isinstance(r, (int, float)) and math.isfinite(r)]
    if len(rewards) < 2 or not finite:
        return [MIDDLE] * len(rewards)
    high, low = max(finite), min(finite)
    if high - low <= TIE_TOLERANCE:
        return [TIE] * len(rewards)
    marks = []
    for r in rewards:
        if not (isinstance(r, (int, float)) and math.isfinite(r)):
            marks.append(MIDDLE)
        elif abs(r - high) <= TIE_TOLERANCE:
            marks.append(BEST)
        elif abs(r - low) <= TIE_TOLERANCE:
            marks.append(WORST)
        else:
            marks.append(MIDDLE)
    return marks


class SampleRowsModel(QAbstractTableModel):
    """Sample rows, newest first; columns are fixed texts plus one per grader seen."""

    FIXED_LEFT = ("Step", "Group", "", "Prompt", "Completion")
    FIXED_RIGHT = ("Reward", "Advantage")

    def __init__(self, parent=None, max_rows: int = MAX_ROWS):
        super().__init__(parent)
        self.max_rows = max_rows
        self._rows: list[dict[str, Any]] = []
        self._graders: list[str] = []
        self._band: dict[tuple[int, int], int] = {}  # (step, group) -> 0/1, alternate shading

    # -- content
    def clear(self) -> None:
        self.beginResetModel()
        self._rows, self._graders, self._band = [], [], {}
        self.endResetModel()

    def add_batch(self, step: int, graders: Iterable[str], rows: Iterable[dict[str, Any]]) -> int:
        """Put one step's rows on top; returns how many were added."""
        new: list[dict[str, Any]] = []
        by_group: dict[Any, list[dict[str, Any]]] = {}
        for raw in rows:
            row = dict(raw)
            row["step"] = int(step)
            row.setdefault("scores", {})
            by_group.setdefault(row.get("group", len(by_group)), []).append(row)
            new.append(row)
        for members in by_group.values():
            for row, mark in zip(members, group_marks([m.get("reward", math.nan) for m in members])):
                row["mark"] = mark
        if not new:
            return 0
        names = list(self._graders)
        for name in list(graders) + [n for row in new for n in row["scores"]]:
            if name not in names:
                names.append(name)
        keep = max(0, self.max_rows - len(new))
        self.beginResetModel()
        self._graders = names
        self._rows = new[: self.max_rows] + self._rows[:keep]
        self._band = {}
        for row in self._rows:
            key = (row["step"], row.get("group", 0))
            if key not in self._band:
                self._band[key] = len(self._band) % 2
        self.endResetModel()
        return len(new)

    def rows(self) -> list[dict[str, Any]]:
        return list(self._rows)

    def graders(self) -> list[str]:
        return list(self._graders)

    def columns(self) -> list[str]:
        return [*self.FIXED_LEFT, *self._graders, *self.FIXED_RIGHT]

    def _same_group_as_above(self, position: int) -> bool:
        if position == 0:
            return False
        row, above = self._rows[position], self._rows[position - 1]
        return (row["step"], row.get("group")) == (above["step"], above.get("group"))

    def row_at(self, position: int) -> dict[str, Any]:
        return self._rows[position]

    # -- Qt model
    def rowCount(self, parent=QModelIndex()):
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent=QModelIndex()):
        return 0 if parent.isValid() else len(self.columns())

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):
        if orientation != Qt.Orientation.Horizontal:
            return None
        columns = self.columns()
        if section >= len(columns):
            return None
        name = columns[section]
        if role == Qt.ItemDataRole.DisplayRole:
            return name
        if role == Qt.ItemDataRole.ToolTipRole:
            if name in self._graders:
                return f"The score the grader '{name}' gave (— where it abstained)."
            return {"Reward": "The weighted sum of the graders' scores.",
                    "Advantage": "How much better than its group's average the completion scored, as the "
                                 "update sees it: positive ones are made more likely.",
                    "Group": "Completions sharing a group answer the same prompt at the same step.",
                    "": "Best and worst completion of each group."}.get(name)
        return None

    def _text(self, row: dict[str, Any], name: str) -> str:
        if name == "Step":
            return str(row["step"])
        if name == "Group":
            return f"#{row.get('group', 0)}"
        if name == "":
            return MARKS.get(row.get("mark", MIDDLE), "")
        if name == "Prompt":
            return str(row.get("prompt", ""))
        if name == "Completion":
            return str(row.get("completion", ""))
        if name == "Reward":
            return format_score(row.get("reward"))
        if name == "Advantage":
            value = row.get("advantage")
            text = format_score(value)
            return f"+{text}" if isinstance(value, (int, float)) and value > 0 else text
        if row.get("errors", {}).get(name):
            return "error"
        return format_score(row["scores"].get(name))

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        row = self._rows[index.row()]
        name = self.columns()[index.column()]
        text = self._text(row, name)
        mark = row.get("mark", MIDDLE)
        if role == Qt.ItemDataRole.DisplayRole:
            if name == "Prompt" and self._same_group_as_above(index.row()):
                return "〃"  # the group's prompt, said once
            return one_line(text) if name in ("Prompt", "Completion") else text
        if role == FULL_TEXT_ROLE:
            return text
        if role == MARK_ROLE:
            return mark
        if role == Qt.ItemDataRole.ToolTipRole:
            if name in ("Prompt", "Completion"):
                shown = text if len(text) <= _TOOLTIP_CHARS else text[:_TOOLTIP_CHARS] + " …"
                # Rich text so Qt wraps long lines instead of drawing one screen-wide tooltip.
                return f"<p style='white-space:pre-wrap'>{html.escape(shown)}</p>" if shown else None
            if name == "":
                return MARK_TIPS.get(mark)
            if name in self._graders and text == "error":
                return f"<p style='white-space:pre-wrap'>{html.escape(row['errors'][name])}</p>"
            if name in self._graders and text == "—":
                return f"'{name}' returned no score (None) for this completion."
            return None
        if role == Qt.ItemDataRole.BackgroundRole:
            if mark in BACKGROUNDS:
                return QBrush(BACKGROUNDS[mark])
            if self._band.get((row["step"], row.get("group", 0))):
                return QBrush(QColor("#f8fafc"))
            return None
        if role == Qt.ItemDataRole.ForegroundRole and name == "Prompt" and self._same_group_as_above(index.row()):
            return QBrush(QColor("#9ca3af"))
        if role == Qt.ItemDataRole.ForegroundRole and text == "error" and name in self._graders:
            return QBrush(NEGATIVE)
        if role == Qt.ItemDataRole.ForegroundRole and name == "Advantage":
            value = row.get("advantage")
            if isinstance(value, (int, float)) and math.isfinite(value) and abs(value) > TIE_TOLERANCE:
                return QBrush(POSITIVE if value > 0 else NEGATIVE)
        if role == Qt.ItemDataRole.TextAlignmentRole and (name in self._graders or name in self.FIXED_RIGHT
                                                           or name == "Step"):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None


class _ElideEndDelegate(QStyledItemDelegate):
    """A prompt's question is at its start: its cell drops the end when it does not fit."""

    def initStyleOption(self, option, index):
        super().initStyleOption(option, index)
        option.textElideMode = Qt.TextElideMode.ElideRight


class SampleTable(QWidget):
    """Recent samples of an RL run: a summary line, the table, the selected row in full."""

    def __init__(self, parent=None, max_rows: int = MAX_ROWS):
        super().__init__(parent)
        self.model = SampleRowsModel(self, max_rows=max_rows)
        self.title = QLabel("Samples")
        self.title.setObjectName("panelTitle")
        self.summary = QLabel("Sampled completions appear here after the first logged step.")
        self.summary.setObjectName("mutedText")
        self.summary.setWordWrap(True)
        self.view = QTableView()
        self.view.setModel(self.model)
        self.view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.view.setWordWrap(False)
        # The middle goes: a completion's final answer and a prompt's question are at their ends.
        self.view.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.view.verticalHeader().setVisible(False)
        self.view.verticalHeader().setDefaultSectionSize(24)
        self.view.horizontalHeader().setHighlightSections(False)
        self.view.selectionModel().currentRowChanged.connect(self._show_current)
        self.model.modelReset.connect(self._after_reset)
        self.detail = QPlainTextEdit()
        self.detail.setReadOnly(True)
        self.detail.setPlaceholderText("Select a sample to read its prompt and completion in full.")
        self._current_key: tuple | None = None
        self._hidden: set[str] = set()
        self._prompt_delegate = _ElideEndDelegate(self.view)

        bar = QHBoxLayout()
        bar.addWidget(self.title)
        bar.addWidget(self.summary, 1)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.view)
        split.addWidget(self.detail)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 1)
        split.setChildrenCollapsible(False)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(4)
        layout.addLayout(bar)
        layout.addWidget(split, 1)
        self._last_batch_text = ""

    def add_batch(self, batch) -> None:
        """Show a SampleBatch (the newest step goes on top)."""
        added = self.model.add_batch(batch.step, batch.graders, batch.rows)
        if not added:
            return
        rows = self.model.rows()[:added]
        groups: dict[Any, list[str]] = {}
        for row in rows:
            groups.setdefault(row.get("group"), []).append(row.get("mark", MIDDLE))
        tied = sum(1 for marks in groups.values() if marks and all(m == TIE for m in marks))
        rewards = [r["reward"] for r in rows if isinstance(r.get("reward"), (int, float)) and math.isfinite(r["reward"])]
        if len(groups) == len(rows):  # one answer per prompt (no groups): "8 groups of 8" would read as 64
            counted = f"{len(rows)} completion{'s' * (len(rows) != 1)}, one per prompt"
        else:
            counted = f"{len(groups)} group{'s' * (len(groups) != 1)} of {len(rows)} completions"
        parts = [f"step {batch.step}", counted]
        if getattr(batch, "total_rows", 0) > len(rows):
            parts[-1] += f" (latest of {batch.total_rows})"
        if rewards:
            parts.append(f"mean reward {sum(rewards) / len(rewards):.3g}")
        if tied:
            parts.append(f"{tied} of {len(groups)} groups all equal")
        self.summary.setText(" · ".join(parts))

    def hide_columns(self, names: Iterable[str]) -> None:
        """Leave fixed columns out of view (a trial has no step nor advantage)."""
        self._hidden = set(names)
        self._after_reset()

    def clear(self) -> None:
        self.model.clear()
        self.detail.clear()
        self.summary.setText("Sampled completions appear here after the first logged step.")

    def _after_reset(self) -> None:
        header = self.view.horizontalHeader()
        columns = self.model.columns()
        for i, name in enumerate(columns):
            self.view.setColumnHidden(i, name in self._hidden)
            if name == "Completion":
                header.setSectionResizeMode(i, QHeaderView.ResizeMode.Stretch)
            elif name == "Prompt":
                self.view.setItemDelegateForColumn(i, self._prompt_delegate)
                header.setSectionResizeMode(i, QHeaderView.ResizeMode.Interactive)
                if header.sectionSize(i) < 200:
                    header.resizeSection(i, 220)
            else:
                header.setSectionResizeMode(i, QHeaderView.ResizeMode.ResizeToContents)
        # The selection follows its sample, not its position, when new rows arrive on top.
        if self._current_key is not None:
            for position, row in enumerate(self.model.rows()):
                if self._row_key(row) == self._current_key:
                    self.view.selectRow(position)
                    return

    @staticmethod
    def _row_key(row: dict[str, Any]) -> tuple:
        return (row["step"], row.get("group"), row.get("completion"))

    def _show_current(self, current, _previous=None) -> None:
        if not current.isValid():
            return
        row = self.model.row_at(current.row())
        self._current_key = self._row_key(row)
        scores = ", ".join(f"{name} {format_score(row['scores'].get(name))}" for name in self.model.graders())
        mark = MARKS.get(row.get("mark", MIDDLE), "")
        where = (f"Prompt #{row.get('group', 0)}" if "Step" in self._hidden
                 else f"Step {row['step']} · group #{row.get('group', 0)}")
        numbers = f"Reward {format_score(row.get('reward'))}"
        if "Advantage" not in self._hidden:
            numbers += f" · advantage {format_score(row.get('advantage'))}"
        errors = "".join(f"\n{name} failed: {message}" for name, message in row.get("errors", {}).items())
        self.detail.setPlainText(
            where + (f" · {mark}" if mark else "") + "\n" + numbers + (f" · {scores}" if scores else "")
            + errors + f"\n\nPROMPT\n{row.get('prompt', '')}\n\nCOMPLETION\n{row.get('completion', '')}")
