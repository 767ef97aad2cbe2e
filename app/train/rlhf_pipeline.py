"""The classic RLHF pipeline, guided: supervised fine-tuning, a reward model, then RL on prompts.

Each stage either picks a finished run or trains one with one click, and each starts
from the previous stage's output: the reward model and the RL policy start from the
supervised run's merged model (its Export → Merged model, in the run's ``exports/``
folder; a stage's Train makes that merge first when it is missing, then starts), and the RL stage scores its answers with the chosen reward model run. A
stage with nothing picked falls back to the model in the Train tab. Which methods
belong to which stage comes from their specs (group, model head, required inputs),
never from their names.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QComboBox, QDialog, QGridLayout, QGroupBox, QHBoxLayout, QLabel, QPushButton,
                               QVBoxLayout, QWidget)

FINISHED = ("completed", "stopped")


def _escape(text: str) -> str:
    return html.escape(text, quote=False)


@dataclass(frozen=True)
class Stage:
    title: str
    explains: str
    accepts: Callable  # MethodSpec -> bool


def _supervised(spec) -> bool:
    return spec.group == "Supervised"


def _scores(spec) -> bool:
    return spec.model_head == "score"


def _rl_with_reward_model(spec) -> bool:
    return spec.group == "RL" and hasattr(spec.config(), "reward_model")


STAGES = (
    Stage("1 · Supervised fine-tuning", "Teaches the base model the answer style from prompt/answer examples.",
          _supervised),
    Stage("2 · Reward model", "Learns to score answers from chosen/rejected pairs, starting from stage 1's model.",
          _scores),
    Stage("3 · RL on prompts", "Samples answers from stage 1's model and trains it on stage 2's scores, "
          "kept close to where it started.", _rl_with_reward_model),
)


def stage_methods(stage: Stage) -> list:
    from backend.methods import all_methods

    specs = [spec for spec in all_methods() if stage.accepts(spec)]
    # A method that cannot run without a reward model is the one this pipeline is for: first.
    return sorted(specs, key=lambda spec: "reward_model" not in spec.requires)


def finished_runs(stage: Stage, runs: list) -> list:
    """Runs of the stage's methods that ended with an adapter (newest first, as listed)."""
    keys = {spec.key for spec in stage_methods(stage)}
    return [r for r in runs if r.method in keys and r.status in FINISHED
            and (Path(r.run_dir) / "adapter" / "adapter_config.json").exists()]


def merged_model_of(run_dir: str | Path) -> str:
    """The run's merged export (a full model folder), or "" when it has none yet."""
    exports = Path(run_dir) / "exports"
    found = sorted((p for p in exports.glob("*-merged*") if (p / "config.json").exists()),
                   key=lambda p: p.stat().st_mtime, reverse=True) if exports.is_dir() else []
    return str(found[0]) if found else ""


def stage_config(method: str, model: str, data_path: str, reward_model: str = ""):
    """The settings a stage trains with: the method's defaults, the stage's model and data."""
    from backend.runs.config import default_config

    cfg = default_config(method, model=model, data_path=data_path)
    if reward_model and hasattr(cfg, "reward_model"):
        cfg.reward_model = reward_model
    return cfg


