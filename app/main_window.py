"""The studio's main window: setup on the left, the live run on the right,
past runs and the compare view in their own tabs.

This module wires widgets to the engine and to each other; the widgets
themselves know nothing about training. It must never import torch,
transformers or trl: they stay in the worker processes.
"""

from __future__ import annotations

import gc
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QLabel,
    QMainWindow,
    QMessageBox,
    QScrollArea,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app import permission_dialog
from app.first_paint import after_first_paint
from app.compare.tab import CompareTab
from app.train.data_panel import DataPanel
from app.device_probe import DeviceProbe, describe_device
from app.train.live_training_view import LiveTrainingView
from app.train.memory_panel import MemoryPanel
from app.train.method_settings_panel import MethodSettingsPanel
from app.train.model_panel import ModelPanel
from app.runs.tab import RunsTab
from app.studio_settings import StudioSettings
from app.train.run_presenter import RunPresenter, refusal_text
from app.train.training_supervisor import TrainingController
from backend.runs.code_permissions import GrantStore
from backend.methods import all_methods, method_label
from backend.runs.config import ConfigError, to_dict
from widgets.card import Card
from widgets.drop_zone import local_paths_from_mime
from widgets.wheel_guard import install_wheel_guard

# Train's shortcut; the Compare views use the same keys for Generate and Send.
TRAIN_KEYS = ("Ctrl+Return", "Ctrl+Enter")


class PanelForm:
    """The setup column's panels as the presenter reads them (app.train.run_presenter.TrainForm)."""

    def __init__(self, data_panel: DataPanel, model_panel: ModelPanel, method_panel: MethodSettingsPanel):
        self.data_panel, self.model_panel, self.method_panel = data_panel, model_panel, method_panel

    def method(self) -> str:
        return self.method_panel.method()

    def values(self) -> dict:
        return self.method_panel.values()

    def parse_problems(self) -> dict[str, str]:
        return self.method_panel.parse_problems()

    def method_supported(self) -> bool:
        return self.method_panel.method_supported()

    def model_value(self) -> str:
        return self.model_panel.model_value()

    def model_display_name(self) -> str:
        return self.model_panel.display_name()

    def model_problem(self, trust_remote_code: bool, allow_pickle_weights: bool) -> tuple[str, str]:
        # The panel shows its verdict under the model too, judged with these permissions.
        self.model_panel.set_permissions(trust_remote_code, allow_pickle_weights)
        return self.model_panel.problem_and_setting()

    def data_result(self):
        return self.data_panel.current()

    def data_failure(self):
        return self.data_panel.failure()

    def data_path(self) -> str:
        return self.data_panel.current_path()

    def data_override(self) -> dict:
        return self.data_panel.override()

    def data_reading(self) -> bool:
        return self.data_panel.is_reading()


def _token_word(report) -> str:
    """"tokens" once the report has counted them with the model's tokenizer, "tokens (≈)" before."""
    return "tokens (≈)" if str(getattr(report, "length_unit", "")).startswith("approx") else "tokens"


