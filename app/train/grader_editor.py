"""The graders of an RL method, as part of its settings: built-in graders with their
settings and weights, a reward model, and functions of the user's own reward file.

It edits four config fields together (``graders``, ``reward_file``, ``reward_model``,
``allow_reward_code``) and is shown for a method whose config has ``graders``. The
reward file is only read here (``ast``, via ``list_reward_functions``); it runs in a
worker, and only once the user allowed this file in the permission confirmation.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any, Callable

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from backend.runs.code_permissions import REWARD_CODE, CodeSubject, file_subject
from backend.graders import (
    DEFAULT_GRADERS,
    FILE_PREFIX,
    FunctionInfo,
    GraderSpec,
    RewardFileError,
    builtin_graders,
    entry_problems,
    list_reward_functions,
)
from widgets.wheel_guard import calm_focus

GRADER_FIELDS = ("graders", "reward_file", "reward_model", "allow_reward_code")
REWARD_MODEL_KEY = "reward_model"
_ENTRY_KEYS = ("grader", "weight", "name")


def _setting_label(name: str) -> str:
    return name.replace("_", " ").capitalize()


def _weight_box(value: float) -> QDoubleSpinBox:
    box = QDoubleSpinBox()
    box.setRange(-100.0, 100.0)
    box.setDecimals(2)
    box.setSingleStep(0.1)
    box.setValue(float(value))
    box.setToolTip("How much this grader's score counts in the total reward (negative: it is a penalty).")
    box.setMaximumWidth(80)
    calm_focus(box)
    return box


class _SettingEditor:
    """One grader setting: an editor picked from its default and choices."""

    def __init__(self, setting, value: Any, is_column: bool):
        self.setting = setting
        default = setting.default
        if setting.choices:
            widget = QComboBox()
            for choice in setting.choices:
                widget.addItem(str(choice), choice)
            widget.setCurrentIndex(max(0, widget.findData(value)))
        elif isinstance(default, bool):
            widget = QCheckBox()
            widget.setChecked(bool(value))
        elif isinstance(default, int):
            widget = QSpinBox()
            widget.setRange(-1_000_000, 1_000_000)
            widget.setValue(int(value) if isinstance(value, (int, float)) else int(default))
        elif is_column:
            # The reference column: the loaded data's columns to pick from, or typed.
            widget = QComboBox()
            widget.setEditable(True)
            widget.setCurrentText(str(value))
        else:
            widget = QLineEdit("" if value is None else str(value))
        if isinstance(widget, (QComboBox, QSpinBox)):
            calm_focus(widget)
        widget.setToolTip(setting.help)
        self.widget = widget
        self.is_column = is_column

    def value(self) -> tuple[Any, str]:
        """(value, problem): a float setting that does not parse is a problem, not a crash."""
        w, default = self.widget, self.setting.default
        if isinstance(w, QComboBox):
            return (w.currentText().strip() if w.isEditable() else w.currentData()), ""
        if isinstance(w, QCheckBox):
            return w.isChecked(), ""
        if isinstance(w, QSpinBox):
            return w.value(), ""
        text = w.text().strip()
        if isinstance(default, float):
            try:
                number = float(text)
            except ValueError:
                return text, f"{_setting_label(self.setting.name)} must be a number; got {text!r}"
            return number, "" if math.isfinite(number) else f"{_setting_label(self.setting.name)} must be finite"
        return w.text(), ""

    def set_columns(self, columns: list[str]) -> None:
        if self.is_column and isinstance(self.widget, QComboBox):
            current = self.widget.currentText()
            self.widget.blockSignals(True)
            self.widget.clear()
            self.widget.addItems(columns)
            self.widget.setCurrentText(current)
            self.widget.blockSignals(False)

    def connect(self, slot) -> None:
        w = self.widget
        if isinstance(w, QComboBox):
            (w.currentTextChanged if w.isEditable() else w.currentIndexChanged).connect(slot)
        elif isinstance(w, QCheckBox):
            w.toggled.connect(slot)
        elif isinstance(w, QSpinBox):
            w.valueChanged.connect(slot)
        else:
            w.textEdited.connect(slot)


class GraderRow(QFrame):
    """A built-in grader: its name, weight, settings and a remove button."""

    sig_changed = Signal()
    sig_remove = Signal(object)

    def __init__(self, spec: GraderSpec | None, entry: dict, reward_model: str = "", parent=None):
        super().__init__(parent)
        self.setObjectName("graderRow")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.spec = spec
        self.key = str(entry.get("grader", ""))
        self.name = str(entry.get("name") or "")
        self._unknown = {k: v for k, v in entry.items() if k not in _ENTRY_KEYS
                         and (spec is None or k not in {s.name for s in spec.settings})}
        title = QLabel(f"<b>{html.escape(spec.label if spec else self.key)}</b>")
        title.setToolTip(spec.summary if spec else "")
        self.weight = _weight_box(entry.get("weight", 1.0) if isinstance(entry.get("weight", 1.0), (int, float))
                                  else 1.0)
        self.weight.valueChanged.connect(self.sig_changed)
        remove = QToolButton()
        remove.setText("✕")
        remove.setToolTip("Remove this grader")
        remove.clicked.connect(lambda: self.sig_remove.emit(self))
        self.remove_button = remove
        head = QHBoxLayout()
        head.addWidget(title)
        summary = QLabel(spec.summary if spec else f"'{self.key}' is not a grader this studio knows.")
        summary.setObjectName("mutedText")
        summary.setWordWrap(True)
        head.addWidget(summary, 1)
        head.addWidget(QLabel("Weight"))
        head.addWidget(self.weight)
        head.addWidget(remove)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 6, 8, 6)
        layout.setSpacing(4)
        layout.addLayout(head)
        self.settings: dict[str, _SettingEditor] = {}
        self.model_picker: QComboBox | None = None
        form = QFormLayout()
        form.setContentsMargins(0, 0, 0, 0)
        for setting in spec.settings if spec else ():
            if self.key == REWARD_MODEL_KEY and setting.name == "source":
                continue  # the picker below writes the config's reward_model instead
            editor = _SettingEditor(setting, entry.get(setting.name, setting.default),
                                    setting.name in spec.column_settings)
            editor.connect(self.sig_changed)
            self.settings[setting.name] = editor
            label = QLabel(_setting_label(setting.name))
            label.setToolTip(setting.help)
            form.addRow(label, editor.widget)
        if self.key == REWARD_MODEL_KEY:
            form.insertRow(0, QLabel("Reward model"), self._make_model_picker(
                str(entry.get("source") or reward_model)))
        if form.rowCount():
            layout.addLayout(form)
        if spec is not None and not spec.available:
            note = QLabel(f"Not available here: {spec.unavailable_reason}")
            note.setObjectName("fieldError")
            note.setWordWrap(True)
            layout.addWidget(note)

    def _make_model_picker(self, current: str) -> QWidget:
        box = QComboBox()
        box.setEditable(True)
        box.setMinimumContentsLength(28)
        box.setToolTip("A reward-model run of this studio, or a model folder with a one-output "
                       "classification head. It scores each prompt with its completion.")
        box.lineEdit().setPlaceholderText("Pick a reward-model run or browse for a folder")
        box.setCurrentText(current)
        box.currentTextChanged.connect(self.sig_changed)
        calm_focus(box)
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse_model)
        self.model_picker = box
        holder = QWidget()
        row = QHBoxLayout(holder)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(box, 1)
        row.addWidget(browse)
        return holder

    def _browse_model(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Reward model folder or run", self.reward_model())
        if folder:
            self.model_picker.setCurrentText(folder)

    def reward_model(self) -> str:
        return self.model_picker.currentText().strip() if self.model_picker is not None else ""

    def set_reward_model_runs(self, runs: list[tuple[str, str]]) -> None:
        """(label, folder) of the reward-model runs found; the typed text stays."""
        if self.model_picker is None:
            return
        current = self.model_picker.currentText()
        self.model_picker.blockSignals(True)
        self.model_picker.clear()
        for label, folder in runs:
            self.model_picker.addItem(label, folder)
            self.model_picker.setItemData(self.model_picker.count() - 1, folder, Qt.ItemDataRole.ToolTipRole)
        self.model_picker.setCurrentText(current)
        self.model_picker.blockSignals(False)

    def set_columns(self, columns: list[str]) -> None:
        for editor in self.settings.values():
            editor.set_columns(columns)

    def entry(self) -> tuple[dict, list[str]]:
        """The config entry and the settings that do not parse."""
        entry: dict[str, Any] = {"grader": self.key, "weight": round(self.weight.value(), 4)}
        if self.name:
            entry["name"] = self.name
        entry.update(self._unknown)  # kept so the check names them instead of dropping them silently
        problems = []
        for name, editor in self.settings.items():
            value, problem = editor.value()
            if problem:
                problems.append(f"{self.spec.label}: {problem}")
            if value != editor.setting.default or editor.is_column:
                entry[name] = value
        return entry, problems


class GraderEditor(QWidget):
    """Edits ``graders``, ``reward_file``, ``reward_model`` and ``allow_reward_code``."""

    sig_values_changed = Signal()
    sig_try_requested = Signal()
    """"Try the graders" was pressed."""

    sig_demo_requested = Signal(str)
    """The method's ready demo was asked for; carries its config file."""

    def __init__(self, ask_permission: Callable[[CodeSubject], bool] | None = None, grants=None, parent=None):
        super().__init__(parent)
        self._ask = ask_permission
        self._grants = grants
        self._rows: list[GraderRow] = []
        self._functions: list[FunctionInfo] = []
        self._function_boxes: dict[str, tuple[QCheckBox, QDoubleSpinBox]] = {}
        self._columns: list[str] = []
        self._model_runs: list[tuple[str, str]] = []
        self._reward_model = ""
        self._loading = False
        self._file_error = ""
        self._outside: list[str] = []

        title = QLabel("Graders")
        title.setObjectName("panelTitle")
        intro = QLabel("Each sampled completion gets the weighted sum of these scores as its reward.")
        intro.setObjectName("mutedText")
        intro.setWordWrap(True)
        self.default_note = QLabel()
        self.default_note.setObjectName("mutedText")
        self.default_note.setWordWrap(True)
        self.rows_box = QVBoxLayout()
        self.rows_box.setSpacing(6)

        self.add_combo = QComboBox()
        calm_focus(self.add_combo)
        for spec in builtin_graders():
            self.add_combo.addItem(spec.label, spec.key)
            index = self.add_combo.count() - 1
            self.add_combo.setItemData(index, spec.summary if spec.available else spec.unavailable_reason,
                                       Qt.ItemDataRole.ToolTipRole)
            if not spec.available:
                self.add_combo.model().item(index).setEnabled(False)
                self.add_combo.setItemText(index, f"{spec.label} (not available)")
        self.add_button = QPushButton("Add grader")
        self.add_button.clicked.connect(lambda: self.add_grader(self.add_combo.currentData()))
        add_bar = QHBoxLayout()
        add_bar.addWidget(self.add_combo, 1)
        add_bar.addWidget(self.add_button)

        # ---- the user's reward file
        file_title = QLabel("Your reward functions")
        file_title.setObjectName("panelTitle")
        self.file_edit = QLineEdit()
        self.file_edit.setPlaceholderText("A Python file of functions with TRL's reward signature")
        self.file_edit.editingFinished.connect(self._on_file_edited)
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse_file)
        file_bar = QHBoxLayout()
        file_bar.addWidget(self.file_edit, 1)
        file_bar.addWidget(browse)
        self.file_status = QLabel()
        self.file_status.setWordWrap(True)
        self.file_status.setObjectName("mutedText")
        self.functions_box = QVBoxLayout()
        self.functions_box.setSpacing(2)
        self.allow_box = QCheckBox("Allow this file to run in the training worker")
        self.allow_box.setToolTip("Its functions run with your permissions. The studio asks you to confirm, and "
                                  "asks again if the file changes.")
        self.allow_box.toggled.connect(self._on_allow_toggled)

        self.problems_label = QLabel()
        self.problems_label.setObjectName("fieldError")
        self.problems_label.setWordWrap(True)
        self.problems_label.setVisible(False)
        self.try_button = QPushButton("Try the graders…")
        self.try_button.setToolTip("Generate a few completions with the base model for a few prompts of the "
                                   "loaded data and show what each grader scores, before a long run.")
        self.try_button.clicked.connect(self.sig_try_requested)
        self.demo_button = QPushButton("Load the demo")
        self.demo_button.setVisible(False)
        self.demo_button.clicked.connect(lambda: self.sig_demo_requested.emit(self._demo_path))
        self._demo_path = ""
        try_bar = QHBoxLayout()
        try_bar.addWidget(self.demo_button)
        try_bar.addStretch(1)
        try_bar.addWidget(self.try_button)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 4, 0, 4)
        layout.setSpacing(6)
        layout.addWidget(title)
        layout.addWidget(intro)
        layout.addLayout(self.rows_box)
        layout.addWidget(self.default_note)
        layout.addLayout(add_bar)
        layout.addSpacing(6)
        layout.addWidget(file_title)
        layout.addLayout(file_bar)
        layout.addWidget(self.file_status)
        layout.addLayout(self.functions_box)
        layout.addWidget(self.allow_box)
        layout.addWidget(self.problems_label)
        layout.addLayout(try_bar)
        self._refresh()

    # ---------------------------------------------------------------- values
    def values(self) -> dict[str, Any]:
        return self._collect()[0]

    def problems(self) -> list[str]:
        """What is wrong with the graders as they stand (nothing runs to find out)."""
        values, parse_problems = self._collect()
        if parse_problems:
            return parse_problems
        problems = [self._file_error] if self._file_error and values["reward_file"] else []
        problems += entry_problems(values["graders"], reward_file=values["reward_file"],
                                   reward_model=values["reward_model"])
        if any(e["grader"].startswith(FILE_PREFIX) for e in values["graders"]) and not values["allow_reward_code"]:
            problems.append("The ticked functions of the reward file run only once you allow the file to run "
                            "(the box under them).")
        return list(dict.fromkeys(problems))

    def set_outside_problems(self, problems: dict[str, str]) -> None:
        """The config check's findings about the grader fields, shown with the editor's own."""
        outside = [message for name, message in problems.items() if name in GRADER_FIELDS and message]
        if outside != self._outside:
            self._outside = outside
            self._refresh()

    def shown_problems(self) -> dict[str, str]:
        text = self.problems_label.text() if not self.problems_label.isHidden() else ""
        return {"graders": text} if text else {}

    def _collect(self) -> tuple[dict[str, Any], list[str]]:
        graders, problems = [], []
        for row in self._rows:
            entry, bad = row.entry()
            graders.append(entry)
            problems += bad
        for info in self._functions:
            box, weight = self._function_boxes[info.name]
            if box.isChecked():
                graders.append({"grader": FILE_PREFIX + info.name, "weight": round(weight.value(), 4)})
        model_rows = [r for r in self._rows if r.key == REWARD_MODEL_KEY]
        reward_model = model_rows[0].reward_model() if model_rows else self._reward_model
        reward_file = self.file_edit.text().strip()
        return ({"graders": graders, "reward_file": reward_file, "reward_model": reward_model,
                 "allow_reward_code": bool(self.allow_box.isChecked() and reward_file)}, problems)

    def set_values(self, values: dict[str, Any]) -> None:
        """Show a config's graders (a reopened run, remembered settings, reset to defaults)."""
        self._loading = True
        try:
            for row in list(self._rows):
                self._drop_row(row)
            self._reward_model = str(values.get("reward_model") or "")
            entries = values.get("graders") or []
            self.file_edit.setText(str(values.get("reward_file") or ""))
            self._load_functions()
            file_weights = {}
            entries = list(entries) if isinstance(entries, (list, tuple)) else []
            if self._reward_model and not any(isinstance(e, dict) and e.get("grader") == REWARD_MODEL_KEY
                                              for e in entries):
                # A named reward model grades even without its own entry: show it as the grader it is.
                entries.append({"grader": REWARD_MODEL_KEY, "weight": 1.0})
            for entry in entries:
                if not isinstance(entry, dict):
                    continue
                key = str(entry.get("grader", ""))
                if key.startswith(FILE_PREFIX):
                    file_weights[key[len(FILE_PREFIX):]] = entry.get("weight", 1.0)
                else:
                    self._add_row(entry)
            for name, (box, weight) in self._function_boxes.items():
                box.setChecked(name in file_weights)
                if name in file_weights and isinstance(file_weights[name], (int, float)):
                    weight.setValue(float(file_weights[name]))
            missing = [n for n in file_weights if n not in self._function_boxes]
            if missing and not self._file_error:
                self._file_error = (f"The settings name {', '.join(missing)} from the reward file, but "
                                    f"{Path(self.file_edit.text()).name or 'no file'} has no such function.")
            self.allow_box.blockSignals(True)
            self.allow_box.setChecked(bool(values.get("allow_reward_code")) and bool(self.file_edit.text().strip()))
            self.allow_box.blockSignals(False)
        finally:
            self._loading = False
        self._refresh()

    def set_demo(self, path: str, title: str = "") -> None:
        """The method's ready demo (a config beside its data), offered in one click; "" hides it."""
        self._demo_path = path
        self.demo_button.setVisible(bool(path))
        if path:
            self.demo_button.setToolTip(f"Load {title or 'the demo'}: its prompts, graders and settings "
                                        "replace the ones in the Train tab. Press Train to run it.")

    def set_permission(self, ask, grants) -> None:
        self._ask, self._grants = ask, grants

    def set_columns(self, columns: list[str]) -> None:
        """The loaded data's columns, offered for the reference-column settings."""
        self._columns = list(columns)
        for row in self._rows:
            row.set_columns(self._columns)

    def set_reward_model_runs(self, runs: list[tuple[str, str]]) -> None:
        self._model_runs = list(runs)
        for row in self._rows:
            row.set_reward_model_runs(self._model_runs)

    # ------------------------------------------------------------------ rows
    def add_grader(self, key: str) -> GraderRow | None:
        if not key:
            return None
        row = self._add_row({"grader": key, "weight": 1.0})
        self._changed()
        return row

    def rows(self) -> list[GraderRow]:
        return list(self._rows)

    def _add_row(self, entry: dict) -> GraderRow:
        spec = next((s for s in builtin_graders() if s.key == entry.get("grader")), None)
        row = GraderRow(spec, entry, reward_model=self._reward_model)
        row.set_columns(self._columns)
        row.set_reward_model_runs(self._model_runs)
        row.sig_changed.connect(self._changed)
        row.sig_remove.connect(self._remove_row)
        self._rows.append(row)
        self.rows_box.addWidget(row)
        return row

    def _remove_row(self, row: GraderRow) -> None:
        if row.key == REWARD_MODEL_KEY:
            self._reward_model = ""
        self._drop_row(row)
        self._changed()

    def _drop_row(self, row: GraderRow) -> None:
        self._rows.remove(row)
        self.rows_box.removeWidget(row)
        row.setParent(None)
        row.deleteLater()

    # ------------------------------------------------------------ reward file
    def _browse_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Reward functions file", self.file_edit.text(),
                                              "Python files (*.py);;All files (*)")
        if path:
            self.set_reward_file(path)

    def set_reward_file(self, path: str) -> None:
        self.file_edit.setText(path)
        self._on_file_edited()

    def _on_file_edited(self) -> None:
        previous = {n for n, (box, _w) in self._function_boxes.items() if box.isChecked()}
        self._load_functions()
        for name, (box, _weight) in self._function_boxes.items():
            # A new file: its functions start ticked, except the ones a previous choice left out.
            box.setChecked(name in previous or not previous)
        # A different file needs its own permission: a grant is for exact files.
        if self.allow_box.isChecked() and not self._granted():
            self.allow_box.blockSignals(True)
            self.allow_box.setChecked(False)
            self.allow_box.blockSignals(False)
        self._changed()

    def _load_functions(self) -> None:
        while self.functions_box.count():
            item = self.functions_box.takeAt(0)
            if item.widget() is not None:
                item.widget().setParent(None)
                item.widget().deleteLater()
        self._functions, self._function_boxes, self._file_error = [], {}, ""
        path = self.file_edit.text().strip()
        if not path:
            self.file_status.setText("Optional: point at a .py file; its functions are listed without running it.")
            return
        try:
            self._functions = list_reward_functions(path)
        except RewardFileError as exc:
            self._file_error = str(exc)
            self.file_status.setText(self._file_error)
            return
        if not self._functions:
            self._file_error = (f"{Path(path).name} has no reward function: a top-level function taking "
                                "completions (and **kwargs) is what TRL calls.")
            self.file_status.setText(self._file_error)
            return
        self.file_status.setText(f"{len(self._functions)} function{'s' * (len(self._functions) != 1)} found in "
                                 f"{Path(path).name} (read, not run). Tick the ones that grade:")
        for info in self._functions:
            box = QCheckBox(f"{info.name}  (line {info.line})")
            tip = info.doc or "No docstring."
            if info.columns:
                tip += f"\nReads the dataset columns: {', '.join(info.columns)}."
            box.setToolTip(tip)
            weight = _weight_box(1.0)
            box.toggled.connect(self._changed)
            weight.valueChanged.connect(self._changed)
            line = QWidget()
            row = QHBoxLayout(line)
            row.setContentsMargins(12, 0, 0, 0)
            row.addWidget(box, 1)
            if info.columns:
                cols = QLabel("reads " + ", ".join(info.columns))
                cols.setObjectName("mutedText")
                row.addWidget(cols)
            row.addWidget(QLabel("Weight"))
            row.addWidget(weight)
            self.functions_box.addWidget(line)
            self._function_boxes[info.name] = (box, weight)

    def _subject(self) -> CodeSubject | None:
        path = self.file_edit.text().strip()
        if not path:
            return None
        try:
            return file_subject(path, REWARD_CODE)
        except (FileNotFoundError, OSError):
            return None

    def _granted(self) -> bool:
        subject = self._subject()
        return subject is not None and self._grants is not None and self._grants.is_granted(subject)

    def _on_allow_toggled(self, checked: bool) -> None:
        if checked and not self._loading:
            subject = self._subject()
            if subject is None:
                self._file_error = self._file_error or "Choose an existing reward file before allowing it to run."
                allowed = False
            elif self._granted():
                allowed = True
            elif self._ask is None:
                from app.permission_dialog import ask_permission

                allowed = ask_permission(subject, self)
                if allowed and self._grants is not None:
                    self._grants.grant(subject)
            else:
                allowed = self._ask(subject)
            if not allowed:
                self.allow_box.blockSignals(True)
                self.allow_box.setChecked(False)
                self.allow_box.blockSignals(False)
        self._changed()

    # ------------------------------------------------------------ feedback
    def _changed(self, *_args) -> None:
        if self._loading:
            return
        self._refresh()
        self.sig_values_changed.emit()

    def _refresh(self) -> None:
        values = self.values()
        if not values["graders"]:
            labels = {s.key: s.label for s in builtin_graders()}
            self.default_note.setText("No grader chosen: " + ", ".join(
                labels.get(e["grader"], e["grader"]) for e in DEFAULT_GRADERS) + " (the default) grades.")
        self.default_note.setVisible(not values["graders"])
        uses_file = any(e["grader"].startswith(FILE_PREFIX) for e in values["graders"])
        self.allow_box.setVisible(bool(self._functions))
        self.allow_box.setEnabled(uses_file or self.allow_box.isChecked())
        own = self.problems()
        # The config check often words the same finding; a message already shown is not repeated.
        problems = own + [p for p in self._outside if not any(p in o or o in p for o in own)]
        self.problems_label.setText("\n".join(problems))
        self.problems_label.setVisible(bool(problems))
