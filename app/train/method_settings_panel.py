"""Step 3 of the setup: the training method and its settings.

The form is generated from the method's config dataclass (labels, help texts as
tooltips, ranges, choices, basic/advanced); nothing about a setting is retyped
here. The methods come from the registry (backend.methods), listed under their
groups. Each method remembers the values the user changed from its defaults, so
switching methods back and forth does not lose a tuned beta, and one method's
learning rate never leaks into another.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtGui import QStandardItemModel
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from app.studio_settings import StudioSettings
from backend.methods import DEFAULT_METHOD, find_method, grouped_methods, method_keys
from backend.runs.config import default_config, to_dict, user_fields
from widgets.config_form import ConfigForm
from widgets.grouped_combo import GroupedComboBox

# Set by the data and model panels, not by the form.
PANEL_FIELDS = frozenset({"model", "data_path", "data_format", "column_map"})
MODEL_GROUP = "Model"


def _demo_of(method: str) -> tuple[str, str]:
    """(config file, title) of the method's ready demo (its spec names it), or ("", "")."""
    from app.train.demo_menu import list_demos

    spec = find_method(method)
    name = getattr(spec, "demo", "") if spec is not None else ""
    for demo in list_demos() if name else ():
        if demo.path.stem == f"demo_{name}":
            return str(demo.path), demo.title
    return "", ""


