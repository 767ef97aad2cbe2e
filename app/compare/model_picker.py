"""What the Compare tab compares: a finished run, or any LoRA adapter folder on its base model.

The picker lists the runs that saved an adapter and the adapter folders the
user opened, shows the base model each one sits on, and reports the worker's
state (loading, ready, released, failed). It never talks to the worker: it
asks for a load or a release through signals.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

READY_STATUSES = ("completed", "stopped")


@dataclass
class ModelChoice:
    kind: str  # run | adapter
    path: str  # the run folder, or the adapter folder
    label: str
    model: str = ""  # the base model as the run or adapter_config.json names it
    method: str = ""

    def key(self) -> str:
        return f"{self.kind}:{Path(self.path).resolve()}"


def run_choices(runs: list) -> list[ModelChoice]:
    """Runs whose adapter can be compared: finished or stopped, with an adapter saved."""
    out = []
    for run in runs:
        if run.status not in READY_STATUSES or not run.adapter_path:
            continue
        # The base model has its own field below the list; the label says which run and on what data.
        data = Path(run.data_path).name if run.data_path else ""
        parts = [run.name, (run.method or "").upper(), data]
        out.append(ModelChoice("run", str(run.run_dir), "  ·  ".join(p for p in parts if p), run.model,
                               run.method))
    return out


def adapter_base_model(adapter_dir: str | Path) -> str:
    try:
        config = json.loads((Path(adapter_dir) / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    return str(config.get("base_model_name_or_path") or "")


def adapter_choice(adapter_dir: str | Path) -> ModelChoice:
    path = Path(adapter_dir)
    return ModelChoice("adapter", str(path), f"Adapter: {path.name}  ·  {path.parent}", adapter_base_model(path))


class CompareModelPicker(QWidget):
    sig_load_requested = Signal(dict)
    """The user asked for this load spec (run_dir, or adapter_dir with an optional model)."""

    sig_release_requested = Signal()
    """The user asked to free the worker's memory."""

    sig_choice_changed = Signal(object)
    """The picked run or adapter changed (a ModelChoice, or None when there is none)."""

    sig_picked = Signal(object)
    """The user picked a run or adapter in the list (a ModelChoice); sent before sig_choice_changed.
    Scrolling through the list with the keyboard sends one per row passed."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self._runs: list[ModelChoice] = []
        self._adapters: list[ModelChoice] = []
        self._updating = False

        self.combo = QComboBox()
        self.combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.combo.setMinimumContentsLength(18)
        self.combo.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.combo.setToolTip("A finished or stopped run with a saved adapter, or an adapter folder you opened.")
        self.combo.currentIndexChanged.connect(self._on_pick)
        self.open_button = QPushButton("Open adapter folder…")
        self.open_button.setToolTip("Any PEFT LoRA adapter folder (it holds adapter_config.json); its base "
                                    "model is read from the folder and can be changed below.")
        self.open_button.clicked.connect(self._choose_adapter_folder)
        self.base_model = QLineEdit()
        self.base_model.setPlaceholderText("base model id or folder")
        self.base_model.setToolTip("The model the adapter was trained on. For a run this is the run's model; for "
                                   "an adapter folder, what its adapter_config.json names, unless you change it.")
        self.base_model.editingFinished.connect(self._on_base_model_edited)

        self.busy_bar = QProgressBar()
        self.busy_bar.setRange(0, 0)
        self.busy_bar.setTextVisible(False)
        self.busy_bar.setFixedHeight(6)
        self.busy_bar.setStyleSheet("QProgressBar { min-height: 6px; max-height: 6px; border: none; "
                                    "border-radius: 3px; background: #e0e7ff; }"
                                    "QProgressBar::chunk { background: #6366f1; border-radius: 3px; }")
        self.busy_bar.setVisible(False)
        self.status = QLabel()
        self.status.setObjectName("statLine")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.load_button = QPushButton("Load")
        self.load_button.setToolTip("Load the base model and the adapter into the generation worker.")
        self.load_button.clicked.connect(self.request_load)
        self.release_button = QPushButton("Release")
        self.release_button.setToolTip("End the generation worker and free its memory (GPU memory included). "
                                       "It is released by itself when you leave this tab or start training.")
        self.release_button.clicked.connect(self.sig_release_requested)

        form = QFormLayout()
        form.setContentsMargins(0, 0, 0, 0)
        form.setHorizontalSpacing(10)
        form.setVerticalSpacing(6)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        form.addRow("Run", self.combo)
        form.addRow("Base model", self.base_model)
        buttons = QHBoxLayout()
        buttons.setSpacing(6)
        buttons.addWidget(self.open_button)
        buttons.addStretch(1)
        buttons.addWidget(self.load_button)
        buttons.addWidget(self.release_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(8)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.busy_bar)
        layout.addWidget(self.status)
        self._elapsed_timer = QTimer(self)
        self._elapsed_timer.setInterval(500)
        self._loading_text = ""
        self._loading_clock = None
        self._elapsed_timer.timeout.connect(self._tick_loading)
        self._rebuild(None)

    # ---------------------------------------------------------------- choices
    def set_runs(self, runs: list) -> None:
        keep = self.current_choice()
        self._runs = run_choices(runs)
        self._rebuild(keep.key() if keep else None)

    def add_adapter_folder(self, adapter_dir: str | Path) -> ModelChoice:
        """Add an adapter folder to the list and pick it."""
        choice = adapter_choice(adapter_dir)
        self._adapters = [c for c in self._adapters if c.key() != choice.key()] + [choice]
        self._rebuild(choice.key())
        return choice

    def _choose_adapter_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a LoRA adapter folder")
        if folder:
            self.add_adapter_folder(folder)

    def _rebuild(self, keep_key: str | None) -> None:
        before = self.current_choice()
        self._updating = True
        try:
            self.combo.clear()
            for choice in self._runs + self._adapters:
                self.combo.addItem(choice.label, choice)
                self.combo.setItemData(self.combo.count() - 1, choice.path, Qt.ItemDataRole.ToolTipRole)
            if self.combo.count() == 0:
                self.combo.addItem("No finished run yet: train one in the Train tab", None)
            index = 0
            if keep_key is not None:
                for i in range(self.combo.count()):
                    data = self.combo.itemData(i)
                    if data is not None and data.key() == keep_key:
                        index = i
                        break
            self.combo.setCurrentIndex(index)
        finally:
            self._updating = False
        self.combo.setEnabled(bool(self._runs or self._adapters))
        after = self.current_choice()
        self._show_base_model(after)
        if (before.key() if before else None) != (after.key() if after else None):
            self.sig_choice_changed.emit(after)

    def current_choice(self) -> ModelChoice | None:
        return self.combo.currentData() if self.combo.count() else None

    def select(self, path: str | Path) -> bool:
        """Pick the run or adapter at ``path``; False if it is not listed."""
        target = str(Path(path).resolve())
        for i in range(self.combo.count()):
            data = self.combo.itemData(i)
            if data is not None and str(Path(data.path).resolve()) == target:
                self.combo.setCurrentIndex(i)
                return True
        return False

    def choices(self) -> list[ModelChoice]:
        return self._runs + self._adapters

    def _on_pick(self, _index: int) -> None:
        if self._updating:
            return
        choice = self.current_choice()
        self._show_base_model(choice)
        if choice is not None:
            self.sig_picked.emit(choice)
        self.sig_choice_changed.emit(choice)

    def _show_base_model(self, choice: ModelChoice | None) -> None:
        editable = choice is not None and choice.kind == "adapter"
        self.base_model.setReadOnly(not editable)
        self.base_model.setEnabled(choice is not None)
        text = (choice.model or "") if choice is not None else ""
        if choice is not None and choice.kind == "run" and not text:
            text = "embedded Gemma 3 270M"
        self.base_model.setText(text)

    def _on_base_model_edited(self) -> None:
        choice = self.current_choice()
        if choice is not None and choice.kind == "adapter" and self.base_model.text().strip() != choice.model:
            self.status.setText("Press Load to load the adapter on this base model.")

    def load_spec(self) -> dict | None:
        choice = self.current_choice()
        if choice is None:
            return None
        if choice.kind == "run":
            return {"run_dir": choice.path}
        model = self.base_model.text().strip()
        return {"adapter_dir": choice.path, "model": model or None}

    def request_load(self) -> None:
        spec = self.load_spec()
        if spec is not None:
            self.sig_load_requested.emit(spec)

    # ------------------------------------------------------------------ state
    def show_loading(self, text: str) -> None:
        if self._loading_clock is None:
            self._loading_clock = time.monotonic()
        self._loading_text = text
        self.busy_bar.setVisible(True)
        self._elapsed_timer.start()
        self._tick_loading()

    def _tick_loading(self) -> None:
        seconds = time.monotonic() - self._loading_clock if self._loading_clock is not None else 0.0
        self.status.setText(f"{self._loading_text} · {seconds:.0f} s")

    def show_status(self, text: str) -> None:
        self._loading_clock = None
        self._elapsed_timer.stop()
        self.busy_bar.setVisible(False)
        self.status.setText(text)

    def set_buttons(self, can_load: bool, can_release: bool) -> None:
        self.load_button.setEnabled(can_load)
        self.release_button.setEnabled(can_release)