class StudioWindow(QMainWindow):
    sig_ready = Signal()
    """The window has been shown and its background start-up work was launched."""

    def __init__(self, settings: StudioSettings | None = None, data: str | None = None,
                 model: str | None = None, method: str | None = None, probe_device: bool = True,
                 config: str | None = None):
        super().__init__()
        self.setWindowTitle("AlignStudio")
        self.setAcceptDrops(True)
        self.settings = settings or StudioSettings()
        # Beside the studio's settings, never in a run folder: what the user allowed to run code.
        self.grants = GrantStore(self.settings.path.parent / "grants.json")
        self.device_info: dict | None = None
        self._initial = {"data": data, "model": model, "method": method, "config": config}
        self._probe_device = probe_device
        self._close_after_stop = False
        self._run_estimate = None
        self._memory_kind = ""
        self._last_peak_mb: float | None = None
        self._active_run_dir = ""
        self._started = False
        self._refusal_status = ""  # why Train was refused, while the status bar shows it

        self.controller = TrainingController(parent=self)
        self.presenter = RunPresenter(self.controller, self.grants, ask_permission=self.ask_for)
        self.device_probe = DeviceProbe(self)
        self.device_probe.sig_device_found.connect(self._on_device)

        # ---- left: the setup, as numbered steps
        self.model_panel = ModelPanel(self.settings)
        self.data_panel = DataPanel(self.settings, tokenizer_provider=self.model_panel.tokenizer_path)
        self.method_panel = MethodSettingsPanel(self.settings)
        self.method_panel.set_grader_permission(self.ask_for, self.grants)
        self.memory_panel = MemoryPanel()
        self.form = PanelForm(self.data_panel, self.model_panel, self.method_panel)
        data_card = Card("Data", "1")
        data_card.add(self.data_panel)
        model_card = Card("Model", "2")
        model_card.add(self.model_panel)
        model_card.add(self.method_panel.model_form)
        method_card = Card("Method and settings", "3", "Hover a setting for what it does.")
        method_card.add(self.method_panel)
        memory_card = Card("Memory", "4")
        memory_card.add(self.memory_panel)
        setup = QWidget()
        setup.setObjectName("setupColumn")
        sl = QVBoxLayout(setup)
        sl.setContentsMargins(12, 12, 6, 12)
        sl.setSpacing(12)
        for card in (data_card, model_card, method_card, memory_card):
            sl.addWidget(card)
        sl.addStretch(1)
        self.setup_scroll = QScrollArea()
        self.setup_scroll.setWidgetResizable(True)
        self.setup_scroll.setWidget(setup)
        self.setup_scroll.setMinimumWidth(470)
        self.setup_scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)

        # ---- right: the live run
        self.live = LiveTrainingView(self.settings)
        train_page = QSplitter(Qt.Orientation.Horizontal)
        train_page.setObjectName("trainPage")
        train_page.addWidget(self.setup_scroll)
        train_page.addWidget(self.live)
        train_page.setStretchFactor(0, 0)
        train_page.setStretchFactor(1, 1)
        train_page.setSizes([530, 950])
        train_page.setChildrenCollapsible(False)
        self.train_page = train_page

        self.runs_tab = RunsTab(extra_roots=lambda: self.settings.value("runs/extra_roots", []))
        self.compare_tab = CompareTab()
        self.compare_tab.link.confirm_code = self.confirm_model_code
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        self.tabs.addTab(train_page, "Train")
        self.tabs.addTab(self.runs_tab, "Runs")
        self.tabs.addTab(self.compare_tab, "Compare")
        self.setCentralWidget(self.tabs)

        self.device_label = QLabel("Device: checking…")
        self.device_label.setToolTip("The device the training worker will use.")
        self.statusBar().addPermanentWidget(self.device_label)
        self._build_menus()
        self.tabs.currentChanged.connect(self._scope_shortcuts)
        self._scope_shortcuts()

        # ---- wiring
        self.data_panel.sig_dataset_changed.connect(self._on_dataset)
        self.data_panel.sig_dataset_changed.connect(self.method_panel.set_dataset_columns)
        self.runs_tab.sig_runs_listed.connect(self.method_panel.set_reward_model_runs)
        self.method_panel.sig_try_graders.connect(self.try_graders)
        self.method_panel.sig_demo_requested.connect(self.open_config_file)
        self.data_panel.loader.sig_busy.connect(lambda _busy: self._schedule_validation())
        self.model_panel.sig_model_changed.connect(self._schedule_validation)
        self._tokenizer_timer = QTimer(self)
        self._tokenizer_timer.setSingleShot(True)
        self._tokenizer_timer.setInterval(500)
        self._tokenizer_timer.timeout.connect(self.data_panel.refresh_for_tokenizer)
        self.model_panel.sig_model_changed.connect(self._tokenizer_timer.start)
        self.method_panel.sig_values_changed.connect(self._schedule_validation)
        self.live.sig_train_requested.connect(self.start_training)
        self.live.sig_stop_requested.connect(self.stop_training)
        self.live.sig_stop_advised.connect(self._on_stop_advised)
        self.live.sig_force_stop_requested.connect(self.controller.kill)
        self.live.sig_resume_requested.connect(self.resume_run)
        self.runs_tab.sig_resume_requested.connect(self.resume_run)
        self.runs_tab.sig_runs_listed.connect(self._offer_resume)
        self.runs_tab.sig_use_settings.connect(self.use_run_settings)
        self.runs_tab.sig_runs_listed.connect(self.compare_tab.set_runs)
        self.runs_tab.sig_compare_requested.connect(self.compare_run)
        self.data_panel.sig_dataset_changed.connect(self.compare_tab.set_loaded_dataset)
        # The last run's "Done" must not sit above a new dataset, a data error or changed settings.
        for changed in (self.data_panel.sig_dataset_changed, self.model_panel.sig_model_changed,
                        self.method_panel.sig_values_changed):
            changed.connect(self.live.clear_outcome)
            changed.connect(self._clear_refusal_status)  # nor a refused Train's reason
        self.compare_tab.sig_worker_state_changed.connect(self._on_compare_worker)

        sup = self.controller.supervisor
        sup.sig_launched.connect(self._on_launched)
        # Only bound methods of objects on the GUI thread here: a lambda would run on the
        # supervisor's thread (Qt picks the thread of the sender when a slot has no object).
        sup.sig_run_started.connect(self.live.on_run_started)
        sup.sig_run_started.connect(self._on_run_started)
        sup.sig_phase.connect(self.live.on_phase)
        sup.sig_train_log.connect(self.live.on_train_log)
        sup.sig_train_log.connect(self._remember_memory_kind)
        sup.sig_eval_log.connect(self.live.on_eval_log)
        sup.sig_eval_progress.connect(self.live.on_eval_progress)
        sup.sig_checkpoint.connect(self.live.on_checkpoint)
        sup.sig_warning.connect(self.live.on_warning)
        sup.sig_samples.connect(self.live.on_samples)
        sup.sig_finished.connect(self._on_finished)
        sup.sig_failed.connect(self._on_failed)
        # Through the controller, not the supervisor's own signal: a queued signal reaches each
        # receiver as its own event, and the window must never see "not running" before its
        # controls are back (a loaded machine ran the check between the two events).
        self.controller.sig_busy_changed.connect(lambda busy: busy or self._on_idle())

        self._validation_timer = QTimer(self)
        self._validation_timer.setSingleShot(True)
        self._validation_timer.setInterval(80)
        self._validation_timer.timeout.connect(self.revalidate)

        geometry, state = self.settings.window_state()
        if geometry is not None:
            self.restoreGeometry(geometry)
        else:
            self.resize(1480, 920)
        if state is not None:
            self.restoreState(state)

        # Scrolling the setup with the pointer over a field must not edit it.
        self.wheel_guard = install_wheel_guard(self)

        if method:
            self.method_panel.set_method(method)
        if model is not None:
            self.model_panel.set_model(model)
        self.revalidate()

    # ------------------------------------------------------------ start-up
    def showEvent(self, event):
        super().showEvent(event)
        if not self._started:
            self._started = True
            # After the first paint: nothing slow may delay the window appearing.
            after_first_paint(self, self._start_background_work, at_latest_ms=1000)

    @staticmethod
    def freeze_heap() -> None:
        """Move everything alive now out of the garbage collector's sight.

        The GUI process holds ~150,000 long-lived objects (Qt wrappers, pyqtgraph,
        the data layer's imports). A full collection walks them all and pauses every
        thread, the GUI's included, for 20-70 ms, at random moments of a run; frozen,
        they are skipped.
        """
        gc.collect()
        gc.freeze()

    def _start_background_work(self) -> None:
        if self._probe_device:
            self.device_probe.start()
        self.data_panel.preload()
        self.runs_tab.refresh()
        if self._initial["config"]:
            self.open_config_file(self._initial["config"])
        elif self._initial["data"]:
            self.data_panel.load_path(self._initial["data"])
        # pyqtgraph's import (~0.5 s) is paid while the user is still reading the window, but
        # after the first data report, which it would otherwise hold back.
        if self.data_panel.loader.is_busy():
            for ended in (self.data_panel.loader.sig_loaded, self.data_panel.loader.sig_failed):
                ended.connect(lambda _result: QTimer.singleShot(100, self.live.ensure_plots),
                              Qt.ConnectionType.SingleShotConnection)
        else:
            QTimer.singleShot(200, self.live.ensure_plots)
        # Once the slow imports are done (the data layer signals its formats), freeze them.
        self.data_panel.loader.sig_formats_ready.connect(lambda _formats: QTimer.singleShot(300, self.freeze_heap))
        self.sig_ready.emit()

    def _build_menus(self) -> None:
        file_menu = self.menuBar().addMenu("&File")
        open_action = QAction("Open dataset…", self)
        open_action.setShortcut(QKeySequence.StandardKey.Open)
        open_action.triggered.connect(self.data_panel.drop_zone.file_button.click)
        file_menu.addAction(open_action)
        self.recent_menu = file_menu.addMenu("Open recent")
        self.data_panel.sig_recent_changed.connect(self._fill_recent_menu)
        self._fill_recent_menu(self.settings.recent_files())
        self.demo_menu = file_menu.addMenu("Demos")
        self.demo_menu.aboutToShow.connect(self._fill_demo_menu)  # read when opened: startup reads no files
        file_menu.addAction("Generate preference data…", self.open_preference_generation)
        file_menu.addSeparator()
        quit_action = QAction("Quit", self)
        quit_action.setShortcut(QKeySequence.StandardKey.Quit)
        quit_action.triggered.connect(self.close)
        file_menu.addAction(quit_action)

        run_menu = self.menuBar().addMenu("&Run")
        self.train_action = QAction("Train", self)
        self.train_action.triggered.connect(self.start_training)
        self.stop_action = QAction("Stop", self)
        self.stop_action.setShortcut(QKeySequence("Ctrl+."))
        self.stop_action.triggered.connect(self.stop_training)
        run_menu.addAction(self.train_action)
        run_menu.addAction(self.stop_action)
        run_menu.addSeparator()
        run_menu.addAction("Evaluate rewards…", self.evaluate_rewards)
        run_menu.addAction("RLHF pipeline…", self.open_rlhf_pipeline)

        settings_menu = self.menuBar().addMenu("&Settings")
        permissions_action = QAction("Code permissions…", self)
        permissions_action.triggered.connect(self.show_code_permissions)
        settings_menu.addAction(permissions_action)

        help_menu = self.menuBar().addMenu("&Help")
        about = QAction("About AlignStudio", self)
        about.triggered.connect(lambda: QMessageBox.about(
            self, "AlignStudio",
            "AlignStudio fine-tunes and preference-aligns language models with QLoRA, without code: "
            f"{', '.join(spec.label for spec in all_methods())}. Training runs in a separate process; every run "
            "is a folder you can reopen."))
        help_menu.addAction(about)

    def _fill_demo_menu(self) -> None:
        from app.train.demo_menu import fill_demo_menu

        fill_demo_menu(self.demo_menu, self.open_config_file)

    def open_preference_generation(self) -> None:
        from app.train.preference_generation_dialog import open_generation_dialog

        self.preference_generation = open_generation_dialog(self)

    def open_rlhf_pipeline(self) -> None:
        from app.train.rlhf_pipeline import open_pipeline

        self.rlhf_pipeline = open_pipeline(self)

    def evaluate_rewards(self) -> None:
        """The reward evaluation panel, on the run selected in the Runs tab (app.runs.reward_eval_panel)."""
        from app.runs.reward_eval_panel import RewardEvalPanel

        selected = self.runs_tab.selected_run_dirs()
        runs = [str(r.run_dir) for r in self.runs_tab.summaries()]
        self.reward_eval_panel = RewardEvalPanel(selected[0] if selected else "", run_dirs=runs, parent=self)
        self.reward_eval_panel.show()

    def _scope_shortcuts(self, _index: int = -1) -> None:
        """Ctrl+Enter trains only from the Train tab. A menu action's shortcut is live in
        every tab, and with Compare's Generate (or the Playground's Send) bound to the same
        keys Qt found two matches, ran neither and logged "Ambiguous shortcut overload"."""
        on_train = self.tabs.currentWidget() is self.train_page
        self.train_action.setShortcuts([QKeySequence(k) for k in TRAIN_KEYS] if on_train else [])

    def _fill_recent_menu(self, files: list[str]) -> None:
        self.recent_menu.clear()
        for path in files:
            action = self.recent_menu.addAction(path)
            action.triggered.connect(lambda _c=False, p=path: self.data_panel.load_path(p))
        self.recent_menu.setEnabled(bool(files))

    def _on_device(self, info: dict) -> None:
        self.device_info = info if not info.get("error") else None
        self.device_label.setText(describe_device(info))
        if info.get("name"):
            self.device_label.setToolTip(f"The training worker will use: {info['name']}")
        if info.get("error"):
            self.device_label.setToolTip(f"The device check failed: {info['error']}")
        self._schedule_validation()

    # ------------------------------------------------------------ drag/drop
    def dragEnterEvent(self, event):
        if local_paths_from_mime(event.mimeData()):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dragMoveEvent(self, event):
        if local_paths_from_mime(event.mimeData()):
            event.acceptProposedAction()

    def dropEvent(self, event):
        paths = local_paths_from_mime(event.mimeData())
        if not paths:
            event.ignore()
            return
        event.acceptProposedAction()
        self.tabs.setCurrentWidget(self.train_page)
        self.data_panel.load_path(paths[0])

    # ------------------------------------------------------------ validation
    def _on_dataset(self, result) -> None:
        # The loaded dataset lives as long as the window shows it; frozen after the report is
        # painted, since a full collection (~25 ms) would hold that paint back.
        QTimer.singleShot(300, self.freeze_heap)
        if result is None:
            self.method_panel.set_supported(None)
            self.statusBar().clearMessage()  # a previous file's "Loaded N rows" must not sit under the error
        else:
            self.method_panel.set_supported(result.supported_methods, result.unsupported_reasons)
            suggested = getattr(result.report, "suggested_max_length", None)
            if suggested:
                self.statusBar().showMessage(
                    f"Loaded {result.loaded.rows_kept:,} rows in {result.seconds:.1f} s; "
                    f"95% of examples fit in {suggested} {_token_word(result.report)}.", 8000)
        # At once, not after the typing pause: Train must never stay enabled under a refused file.
        self._validation_timer.stop()
        self.revalidate()

    def _schedule_validation(self) -> None:
        self._validation_timer.start()

    def build_config(self):
        """The config the Train button would start, and every problem with it (field -> message)."""
        return self.presenter.build_config(self.form)

    def revalidate(self) -> tuple[bool, str]:
        state = self.presenter.state(self.form)
        self.method_panel.set_problems(state.problems)
        self.live.set_can_train(state.can_train, state.reason)
        if state.ready_text:
            self.live.show_ready(state.ready_text, note=state.ready_note)
        self.train_action.setEnabled(state.train_enabled)
        self.stop_action.setEnabled(state.running)
        if not state.problems:
            self.memory_panel.request(state.cfg, self.device_info, self._answer_tokens(state.cfg))
        return state.can_train, state.reason

    def _answer_tokens(self, cfg) -> int | None:
        """The data's longest trained answer: a head that scores only the trained positions (the
        CPU default) projects just those, so long prompts with short answers need far less."""
        from backend.training.memory_estimate import trained_answer_tokens

        return trained_answer_tokens(cfg, getattr(self.data_panel.current(), "report", None))

    @property
    def free_space(self):
        """``free_space(folder) -> bytes`` for the disk check before a run (None: ask the system)."""
        return self.presenter.free_space

    @free_space.setter
    def free_space(self, measure) -> None:
        self.presenter.free_space = measure

    # -------------------------------------------------------------- training
    def start_training(self) -> bool:
        if self.controller.is_running():
            return False
        ok, reason = self.revalidate()
        if not ok:
            self._show_refusal_status(reason, 6000)
            return False
        outcome = self.presenter.start(self.form, before_launch=self._before_launch)
        if outcome.refusals:
            self._refuse_training(outcome.problems, outcome.refusals)
        elif outcome.reason:
            self._show_refusal_status(outcome.reason, 6000)
        if not outcome.started:
            return False
        self.revalidate()
        return True

    def _before_launch(self, cfg) -> None:
        """Every check passed: keep the settings, note the estimate, show the run beginning."""
        self.method_panel.remember()
        self.settings.sync()
        self._run_estimate = self.memory_panel.estimate_now(cfg, self.device_info, self._answer_tokens(cfg))
        self._memory_kind = ""
        self._last_peak_mb = None
        if cfg.output_dir:
            roots = [r for r in self.settings.value("runs/extra_roots", []) if r != cfg.output_dir]
            self.settings.set_value("runs/extra_roots", [cfg.output_dir] + roots[:9])
        # Training needs the memory a loaded compare model holds (GPU memory above all).
        self.compare_tab.release_worker("training")
        self.live.begin_run(cfg.method, f"({self.model_panel.display_name()})")
        self.statusBar().showMessage("Starting the training worker…")

    def preflight_problems(self, cfg) -> list[tuple[str, str]]:
        """What would stop ``cfg`` before its first step (see RunPresenter.preflight)."""
        return self.presenter.preflight(cfg, self.form)

    def _refuse_training(self, problems: dict[str, str], refusals: list[tuple[str, str]]) -> None:
        """Say in place, not in a modal dialog, why nothing started; flag the settings involved."""
        flagged = dict(problems)
        for name, message in refusals:
            flagged.setdefault(name, message)
        self.method_panel.set_problems(flagged)
        title, lines = refusal_text(refusals)
        self.live.banner.show_notice("error", title, "\n\n".join(lines))
        self.live.show_not_started()
        self._show_refusal_status(f"Training was not started: {lines[0][:140]}", 15000)

    def _show_refusal_status(self, message: str, timeout_ms: int) -> None:
        self._refusal_status = message
        self.statusBar().showMessage(message, timeout_ms)

    def _clear_refusal_status(self, *_args) -> None:
        """A refusal is about the model, data and settings it was refused with: once one of
        them changes (back to the embedded model, say), it no longer applies."""
        if self._refusal_status and self.statusBar().currentMessage() == self._refusal_status:
            self.statusBar().clearMessage()
        self._refusal_status = ""

    def stop_training(self) -> None:
        if self.controller.is_running():
            self.statusBar().showMessage("Stopping after the current step; the adapter will be saved…")
            self.controller.request_stop()

    def resume_run(self, run_dir: str) -> bool:
        """Continue a stopped or crashed run from its last checkpoint, its plots going on from
        where they ended."""
        if self.controller.is_running():
            self.statusBar().showMessage("A run is in progress; stop it before resuming another.", 6000)
            return False
        outcome = self.presenter.resume(run_dir, before_launch=self._before_resume)
        if outcome.started:
            self.revalidate()
            return True
        if outcome.lines:
            self.tabs.setCurrentWidget(self.train_page)
            self.live.banner.show_notice("error", outcome.title, "\n\n".join(outcome.lines))
            self.statusBar().showMessage(outcome.message, 15000)
        elif outcome.message:
            self.statusBar().showMessage(outcome.message, 8000)
        return False

    def _before_resume(self, outcome) -> None:
        summary = outcome.summary
        self.compare_tab.release_worker("training")
        self.tabs.setCurrentWidget(self.train_page)
        self._run_estimate = None  # the estimate belongs to the settings in the form, not to this run
        self._memory_kind, self._last_peak_mb = "", None
        self.live.begin_run(summary.method, f"(resuming {summary.name} from step {summary.checkpoint_step})",
                            history=outcome.history)
        self.statusBar().showMessage(outcome.message)

    def try_graders(self) -> None:
        """Score a few base-model completions of the loaded prompts with the graders as set."""
        from app.train.grader_trial_dialog import GraderTrialDialog

        cfg, problems = self.build_config()
        result = self.data_panel.current()
        reason = ("Load a dataset of prompts first." if result is None
                  else "Fix the settings marked in red first." if problems else "")
        if reason or not self.confirm_permissions(cfg):
            if reason:
                self._show_refusal_status(f"The graders were not tried: {reason}", 8000)
            return
        self.trial_dialog = GraderTrialDialog(cfg, self)
        self.trial_dialog.show()
        self.trial_dialog.start()

    # ------------------------------------------------------------ permissions
    def ask_for(self, subject) -> bool:
        """Ask the user; remember a yes for these exact files."""
        changed = self.grants.recorded(subject) is not None
        if not permission_dialog.ask_permission(subject, self, changed=changed):
            self._show_refusal_status(f"Not started: you did not allow {subject.name} to "
                                      f"{subject.describe().split(':')[0]}.", 15000)
            return False
        self.grants.grant(subject)
        return True

    # The decisions are the presenter's; these names stay for the dialogs and tabs that call them.
    def confirm_permissions(self, cfg) -> bool:
        return self.presenter.confirm_permissions(cfg)

    def granted_run_config(self, run_dir: str):
        return self.presenter.granted_run_config(run_dir)

    def confirm_model_code(self, model: str) -> str:
        return self.presenter.confirm_model_code(model)

    def granted_config(self, cfg):
        return self.presenter.granted_config(cfg)

    def show_code_permissions(self) -> None:
        from app.settings_dialog import CodePermissionsPage

        CodePermissionsPage(self.grants, self).exec()
        self._schedule_validation()

    def _offer_resume(self, runs: list) -> None:
        """After a run ends early, offer to continue it if it left a checkpoint. The runs
        list, re-read in the background when a run ends, already knows."""
        if self.controller.is_running():
            return
        run_dir = self.live.run_dir()  # empty when the latest attempt never got a worker
        summary = next((r for r in runs if str(r.run_dir) == run_dir), None) if run_dir else None
        resumable = summary is not None and summary.resumable
        self.live.set_resumable(run_dir if resumable else "", summary.checkpoint_step if resumable else None)

    def _on_stop_advised(self, why: str) -> None:
        self.statusBar().showMessage(f"Stopping the run: {why}.")
        self.live.request_stop()

    def _on_run_started(self, event) -> None:
        self.statusBar().showMessage(f"Training {method_label(event.method)}…")

    def _remember_memory_kind(self, event) -> None:
        self._memory_kind = event.memory_kind or self._memory_kind
        if event.peak_memory_mb:
            self._last_peak_mb = max(self._last_peak_mb or 0.0, event.peak_memory_mb)

    def _on_launched(self, run_dir: str, log_path: str) -> None:
        self._active_run_dir = run_dir
        self.live.on_launched(run_dir, log_path)
        self.runs_tab.refresh()

    def _on_finished(self, event) -> None:
        self.live.on_finished(event)
        QTimer.singleShot(0, lambda: self._record_memory(event))  # its own turn: it writes and fsyncs
        self.statusBar().showMessage("Run stopped; adapter saved." if event.stopped else "Run finished; adapter saved.",
                                     10000)
        self.runs_tab.refresh()

    def _on_failed(self, event) -> None:
        self.live.on_failed(event)
        QTimer.singleShot(0, lambda: self._record_memory(None))
        self.statusBar().showMessage(f"The run failed: {event.message[:120]}", 15000)
        self.runs_tab.refresh()

    def _on_idle(self) -> None:
        self.runs_tab.refresh()  # the final status, and whether Resume is on offer (see _offer_resume)
        self.live.on_idle()
        if self._close_after_stop:
            self.close()
            return
        self._schedule_validation()

    def _record_memory(self, event) -> None:
        """Keep the estimate next to the measured peak, so the estimator can be checked against reality."""
        run_dir = Path(self._active_run_dir) if self._active_run_dir else None
        if run_dir is None or not run_dir.is_dir() or self._run_estimate is None:
            return
        from backend.training.memory_estimate import record_measured_peak

        # A failed run has no final figure; the highest peak its steps reported is the measurement.
        peak = (event.peak_memory_mb if event is not None else None) or self._last_peak_mb
        try:
            record_measured_peak(run_dir, self._run_estimate.to_dict(), peak, self._memory_kind or "rss")
        except OSError as exc:
            self.live.console.append_line(f"[studio] could not record the memory estimate: {exc}")

    def compare_run(self, run_dir: str) -> None:
        """Open a run's adapter in the Compare tab, with the base model it was trained on."""
        summary = next((r for r in self.runs_tab.summaries() if str(r.run_dir) == run_dir), None)
        if summary is None or not summary.adapter_path:
            self.statusBar().showMessage("This run has no saved adapter to compare.", 6000)
            return
        from backend.runs.folder import load_run_config

        try:
            base = load_run_config(run_dir).model
        except (ConfigError, OSError):
            base = None
        self.tabs.setCurrentWidget(self.compare_tab)
        self.compare_tab.open_adapter_folder(summary.adapter_path, base)

    def _on_compare_worker(self, state: str) -> None:
        if state in ("loading", "ready"):
            self.statusBar().showMessage(
                "Compare: loading the model…" if state == "loading" else "Compare: model ready.", 5000)

    def use_run_settings(self, run_dir: str) -> None:
        """Load a past run's method, settings, model and data into the Train tab."""
        from backend.data.hub import with_recorded_revision
        from backend.runs.folder import load_run_config

        try:
            cfg = load_run_config(run_dir)
        except (ConfigError, OSError) as exc:
            QMessageBox.warning(self, "Cannot read the run's settings", str(exc))
            return
        self.apply_config(with_recorded_revision(cfg, run_dir))

    def open_config_file(self, path: str) -> None:
        """Load a config.yaml (the demo's, or one saved with any run) into the Train tab."""
        from backend.cli.main import load_config_file

        try:
            cfg = load_config_file(path)
        except (ConfigError, OSError) as exc:
            QMessageBox.warning(self, "Cannot read the settings file", f"{path}: {exc}")
            return
        self.apply_config(cfg)

    def apply_config(self, cfg) -> None:
        """Put a config's method, settings, model and data into the Train tab."""
        self.method_panel.set_method(cfg.method, values=to_dict(cfg))
        self.model_panel.set_model(cfg.model)
        if cfg.data_path:
            self.data_panel.load_source(cfg.data_path, cfg.data_format or "", cfg.column_map or {},
                                        split=cfg.data_split, subset=cfg.data_subset, revision=cfg.data_revision)
        self.tabs.setCurrentWidget(self.train_page)
        self._schedule_validation()

    # ---------------------------------------------------------------- closing
    def ask_stop_on_close(self) -> bool:
        answer = QMessageBox.question(
            self, "A run is in progress",
            "Stop the run and close AlignStudio?\n\nThe adapter trained so far is saved in the run folder; "
            "the run can be resumed later.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    def closeEvent(self, event):
        if self.controller.is_running():
            if not self._close_after_stop:
                if not self.ask_stop_on_close():
                    event.ignore()
                    return
                self._close_after_stop = True
                self.statusBar().showMessage("Stopping the run and saving the adapter before closing…")
                self.live.request_stop()
                # Cooperative first; the worker is terminated (children first) if it takes too long.
                self.controller.stop(grace_seconds=60)
            event.ignore()
            return
        self.method_panel.remember()
        self.settings.set_window_state(self.saveGeometry(), self.saveState())
        self.settings.sync()
        self.device_probe.stop()
        self.controller.shutdown()
        super().closeEvent(event)