class MethodSettingsPanel(QWidget):
    sig_method_changed = Signal(str)
    """The user (or a reopened run) switched the method; carries its registry key."""

    sig_values_changed = Signal()
    """A setting changed in either form."""

    sig_try_graders = Signal()
    """"Try the graders" was pressed in the grader editor (a method whose config has graders)."""

    sig_demo_requested = Signal(str)
    """The method's ready demo was asked for; carries its config file."""

    def __init__(self, settings: StudioSettings, parent=None):
        super().__init__(parent)
        self._settings = settings
        self._method = ""
        self._supported: list[str] | None = None
        self.grader_editor = None  # app.train.grader_editor.GraderEditor, made for a method with graders
        self._grader_permission = (None, None)  # (ask, grant store) the window lends the editor
        self._dataset_columns: list[str] = []
        self._reward_model_runs: list[tuple[str, str]] = []

        self.method_combo = GroupedComboBox()
        for group, specs in grouped_methods():
            self.method_combo.add_group(group)
            for spec in specs:
                self.method_combo.add_choice(spec.title, spec.key, spec.summary)
        self.method_combo.currentIndexChanged.connect(self._on_method_picked)
        self.reason_label = QLabel()
        self.reason_label.setObjectName("mutedText")
        self.reason_label.setWordWrap(True)
        self.reason_label.setVisible(False)
        self.description = QLabel()
        self.description.setObjectName("mutedText")
        self.description.setWordWrap(True)

        # Quantization and friends sit in the model card; the window places this form there.
        self.model_form = ConfigForm(advanced_title="More model options", group_titles=False)
        self.model_form.sig_values_changed.connect(self._on_values)
        self.form = ConfigForm()
        self.form.sig_values_changed.connect(self._on_values)
        self.reset_button = QPushButton("Reset to defaults")
        self.reset_button.setToolTip("Put every setting of this method back to its default.")
        self.reset_button.clicked.connect(self.reset_to_defaults)

        top = QHBoxLayout()
        top.addWidget(self.method_combo, 1)
        top.addWidget(self.reset_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(8)
        layout.addLayout(top)
        layout.addWidget(self.reason_label)
        layout.addWidget(self.description)
        layout.addWidget(self.form)
        self._layout = layout

        method = settings.last_method(DEFAULT_METHOD)
        self.set_method(method if method in method_keys() else DEFAULT_METHOD)

    # ---------------------------------------------------------------- method
    def method(self) -> str:
        return self._method

    def set_method(self, method: str, values: dict[str, Any] | None = None) -> None:
        """Switch to ``method``; ``values`` (from a reopened run) replace the remembered ones."""
        if self._method:
            self.remember()
        self._method = method
        self.method_combo.blockSignals(True)
        self.method_combo.setCurrentIndex(max(self.method_combo.findData(method), 0))
        self.method_combo.blockSignals(False)
        cfg = default_config(method)
        self.description.setText(find_method(method).summary)
        current = to_dict(cfg)
        remembered = values if values is not None else self._settings.method_values(method)
        current.update({k: v for k, v in remembered.items() if k in current and k not in PANEL_FIELDS})
        graders = "graders" in current
        # The grader editor edits these together; the generic form leaves them out.
        together = {"graders", "reward_file", "reward_model", "allow_reward_code"} if graders else set()
        fields = [f for f in user_fields(cfg) if f.name not in PANEL_FIELDS and f.name not in together]
        self.model_form.build([f for f in fields if f.metadata.get("group") == MODEL_GROUP], current)
        self.form.build([f for f in fields if f.metadata.get("group") != MODEL_GROUP], current)
        self._show_grader_editor(graders, current)
        self._settings.set_last_method(method)
        self.sig_method_changed.emit(method)
        self.sig_values_changed.emit()

    def _on_method_picked(self, _index: int) -> None:
        method = self.method_combo.currentData()
        if method and method != self._method:
            self.set_method(method)

    def set_supported(self, supported: list[str] | None, reasons: dict[str, str] | None = None) -> None:
        """Disable the methods the loaded data cannot feed, saying why; None enables all."""
        self._supported = supported
        model: QStandardItemModel = self.method_combo.model()
        refused = []
        for i in range(self.method_combo.count()):
            if self.method_combo.is_header(i):
                continue
            spec = find_method(self.method_combo.itemData(i))
            item = model.item(i)
            ok = supported is None or spec.key in supported
            item.setEnabled(ok)
            reason = (reasons or {}).get(spec.key, "") if not ok else ""
            # The open list says why in the entry's own detail line, where its summary was.
            self.method_combo.set_detail(i, reason or spec.summary)
            item.setText(spec.title + ("" if ok else "  — not for this data"))
            if not ok:
                refused.append(spec)
        self.reason_label.setText(self._refusal_text(refused, reasons or {}))
        self.reason_label.setVisible(bool(refused))
        if supported is not None and self._method not in supported:
            usable = [key for key in supported if find_method(key)]  # as the data report orders them
            if usable:
                self.set_method(usable[0])

    def _refusal_text(self, refused: list, reasons: dict[str, str]) -> str:
        """One reason in full (the method that was picked, when the data rules it out) and the
        others by name: with a dozen methods, every reason at once would bury the settings."""
        if not refused:
            return ""
        picked = next((spec for spec in refused if spec.key == self._method), None)
        lines = [reasons[picked.key]] if picked is not None and reasons.get(picked.key) else []
        others = [spec.label for spec in refused if spec is not picked]
        if others:
            lines.append(f"Not for this data: {', '.join(others)}. Hover one in the list to see why.")
        return "\n".join(lines)

    def method_supported(self) -> bool:
        return self._supported is None or self._method in self._supported

    # --------------------------------------------------------------- graders
    def set_grader_permission(self, ask, grants) -> None:
        """How the grader editor asks to let a reward file run, and where grants are kept."""
        self._grader_permission = (ask, grants)
        if self.grader_editor is not None:
            self.grader_editor.set_permission(ask, grants)

    def set_dataset_columns(self, result) -> None:
        """The loaded dataset (a DatasetLoadResult or None): its columns for the graders' reference columns."""
        self._dataset_columns = list(getattr(result, "source_columns", None) or [])
        if self.grader_editor is not None:
            self.grader_editor.set_columns(self._dataset_columns)

    def set_reward_model_runs(self, runs) -> None:
        """The runs listed in the Runs tab: the finished reward-model runs are offered as graders."""
        found = []
        for run in runs:
            spec = find_method(getattr(run, "method", ""))
            if spec is not None and spec.model_head == "score" and getattr(run, "adapter_path", ""):
                found.append((f"{run.name} ({spec.label})", str(run.run_dir)))
        self._reward_model_runs = found
        if self.grader_editor is not None:
            self.grader_editor.set_reward_model_runs(found)

    def _graders_shown(self) -> bool:
        return self.grader_editor is not None and not self.grader_editor.isHidden()

    def _show_grader_editor(self, wanted: bool, values: dict[str, Any]) -> None:
        if wanted and self.grader_editor is None:
            from app.train.grader_editor import GraderEditor  # the graders package loads only for such methods

            ask, grants = self._grader_permission
            self.grader_editor = GraderEditor(ask_permission=ask, grants=grants)
            self.grader_editor.set_columns(self._dataset_columns)
            self.grader_editor.set_reward_model_runs(self._reward_model_runs)
            self.grader_editor.sig_values_changed.connect(self._on_values)
            self.grader_editor.sig_try_requested.connect(self.sig_try_graders)
            self.grader_editor.sig_demo_requested.connect(self.sig_demo_requested)
            self._layout.addWidget(self.grader_editor)
        if self.grader_editor is not None:
            if wanted:
                self.grader_editor.set_values(values)
                self.grader_editor.set_demo(*_demo_of(self._method))
            self.grader_editor.setHidden(not wanted)

    # ---------------------------------------------------------------- values
    def values(self) -> dict[str, Any]:
        merged = self.model_form.values()
        merged.update(self.form.values())
        if self._graders_shown():
            merged.update(self.grader_editor.values())
        return merged

    def parse_problems(self) -> dict[str, str]:
        problems = self.model_form.parse_problems()
        problems.update(self.form.parse_problems())
        if self._graders_shown() and self.grader_editor.problems():
            problems["graders"] = "; ".join(self.grader_editor.problems())
        return problems

    def set_problems(self, problems: dict[str, str]) -> None:
        self.model_form.set_problems(problems)
        self.form.set_problems(problems)
        if self._graders_shown():
            self.grader_editor.set_outside_problems(problems)

    def shown_problems(self) -> dict[str, str]:
        shown = self.model_form.shown_problems()
        shown.update(self.form.shown_problems())
        if self._graders_shown():
            shown.update(self.grader_editor.shown_problems())
        return shown

    def set_values(self, values: dict[str, Any]) -> None:
        self.model_form.set_values(values)
        self.form.set_values(values)
        if self._graders_shown() and "graders" in values:
            self.grader_editor.set_values({**self.grader_editor.values(), **values})
        self.sig_values_changed.emit()

    def editor(self, name: str):
        for form in (self.form, self.model_form):
            if name in form.field_names():
                return form.editor(name)
        raise KeyError(name)

    def changed_from_defaults(self) -> dict[str, Any]:
        defaults = to_dict(default_config(self._method))
        return {k: v for k, v in self.values().items() if k in defaults and defaults[k] != v}

    def remember(self) -> None:
        if self._method:
            self._settings.set_method_values(self._method, self.changed_from_defaults())

    def reset_to_defaults(self) -> None:
        self.set_values(to_dict(default_config(self._method)))
        self.remember()

    def _on_values(self) -> None:
        self.sig_values_changed.emit()
