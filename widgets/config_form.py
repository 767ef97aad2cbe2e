"""A settings form generated from dataclass fields and their metadata.

Each field's metadata may carry ``label``, ``help`` (shown as a tooltip),
``min``/``max``, ``choices``, ``advanced`` (folded away) and ``group`` (a
heading). The form does not validate beyond parsing what was typed: the owner
runs its own validation and hands the problems back with ``set_problems``, so
the rules live in one place, next to the dataclass.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterable, Mapping

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from widgets.collapsible_section import CollapsibleSection
from widgets.wheel_guard import calm_focus

_INT_LIMIT = 2**31 - 1


def field_kind(f: dataclasses.Field) -> str:
    """bool | int | float | str | dict, from the default (annotations may be strings)."""
    default = f.default
    if default is None or default is dataclasses.MISSING:
        return "dict" if "dict" in str(f.type) else "str"
    if isinstance(default, bool):
        return "bool"
    if isinstance(default, int):
        return "int"
    if isinstance(default, float):
        return "float"
    if isinstance(default, dict):
        return "dict"
    return "str"


def format_float(value: float) -> str:
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:g}"
    return str(value)


class _Row:
    def __init__(self, field: dataclasses.Field, editor: QWidget, label: QLabel, error: QLabel):
        self.field = field
        self.kind = "choice" if field.metadata.get("choices") else field_kind(field)
        self.editor = editor
        self.label = label
        self.error = error


class ConfigForm(QWidget):
    """Editors for a list of dataclass fields, grouped, with advanced ones folded away."""

    sig_values_changed = Signal()
    """The user changed a value (not emitted by ``set_values``)."""

    def __init__(self, parent: QWidget | None = None, advanced_title: str = "Advanced settings",
                 group_titles: bool = True):
        super().__init__(parent)
        self._advanced_title = advanced_title
        self._group_titles = group_titles
        self._rows: dict[str, _Row] = {}
        self._updating = False
        self._layout = QVBoxLayout(self)
        self._layout.setContentsMargins(0, 0, 0, 0)
        self._layout.setSpacing(8)
        self._advanced: CollapsibleSection | None = None

    # ------------------------------------------------------------ building
    def build(self, fields: Iterable[dataclasses.Field], values: Mapping[str, Any]) -> None:
        """Replace the form with editors for ``fields`` holding ``values``."""
        advanced_open = self._advanced.is_expanded() if self._advanced else False
        while self._layout.count():
            item = self._layout.takeAt(0)
            if item.widget():
                # Hidden at once: until the event loop deletes it, the old form would
                # still be painted under the new one.
                item.widget().hide()
                item.widget().deleteLater()
        self._rows.clear()
        basic: dict[str, list] = {}
        advanced: dict[str, list] = {}
        for f in fields:
            target = advanced if f.metadata.get("advanced") else basic
            target.setdefault(f.metadata.get("group") or "Settings", []).append(f)
        basic_host = QWidget()
        self._fill(basic_host, basic)
        self._layout.addWidget(basic_host)
        self._advanced = None
        if advanced:
            host = QWidget()
            self._fill(host, advanced)
            count = sum(len(v) for v in advanced.values())
            self._advanced = CollapsibleSection(f"{self._advanced_title} ({count})", host, expanded=advanced_open)
            self._layout.addWidget(self._advanced)
        self.set_values(values)

    def _fill(self, host: QWidget, groups: dict[str, list]) -> None:
        outer = QVBoxLayout(host)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.setSpacing(6)
        for group, fields in groups.items():
            if self._group_titles:
                heading = QLabel(group)
                heading.setObjectName("formGroupTitle")
                outer.addWidget(heading)
            form = QFormLayout()
            form.setContentsMargins(0, 0, 0, 4)
            form.setHorizontalSpacing(12)
            form.setVerticalSpacing(6)
            form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
            for f in fields:
                self._add_row(form, f)
            outer.addLayout(form)

    def _add_row(self, form: QFormLayout, f: dataclasses.Field) -> None:
        meta = f.metadata
        editor = self._make_editor(f)
        editor.setObjectName(f"field_{f.name}")
        calm_focus(editor)  # forms are rebuilt after the window's guard calmed the first ones
        label = QLabel(meta.get("label") or f.name.replace("_", " ").capitalize())
        tip = self._tooltip(f)
        label.setToolTip(tip)
        editor.setToolTip(tip)
        error = QLabel()
        error.setObjectName("fieldError")
        error.setWordWrap(True)
        error.setVisible(False)
        holder = QWidget()
        box = QVBoxLayout(holder)
        box.setContentsMargins(0, 0, 0, 0)
        box.setSpacing(2)
        box.addWidget(editor)
        box.addWidget(error)
        form.addRow(label, holder)
        self._rows[f.name] = _Row(f, editor, label, error)

    @staticmethod
    def _tooltip(f: dataclasses.Field) -> str:
        meta = f.metadata
        tip = meta.get("help") or ""
        lo, hi = meta.get("min"), meta.get("max")
        if lo is not None and hi is not None:
            tip += f"\n\nAllowed: {format_float(float(lo))} to {format_float(float(hi))}."
        default = f.default if f.default is not dataclasses.MISSING else None
        if default not in (None, ""):
            shown = format_float(default) if isinstance(default, float) else default
            tip += f"\nDefault: {shown}."
        return tip.strip()

    def _make_editor(self, f: dataclasses.Field) -> QWidget:
        meta = f.metadata
        kind = field_kind(f)
        if meta.get("choices"):
            combo = QComboBox()
            notes = meta.get("choice_notes") or {}
            for choice in meta["choices"]:
                note = notes.get(choice)
                combo.addItem(f"{choice}: {note}" if note else str(choice), choice)
            if notes:  # long notes would otherwise widen the whole form to the longest one
                combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
                combo.setMinimumContentsLength(16)
            combo.currentIndexChanged.connect(self._on_edit)
            return combo
        if kind == "bool":
            box = QCheckBox()
            box.toggled.connect(self._on_edit)
            return box
        if kind == "int":
            spin = QSpinBox()
            lo = meta.get("min")
            hi = meta.get("max")
            spin.setRange(int(max(lo if lo is not None else -_INT_LIMIT, -_INT_LIMIT)),
                          int(min(hi if hi is not None else _INT_LIMIT, _INT_LIMIT)))
            spin.setGroupSeparatorShown(True)
            keep_spin_text_visible(spin)
            spin.valueChanged.connect(self._on_edit)
            return spin
        line = QLineEdit()
        if meta.get("placeholder"):
            line.setPlaceholderText(meta["placeholder"])
        elif kind == "dict":
            line.setPlaceholderText("{field: column, ...}")
        line.textEdited.connect(self._on_edit)
        return line

    # --------------------------------------------------------------- values
    def field_names(self) -> list[str]:
        return list(self._rows)

    def editor(self, name: str) -> QWidget:
        return self._rows[name].editor

    def set_values(self, values: Mapping[str, Any]) -> None:
        self._updating = True
        try:
            for name, value in values.items():
                row = self._rows.get(name)
                if row is None:
                    continue
                ed = row.editor
                if row.kind == "choice":
                    idx = ed.findData(value)
                    if idx < 0:
                        ed.addItem(str(value), value)
                        idx = ed.count() - 1
                    ed.setCurrentIndex(idx)
                elif row.kind == "bool":
                    ed.setChecked(bool(value))
                elif row.kind == "int":
                    ed.setValue(int(value))
                elif row.kind == "float":
                    ed.setText(format_float(value) if isinstance(value, (int, float)) else str(value))
                elif row.kind == "dict":
                    ed.setText(_dict_text(value))
                else:
                    ed.setText("" if value is None else str(value))
        finally:
            self._updating = False

    def values(self) -> dict[str, Any]:
        """Parsed values; text that does not parse is returned as typed, for the owner's validator."""
        out: dict[str, Any] = {}
        for name, row in self._rows.items():
            ed = row.editor
            if row.kind == "choice":
                out[name] = ed.currentData()
            elif row.kind == "bool":
                out[name] = ed.isChecked()
            elif row.kind == "int":
                out[name] = ed.value()
            elif row.kind == "float":
                text = ed.text().strip()
                try:
                    out[name] = float(text)
                except ValueError:
                    out[name] = text
            elif row.kind == "dict":
                out[name] = ed.text().strip() or None
            else:
                out[name] = ed.text()
        return out

    def parse_problems(self) -> dict[str, str]:
        """Fields whose text is not even the right type (a letter in a number field)."""
        problems = {}
        for name, row in self._rows.items():
            if row.kind == "float":
                text = row.editor.text().strip()
                try:
                    float(text)
                except ValueError:
                    problems[name] = f"{row.label.text()}: '{text}' is not a number" if text else \
                        f"{row.label.text()} needs a value"
        return problems

    def set_problems(self, problems: Mapping[str, str]) -> None:
        """Flag fields inline; fields not named are cleared. Folded fields with problems unfold."""
        unfold = False
        for name, row in self._rows.items():
            message = problems.get(name, "")
            if message and row.field.metadata.get("advanced") and not row.error.text():
                unfold = True
            if message == row.error.text():
                continue  # re-polishing thirty editors on every keystroke is noticeable
            row.error.setText(message)
            row.error.setVisible(bool(message))
            row.editor.setProperty("invalid", bool(message))
            row.editor.style().unpolish(row.editor)
            row.editor.style().polish(row.editor)
        if unfold and self._advanced is not None:
            self._advanced.set_expanded(True)

    def shown_problems(self) -> dict[str, str]:
        return {name: row.error.text() for name, row in self._rows.items() if row.error.text()}

    def advanced_section(self) -> CollapsibleSection | None:
        return self._advanced

    def _on_edit(self, *_args) -> None:
        if not self._updating:
            self.sig_values_changed.emit()


def _dict_text(value: Any) -> str:
    if not value:
        return ""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {v}" for k, v in value.items()) + "}"
    return str(value)


def keep_spin_text_visible(spin: QSpinBox) -> None:
    """Hide a spin box's step buttons without hiding its number.

    Step arrows drawn under a style sheet come out as stray dashes, but Qt 6.12
    gives a spin box with ``NoButtons`` an edit field one pixel wide under a
    style sheet, so the value vanishes; zero-width buttons keep the field its
    full width. Typing still edits the value, and so does the mouse wheel once
    the field has focus (see ``widgets.wheel_guard``)."""
    spin.setButtonSymbols(QSpinBox.ButtonSymbols.UpDownArrows)
    spin.setStyleSheet("QSpinBox::up-button, QSpinBox::down-button { width: 0px; border: none; }")
