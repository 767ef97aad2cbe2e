"""The Compare tab: base and aligned answers side by side, a batch verdict, a playground.

Left, as numbered steps like the Train tab: what to compare (a run or an
adapter folder) and how to sample. Right: three views sharing one generation
worker, which keeps the base weights loaded and switches the adapter off (base)
and on (aligned).

The worker holds memory that training needs, so it lives only while the tab
is in use: it is released when the tab is hidden (another tab, the window
closing) and when training starts (``release_worker``), and loaded again when
the user comes back or presses a button that needs it. A button pressed while
the model loads runs its action as soon as the model is ready.

This module imports no torch: the worker does all of that in its own process.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import QScrollArea, QSplitter, QTabWidget, QVBoxLayout, QWidget

from app.background_call import call_in_background
from app.compare.batch import BatchCompareView
from app.compare.best_of_n import BestOfNView
from app.compare.model_picker import CompareModelPicker, ModelChoice
from app.compare.playground import PlaygroundView
from app.compare.prompts import (
    PromptChoice,
    choices_from_rows,
    heldout_choices,
    one_line,
    read_training_rows,
    rows_of_loaded_dataset,
)
from app.compare.sampling import SamplingPanel
from app.compare.side_by_side import SideBySideView
from app.compare.worker_link import CompareWorkerLink, load_key
from backend.methods import method_label
from backend.data.prompt_rendering import display_text
from backend.runs.folder import ADAPTER_DIR
from widgets.card import Card
from widgets.notice_banner import NoticeBanner

ERROR_TITLES = {
    "bad_request": "The request was refused",
    "no_model": "No model is loaded",
    "no_adapter": "No adapter is loaded",
    "bad_model": "The base model could not be loaded",
    "bad_adapter": "The adapter could not be loaded",
    "out_of_memory": "Out of memory",
    "crash": "The generation worker failed",
}
QUANTIZATION_TEXT = {"4bit": "4-bit", "8bit": "8-bit"}
# A pick loads once the list rests this long: arrowing through the runs starts no load per row.
PICK_LOAD_DELAY_MS = 400
PHASE_TEXT = {
    "loading_model": "Loading the base model",
    "loading_adapter": "Loading the adapter",
}


class CompareTab(QWidget):
    sig_worker_state_changed = Signal(str)
    """The generation worker is off | loading | ready | failed (for a status bar)."""

    def __init__(self, parent=None, log_path: str | None = None):
        super().__init__(parent)
        self.setObjectName("comparePage")
        self.link = CompareWorkerLink(self, log_path=log_path)
        self._pending: Callable[[], None] | None = None
        self._pending_what = ""
        self._release_reason = ""
        self._hold_auto_load = False
        self._training_running = False
        self._prompt_run_dir: str | None = None
        self._training_rows_for = ""
        self._extra_sources: dict[str, list] = {}
        self._export_dir = str(Path.home())
        self._shown_state = ""
        self._loading_text = ""

        # ---- left: what to compare, how to sample
        self.picker = CompareModelPicker()
        self.sampling_panel = SamplingPanel()
        model_card = Card("Model", "1", "A finished run, or any LoRA adapter folder on its base model.")
        model_card.add(self.picker)
        sampling_card = Card("Sampling", "2", "Both models use the same settings and seed, so the adapter is "
                                              "the only difference. Hover a setting for what it does.")
        sampling_card.add(self.sampling_panel)
        column = QWidget()
        column.setObjectName("compareSetupColumn")
        cl = QVBoxLayout(column)
        cl.setContentsMargins(12, 12, 6, 12)
        cl.setSpacing(12)
        cl.addWidget(model_card)
        cl.addWidget(sampling_card)
        cl.addStretch(1)
        self.setup_scroll = QScrollArea()
        self.setup_scroll.setWidgetResizable(True)
        self.setup_scroll.setWidget(column)
        self.setup_scroll.setMinimumWidth(360)
        self.setup_scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)

        # ---- right: the views
        self.banner = NoticeBanner()
        self.banner.sig_action.connect(self._on_banner_action)
        self.side_by_side = SideBySideView(self)
        self.batch = BatchCompareView(self)
        self.playground = PlaygroundView(self)
        self.best_of_n = BestOfNView(self)
        self.views = QTabWidget()
        self.views.setDocumentMode(True)
        self.views.addTab(self.side_by_side, "Side by side")
        self.views.addTab(self.batch, "Batch compare")
        self.views.addTab(self.playground, "Playground")
        self.views.addTab(self.best_of_n, "Best-of-N")
        right = QWidget()
        rl = QVBoxLayout(right)
        rl.setContentsMargins(6, 12, 12, 12)
        rl.setSpacing(8)
        rl.addWidget(self.banner)
        rl.addWidget(self.views, 1)

        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self.setup_scroll)
        split.addWidget(right)
        split.setStretchFactor(0, 0)
        split.setStretchFactor(1, 1)
        split.setSizes([400, 1080])
        split.setChildrenCollapsible(False)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(split)

        # ---- wiring
        self._pick_timer = QTimer(self)
        self._pick_timer.setSingleShot(True)
        self._pick_timer.setInterval(PICK_LOAD_DELAY_MS)
        self._pick_timer.timeout.connect(self._maybe_auto_load)
        self.picker.sig_picked.connect(self._on_user_pick)
        self.picker.sig_choice_changed.connect(self._on_choice_changed)
        self.picker.sig_load_requested.connect(self._load_requested)
        self.picker.sig_release_requested.connect(lambda: self.release_worker("user"))
        self.batch.sig_open_prompt.connect(self._open_prompt)
        self.link.sig_state_changed.connect(self._on_state)
        self.link.sig_status.connect(self._on_status)
        self.link.sig_ready.connect(self._on_ready)
        self.link.sig_error.connect(self._on_error)
        self.link.sig_exited.connect(self._on_exited)
        self.link.sig_busy_changed.connect(lambda _busy: self.refresh_actions())
        self._on_state("off")

    # ------------------------------------------------------------- public API
    def set_runs(self, runs: list) -> None:
        """The run list changed (the Runs tab rebuilt it): offer the runs with an adapter."""
        was_training = self._training_running
        self._training_running = any(getattr(r, "status", "") == "running" for r in runs)
        if was_training and not self._training_running:
            self._hold_auto_load = False
        self.picker.set_runs(runs)
        self._on_state(self.link.state())

    def set_loaded_dataset(self, result) -> None:
        """The Train tab's dataset (a DatasetLoadResult, or None): its prompts become pickable."""
        loaded = getattr(result, "loaded", None)
        rows = rows_of_loaded_dataset(loaded) if loaded is not None else []
        self._set_extra_source("dataset", choices_from_rows(rows, "dataset"))

    def open_adapter_folder(self, adapter_dir: str, base_model: str | None = None) -> None:
        """Compare an adapter folder (what "Open adapter folder..." does, without the dialog).
        A listed run's own adapter picks that run, so it is not listed twice."""
        adapter = Path(adapter_dir).expanduser().resolve()
        for choice in self.picker.choices():
            if choice.kind == "run" and (Path(choice.path) / ADAPTER_DIR).resolve() == adapter:
                self.picker.select(choice.path)
                self._load_requested(self.picker.load_spec())
                return
        self.picker.add_adapter_folder(adapter_dir)
        if base_model is not None:
            self.picker.base_model.setText(base_model)
            self.picker.request_load()

    def release_worker(self, reason: str = "training") -> None:
        """End the generation worker now, so its memory (GPU memory included) is free.
        Never blocks: the process is closed on a background thread."""
        self._pending = None
        if reason == "training":
            self._hold_auto_load = True
        had_worker = self.link.release() is not None
        if had_worker:
            self._release_reason = reason
        self._on_state(self.link.state())

    def worker_pid(self) -> int | None:
        return self.link.pid()

    # ---------------------------------------------------------------- Qt events
    def showEvent(self, event):
        super().showEvent(event)
        if not event.spontaneous():
            self._maybe_auto_load()

    def hideEvent(self, event):
        super().hideEvent(event)
        # A minimised window is hidden spontaneously; the user has not left the tab.
        if not event.spontaneous() and self.link.state() != "off":
            self.release_worker("hidden")

    # ------------------------------------------------------------------ loading
    def _maybe_auto_load(self) -> None:
        self._pick_timer.stop()
        if not self.isVisible() or self._hold_auto_load or self._training_running:
            return
        if self.link.state() in ("loading", "ready") and load_key(self.picker.load_spec() or {}) == \
                self.link.loaded_key():
            return
        spec = self.picker.load_spec()
        if spec is not None:
            self.link.load(spec)

    def _load_requested(self, spec: dict) -> None:
        self._hold_auto_load = False
        self.banner.hide_notice()
        self.link.load(spec)

    def run_when_ready(self, action: Callable[[], None], what: str) -> None:
        """Run ``action`` now if a model serves, else load the picked run first and run it then."""
        if self.link.state() == "ready" and load_key(self.picker.load_spec() or {}) == self.link.loaded_key():
            action()
            return
        spec = self.picker.load_spec()
        if spec is None:
            self.show_problem("Pick a run first", "Train one in the Train tab, or open an adapter folder.")
            return
        self._pending, self._pending_what = action, what
        self._hold_auto_load = False
        self.banner.hide_notice()
        if not self.link.load(spec):
            self._pending = None
        elif self.link.state() == "loading":
            self._show_loading()
        self.refresh_actions()

    def _on_user_pick(self, _choice: ModelChoice) -> None:
        # Picking is asking for that model, even after a release for training; while a
        # run trains, the text says why it waits for Load instead.
        self._hold_auto_load = False

    def _on_choice_changed(self, choice: ModelChoice | None) -> None:
        self._pending = None
        run_dir = choice.path if choice is not None and choice.kind == "run" else ""
        self._show_prompts_for(run_dir)
        self._pick_timer.start()
        self._on_state(self.link.state())

    def _on_state(self, state: str) -> None:
        """Show ``state``; also called to refresh the texts when the runs or the choice change."""
        if state != self._shown_state:
            if state == "loading":
                self._loading_text = "Starting the generation worker"
            self._shown_state = state
            self.sig_worker_state_changed.emit(state)
        picker = self.picker
        choice = picker.current_choice()
        if state == "loading":
            self._show_loading()
        elif state == "ready":
            picker.show_status(self._ready_text(self.link.ready_event()))
        elif state == "failed":
            self._pending = None
            picker.show_status("Nothing is loaded: see the message on the right.")
        else:
            self._pending = None
            if choice is None:
                text = "Nothing to compare yet: finish a training run, or open an adapter folder."
            elif self._training_running:
                text = ("A training run is in progress, so the model is not loaded (it would compete for memory). "
                        "Press Load or Generate to load it anyway.")
            elif self._release_reason == "crashed":
                text = "The generation worker stopped unexpectedly: see the message on the right."
            elif self._hold_auto_load:
                text = ("Released to free memory for training. " if self._release_reason == "training" else
                        "Not loaded, to leave the memory to training. ")
                text += "Pick a run, or press Load or Generate, to load it."
            elif self._release_reason in ("hidden", "user"):
                text = "Released to free memory. Pick a run, or press Load or Generate, to load it again."
            else:
                text = "Not loaded yet. It loads in a few seconds and stays loaded while this tab is open."
            picker.show_status(text)
        picker.set_buttons(can_load=choice is not None and (
            state in ("off", "failed") or load_key(picker.load_spec() or {}) != self.link.loaded_key()),
            can_release=state != "off")
        self.refresh_actions()

    def _on_status(self, event) -> None:
        if self.link.state() == "loading":
            self._loading_text = event.message or PHASE_TEXT.get(event.phase, event.phase)
            self._show_loading()

    def _show_loading(self) -> None:
        then = f", then {self._pending_what.lower()}" if self._pending is not None else ""
        self.picker.show_loading(self._loading_text + then)

    def _on_ready(self, ready) -> None:
        self._release_reason = ""
        self.banner.hide_notice()
        self.sampling_panel.set_default_stops(ready.default_stop_strings)
        self.sampling_panel.set_backend_status(ready.generation_backend, ready.backend_note)
        self.side_by_side.set_ready(ready)
        self.playground.set_ready(ready)
        self.best_of_n.set_ready(ready)
        if ready.run_dir and ready.run_dir != self._prompt_run_dir:
            self._show_prompts_for(ready.run_dir)
        self.batch.set_sources(self._extra_sources, ready.heldout_rows, ready.heldout_pairs)
        self._on_state("ready")
        action, self._pending = self._pending, None
        if action is not None:
            action()

    @staticmethod
    def _ready_text(ready) -> str:
        if ready is None:
            return ""
        device = ready.device or {}
        where = str(device.get("kind", "")).upper()
        adapter = f" + adapter {Path(ready.adapter).parent.name}/{Path(ready.adapter).name}" if ready.adapter \
            else " (no adapter: base model only)"
        beta = f"β {ready.beta:g}" if ready.implicit_reward else "no implicit reward"
        method = f"{method_label(ready.method)}, {beta}" if ready.method else beta
        weights = QUANTIZATION_TEXT.get(ready.quantization) or str(device.get("precision") or "not quantised")
        parts = [method, weights, where, f"loaded in {ready.load_seconds:.1f} s"]
        return f"Ready: {ready.model_label}{adapter}\n" + " · ".join(p for p in parts if p)

    # ------------------------------------------------------------------ prompts
    def _show_prompts_for(self, run_dir: str) -> None:
        if run_dir == self._prompt_run_dir:
            return
        self._prompt_run_dir = run_dir
        self.side_by_side.picker.set_source("heldout", heldout_choices(run_dir) if run_dir else [])
        self._set_extra_source("training", [])
        self._training_rows_for = run_dir
        if not run_dir:
            return

        def done(rows, wanted=run_dir):
            if self._training_rows_for == wanted:
                self._set_extra_source("training", choices_from_rows(rows, "training"))

        # The training data may be big and needs the datasets library: read it off the GUI thread.
        call_in_background(lambda: read_training_rows(run_dir), done, lambda _exc, _tb: None, owner=self)

    def _set_extra_source(self, key: str, choices: list) -> None:
        if choices:
            self._extra_sources[key] = choices
        else:
            self._extra_sources.pop(key, None)
        self.side_by_side.picker.set_source(key, choices)
        ready = self.link.ready_event()
        self.batch.set_sources(self._extra_sources, ready.heldout_rows if ready else 0,
                               ready.heldout_pairs if ready else 0)

    def _open_prompt(self, prompt) -> None:
        text = display_text(prompt)
        self.side_by_side.use_choice(PromptChoice(one_line(text), prompt, "batch"))
        self.views.setCurrentWidget(self.side_by_side)

    # ------------------------------------------------------------------ errors
    def _on_error(self, event) -> None:
        title = ERROR_TITLES.get(event.kind, "Something went wrong")
        text = event.message + (f"\n{event.hint}" if event.hint else "")
        self.banner.show_notice("error", title, text, details=event.traceback)

    def _on_exited(self, event) -> None:
        if event.unexpected:
            self.banner.show_notice("error", "The generation worker stopped", f"{event.message}\n{event.hint}",
                                    details=event.log_tail, action="Start again")
            self._release_reason = "crashed"
            self._on_state(self.link.state())

    def _on_banner_action(self) -> None:
        self.banner.hide_notice()
        self.picker.request_load()

    def show_problem(self, title: str, text: str) -> None:
        self.banner.show_notice("warning", title, text)

    def show_notice(self, severity: str, title: str, text: str) -> None:
        self.banner.show_notice(severity, title, text)

    # ------------------------------------------------------------------ actions
    def sampling(self) -> dict | None:
        return self.sampling_panel.settings()

    def refresh_actions(self) -> None:
        """Enable each view's start button: one request at a time on the one worker."""
        # Views call this while the tab is still being built; only the ones that exist count.
        views = [getattr(self, name, None) for name in ("side_by_side", "batch", "playground", "best_of_n")]
        views = [v for v in views if v is not None]
        running = any(v.is_running() for v in views)
        has_choice = self.picker.current_choice() is not None
        if not has_choice:
            why = "Pick a run first."
        elif running or self.link.is_busy():
            why = "Wait for the current request to finish, or stop it."
        elif self._pending is not None:
            why = "The model is loading; your request runs when it is ready."
        else:
            why = ""
        can = not why
        for view in views:
            view.set_can_start(can, why)

    def export_dir(self) -> str:
        return self._export_dir

    def remember_export_dir(self, folder: str) -> None:
        self._export_dir = folder