class RLHFPipelineDialog(QDialog):
    """Three stage boxes; Train fills the Train tab with the stage's settings and starts it."""

    sig_train = Signal(object)  # a run config to put in the Train tab and start
    # A run folder whose adapter should be merged (the Export dialog), and whether to start the merge
    # at once: a stage's Train does, then trains once merge_finished reports the merged model.
    sig_export = Signal(str, bool)

    def __init__(self, list_runs: Callable[[], list], current: Callable[[], tuple[str, str]],
                 parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("RLHF pipeline")
        self.setMinimumWidth(720)
        self._list_runs = list_runs
        self._current = current  # () -> (model, data path) of the Train tab
        self.pending_stage: int | None = None  # a stage waiting for the supervised run's merge
        intro = QLabel("The classic RLHF pipeline in three stages. Pick a finished run for a stage or train one; "
                       "each stage starts from the one before it.")
        intro.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        self.run_boxes: list[QComboBox] = []
        self.method_boxes: list[QComboBox] = []
        self.notes: list[QLabel] = []
        self.train_buttons: list[QPushButton] = []
        for index, stage in enumerate(STAGES):
            layout.addWidget(self._stage_box(index, stage))
        self.export_button = QPushButton("Merge the supervised run…")
        self.export_button.setToolTip("Opens Export with the supervised run: a merged model is what stages 2 "
                                      "and 3 start from.")
        self.export_button.clicked.connect(lambda: self.sig_export.emit(self.picked_run(0), False))
        refresh = QPushButton("Refresh runs")
        refresh.clicked.connect(self.refresh)
        row = QHBoxLayout()
        row.addWidget(self.export_button)
        row.addStretch(1)
        row.addWidget(refresh)
        layout.addLayout(row)
        self.refresh()

    def _stage_box(self, index: int, stage: Stage) -> QGroupBox:
        box = QGroupBox(stage.title)
        grid = QGridLayout(box)
        explains = QLabel(stage.explains)
        explains.setObjectName("hint")
        explains.setWordWrap(True)
        runs = QComboBox()
        runs.currentIndexChanged.connect(self._update_notes)
        # A run's name is long (date, method, data): the whole of it in the tooltip when the box cuts it.
        runs.currentTextChanged.connect(runs.setToolTip)
        methods = QComboBox()
        methods.setMinimumWidth(160)  # one width in every stage, so the three rows line up
        for spec in stage_methods(stage):
            methods.addItem(spec.label, spec.key)
        train = QPushButton("Train this stage")
        train.clicked.connect(lambda _checked=False, i=index: self.train_stage(i))
        note = QLabel()
        note.setTextFormat(Qt.TextFormat.RichText)
        note.setWordWrap(True)
        grid.addWidget(explains, 0, 0, 1, 4)
        grid.addWidget(QLabel("Use run"), 1, 0)
        grid.addWidget(runs, 1, 1)
        grid.addWidget(QLabel("or train with"), 1, 2)
        row = QHBoxLayout()
        row.addWidget(methods, 1)
        row.addWidget(train)
        grid.addLayout(row, 1, 3)
        grid.addWidget(note, 2, 0, 1, 4)
        grid.setColumnStretch(1, 3)  # run names are longer than method names
        grid.setColumnStretch(3, 1)
        self.run_boxes.append(runs)
        self.method_boxes.append(methods)
        self.notes.append(note)
        self.train_buttons.append(train)
        return box

    # ------------------------------------------------------------ state
    def refresh(self) -> None:
        from backend.methods import method_label

        runs = self._list_runs()
        for stage, box in zip(STAGES, self.run_boxes):
            keep = box.currentData()
            box.blockSignals(True)
            box.clear()
            found = finished_runs(stage, runs)
            box.addItem("— none: train one —" if found else "— no finished run yet —", "")
            for run in found:
                box.addItem(f"{run.name} ({method_label(run.method)}, step {run.step})", str(run.run_dir))
            if keep:
                box.setCurrentIndex(max(0, box.findData(keep)))
            elif found:
                box.setCurrentIndex(1)
            box.blockSignals(False)
        self._update_notes()

    def picked_run(self, index: int) -> str:
        return self.run_boxes[index].currentData() or ""

    def start_model(self) -> tuple[str, str]:
        """(model the later stages start from, why) per the supervised stage."""
        model, _data = self._current()
        supervised = self.picked_run(0)
        if not supervised:
            return model, "the model in the Train tab (no supervised run picked)"
        merged = merged_model_of(supervised)
        if merged:
            return merged, f"the supervised run's merged model ({Path(merged).name})"
        return "", ""

    def _update_notes(self, *_args) -> None:
        model, why = self.start_model()
        supervised, reward = self.picked_run(0), self.picked_run(1)
        base, data = self._current()
        self.notes[0].setText(f"Starts from {_escape(base or 'the embedded model')}, on "
                              f"{_escape(Path(data).name) if data else 'the dataset in the Train tab'}.")
        needs_merge = bool(supervised) and not model
        waiting = self.pending_stage is not None
        self.export_button.setEnabled(bool(supervised) and not waiting)  # one merge at a time
        if needs_merge:
            text = ("Starts from the supervised run's merged model, which it has not got yet: <b>Train this "
                    "stage merges it first</b> (Export → Merged model, in the run's folder), then starts.")
            self.notes[1].setText(text)
            self.notes[2].setText(text + ("" if reward else
                                          " <b>Pick or train a reward model in stage 2 first.</b>"))
        else:
            self.notes[1].setText(f"Starts from {_escape(why)}.")
            scorer = (f"scored by {_escape(Path(reward).name)}" if reward
                      else "<b>pick or train a reward model in stage 2 first</b>")
            self.notes[2].setText(f"Starts from {_escape(why)}, {scorer}.")
        self.train_buttons[0].setEnabled(not waiting)
        self.train_buttons[1].setEnabled(not waiting)
        self.train_buttons[2].setEnabled(not waiting and bool(reward))

    # ------------------------------------------------------------ actions
    def stage_config(self, index: int):
        method = self.method_boxes[index].currentData()
        base, data = self._current()
        if index == 0:
            return stage_config(method, base, data)
        model, _why = self.start_model()
        return stage_config(method, model, data, reward_model=self.picked_run(1) if index == 2 else "")

    def train_stage(self, index: int) -> None:
        supervised = self.picked_run(0)
        if index > 0 and supervised and not merged_model_of(supervised):
            self.pending_stage = index
            self._update_notes()
            self.notes[index].setText("<b>Merging the supervised run…</b> this stage starts when the merge ends.")
            self.sig_export.emit(supervised, True)
            return
        self.sig_train.emit(self.stage_config(index))

    def merge_finished(self, succeeded: bool) -> None:
        """The supervised run's merge ended: the stage that waited for it starts now, or,
        when the merge failed or was stopped, waits for another press (the Export window
        says why)."""
        index, self.pending_stage = self.pending_stage, None
        self.refresh()
        if index is not None and succeeded and merged_model_of(self.picked_run(0)):
            self.train_stage(index)


def open_pipeline(window) -> RLHFPipelineDialog:
    """Show the pipeline beside the studio window: a stage's Train puts its settings in the
    Train tab and starts it there (the same checks and permissions as the Train button)."""
    from backend.runs.config import to_dict
    from backend.runs.folder import list_runs

    def current() -> tuple[str, str]:
        cfg, _problems = window.build_config()
        return cfg.model, cfg.data_path

    def train(cfg) -> None:
        same_data = current()[1] == cfg.data_path
        window.method_panel.set_method(cfg.method, values=to_dict(cfg))
        window.model_panel.set_model(cfg.model)
        window.tabs.setCurrentWidget(window.train_page)
        if same_data:
            window.start_training()
        else:  # the data loads in the background; Train is one press once it is in
            window.apply_config(cfg)

    def export(run_dir: str, start: bool) -> None:
        from app.runs.export_dialog import ExportDialog
        from backend.export.events import ExportFinished

        dialog.export_dialog = ExportDialog(run_dir, parent=dialog)
        dialog.export_dialog.set_format("merged")
        dialog.export_dialog.sig_finished.connect(
            lambda event: dialog.merge_finished(isinstance(event, ExportFinished)))
        dialog.export_dialog.show()
        if start:
            dialog.export_dialog.start_export()
            if not dialog.export_dialog.is_running():  # refused before it began; its banner says why
                dialog.merge_finished(False)

    dialog = RLHFPipelineDialog(list_runs, current, parent=window)
    dialog.sig_train.connect(train)
    dialog.sig_export.connect(export)
    # A stage trained from here shows up in its list once it ends.
    window.controller.supervisor.sig_finished.connect(lambda *_args: dialog.isVisible() and dialog.refresh())
    dialog.show()
    return dialog
