"""The rows a generation job works on: a prompt each, and for AI feedback maybe two answers.

An input file holds prompts only, preference pairs (whose chosen/rejected the judge labels
afresh; the file's own label is kept to report how often the judge agrees with it), or a prompt
with two answer columns (``answer_a``/``answer_b`` and the usual spellings). Rows are read with the
Data panel's readers, so any file the studio opens works here; a row that cannot be used is
skipped with its line and field named, and a file in which no row is usable is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backend.data.formats import DatasetError, DroppedRow
from backend.data.prompt_rendering import is_messages

PROMPT_COLUMNS = ("prompt", "question", "instruction", "problem", "query", "input")
ANSWER_COLUMN_PAIRS = (("chosen", "rejected"), ("answer_a", "answer_b"), ("response_a", "response_b"),
                       ("completion_a", "completion_b"), ("output_a", "output_b"), ("answer_1", "answer_2"),
                       ("response_1", "response_2"), ("output_1", "output_2"))
MAX_SKIPS_KEPT = 20


@dataclass
class InputRow:
    index: int  # 0-based order among usable rows; what the partial file records
    position: int  # the line (or row) in the file, for messages
    prompt: Any  # a string or a message list
    answers: tuple[str, str] | None = None
    file_prefers_first: bool | None = None  # pairs files: the first answer is the file's chosen


@dataclass
class InputRows:
    path: str
    rows: list[InputRow]
    prompt_column: str
    answer_columns: tuple[str, str] | None
    unit: str = "line"
    skipped: int = 0
    skip_messages: list[str] = field(default_factory=list)

    @property
    def has_answers(self) -> bool:
        return self.answer_columns is not None

    def describe(self) -> str:
        what = (f"prompts in '{self.prompt_column}' and answers in '{self.answer_columns[0]}'/"
                f"'{self.answer_columns[1]}'" if self.answer_columns else f"prompts in '{self.prompt_column}'")
        skipped = f"; {self.skipped} skipped" if self.skipped else ""
        return f"{len(self.rows)} rows ({what}{skipped})"


def read_input_rows(path: str | Path, limit: int = 0) -> InputRows:
    """Every usable row of ``path`` (the first ``limit`` when it is above 0). DatasetError names the
    file (and the columns it has) when nothing can be used."""
    from backend.data.readers import open_rows

    path = Path(path).expanduser()
    rows: list[InputRow] = []
    skips: list[str] = []
    skipped = 0
    columns: tuple[str, tuple[str, str] | None] | None = None
    with open_rows(path) as source:
        unit = source.unit
        for item in source.items:
            if isinstance(item, DroppedRow):
                skipped += 1
                _keep(skips, f"{path.name} {unit} {item.line}: {item.reason}")
                continue
            position, raw = item
            if columns is None:
                columns = _columns_for(raw, source.columns, path)
            prompt_col, answer_cols = columns
            try:
                rows.append(_row(len(rows), position, raw, prompt_col, answer_cols))
            except _Unusable as why:
                skipped += 1
                _keep(skips, f"{path.name} {unit} {position}, field '{why.field}': {why.reason}")
                continue
            if limit and len(rows) >= limit:
                break
    if columns is None:
        raise DatasetError(f"{path.name} holds no rows.", path=path)
    if not rows:
        shown = "; ".join(skips[:3])
        raise DatasetError(f"No row of {path.name} can be used: {shown}", path=path)
    return InputRows(str(path), rows, columns[0], columns[1], unit, skipped, skips)


def _keep(messages: list[str], message: str) -> None:
    if len(messages) < MAX_SKIPS_KEPT:
        messages.append(message)


def _columns_for(first: dict[str, Any], known: list[str], path: Path) -> tuple[str, tuple[str, str] | None]:
    names = list(known) or list(first)
    lowered = {str(c).strip().lower(): c for c in names}
    prompt = next((lowered[c] for c in PROMPT_COLUMNS if c in lowered), None)
    answers = next(((lowered[a], lowered[b]) for a, b in ANSWER_COLUMN_PAIRS if a in lowered and b in lowered), None)
    if prompt is None:
        raise DatasetError(
            f"{path.name} has no prompt column: it has {', '.join(map(str, names)) or 'no columns'}. Name the "
            f"column with the prompts one of {', '.join(PROMPT_COLUMNS)}.", path=path, field="prompt",
            columns=[str(c) for c in names])
    return prompt, answers


class _Unusable(Exception):
    def __init__(self, field: str, reason: str):
        super().__init__(reason)
        self.field, self.reason = field, reason


def _row(index: int, position: int, raw: dict[str, Any], prompt_col: str,
         answer_cols: tuple[str, str] | None) -> InputRow:
    prompt = raw.get(prompt_col)
    if isinstance(prompt, str):
        if not prompt.strip():
            raise _Unusable(prompt_col, "the prompt is empty")
    elif prompt is None:
        raise _Unusable(prompt_col, "the prompt is missing")
    elif not is_messages(prompt) or not all(isinstance(m.get("content"), str) for m in prompt):
        raise _Unusable(prompt_col, f"the prompt is {_kind(prompt)}, not text or a list of chat messages")
    if answer_cols is None:
        return InputRow(index, position, prompt)
    answers = tuple(_answer_text(raw.get(col), col) for col in answer_cols)
    if answers[0].strip() == answers[1].strip():
        raise _Unusable(answer_cols[1], "the two answers are identical, so there is nothing to choose")
    pairs_file = [str(c).strip().lower() for c in answer_cols] == ["chosen", "rejected"]
    return InputRow(index, position, prompt, answers, True if pairs_file else None)


def _answer_text(value: Any, col: str) -> str:
    if isinstance(value, list) and value and all(isinstance(m, dict) for m in value):
        replies = [m.get("content") for m in value if m.get("role") == "assistant"]
        value = replies[-1] if replies else None
    if value is None:
        raise _Unusable(col, "the answer is missing")
    if not isinstance(value, str):
        raise _Unusable(col, f"the answer is {_kind(value)}, not text")
    if not value.strip():
        raise _Unusable(col, "the answer is empty")
    return value


def _kind(value: Any) -> str:
    return f"a {type(value).__name__}"
