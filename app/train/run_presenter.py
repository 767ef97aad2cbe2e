"""What the Train tab decides, without Qt: the config the form describes and what is wrong
with it, whether Train is on and why not, the checks before a run, starting and resuming.

The window (app.main_window) reads its panels through a ``TrainForm`` and shows what this
class answers; tests and scripts drive it with a ``PlainForm`` and a ``WorkerLauncher``, no
QApplication needed. It must import neither Qt nor torch: the contract in pyproject.toml
("The Train tab's presenter imports no Qt") holds it to that.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from backend.data.hub import commit_of
from backend.data.report import method_advice
from backend.methods import DEFAULT_METHOD, method_label
from backend.runs.code_permissions import GrantStore, model_subject, ungranted_subjects, with_stored_grants
from backend.runs.config import (ConfigError, default_config, describe_problems, field_label, replace_values,
                                 validate)
from backend.runs.preflight import max_length_notes, max_length_problems, resume_problems, run_preflight

# A model refused for its pickle weights or its own code can still be used by turning
# on a setting; that setting is flagged too, so the way out is one click away.
PERMISSION_HINTS = {
    "allow_pickle_weights": "Turn this on to load this model's pickle weights, only if you trust where they "
                            "come from (see the message under the model); Train then asks you to confirm.",
    "trust_remote_code": "Turn this on to run this model's own code, only if you trust its author "
                         "(see the message under the model); Train then asks you to confirm.",
}


class TrainForm(Protocol):
    """What the presenter reads from the setup column (the window's panels, or a PlainForm)."""

    def method(self) -> str: ...
    def values(self) -> dict[str, Any]: ...
    def parse_problems(self) -> dict[str, str]: ...
    def method_supported(self) -> bool: ...
    def model_value(self) -> str: ...
    def model_display_name(self) -> str: ...
    def model_problem(self, trust_remote_code: bool, allow_pickle_weights: bool) -> tuple[str, str]: ...
    def data_result(self) -> Any: ...  # .path .loaded (.rows_kept, .hub) .report .supported_methods, or None
    def data_failure(self) -> Any: ...  # .path .message, or None
    def data_path(self) -> str: ...
    def data_override(self) -> dict: ...
    def data_reading(self) -> bool: ...


class Launcher(Protocol):
    """Starts worker processes: the window's TrainingController, or a WorkerLauncher."""

    def is_running(self) -> bool: ...
    def start(self, config) -> None: ...
    def resume(self, run_dir: str, granted=None) -> None: ...


@dataclass
class TrainState:
    """What the Train button, the Run menu and the line above the plots show."""

    cfg: Any
    problems: dict[str, str]  # setting -> message, flagged in red
    reason: str  # why Train is off; empty when it is on
    running: bool
    ready_text: str = ""  # the line above the plots; empty: leave it as it is (a run is showing)
    ready_note: str = ""
    data_problem: str = ""  # the refused file and why (step 1 shows it in full)

    @property
    def can_train(self) -> bool:
        return not self.reason

    @property
    def train_enabled(self) -> bool:
        return self.can_train and not self.running


@dataclass
class StartOutcome:
    started: bool
    cfg: Any = None
    problems: dict[str, str] = field(default_factory=dict)
    reason: str = ""  # Train was off: the status line says why
    refusals: list[tuple[str, str]] = field(default_factory=list)  # the checks before a run said no
    declined: bool = False  # the user did not allow the model's code or weights


@dataclass
class ResumeOutcome:
    started: bool
    message: str = ""  # for the status line
    title: str = ""  # the banner's title when the checks refused it
    lines: list[str] = field(default_factory=list)  # the banner's text, one problem each
    summary: Any = None
    history: list = field(default_factory=list)  # the events the plots go on from


class RunPresenter:
    """The Train tab's decisions. ``ask_permission(subject) -> bool`` asks the user to let a
    model run code or load pickle weights; without one, nothing that needs it starts."""

    def __init__(self, launcher: Launcher, grants: GrantStore,
                 ask_permission: Callable[[Any], bool] | None = None):
        self.launcher = launcher
        self.grants = grants
        self.ask_permission = ask_permission or (lambda subject: False)
        # ``free_space(folder) -> bytes`` for the disk check before a run; None asks the
        # operating system. Replaceable, so tests can simulate a full disk.
        self.free_space = None

    # ------------------------------------------------------------ the config
    def build_config(self, form: TrainForm):
        """The config the Train button would start, and every problem with it (field -> message)."""
        cfg, problems, _model_problem = self._collect(form)
        return cfg, problems

    def _collect(self, form: TrainForm):
        method = form.method()
        problems = dict(form.parse_problems())
        values = {k: v for k, v in form.values().items() if k not in problems}
        result = form.data_result()
        override = form.data_override()
        values.update(
            model=form.model_value(),
            data_path=result.path if result else form.data_path(),
            data_format=override.get("format") or "",
            column_map=override.get("column_map") or None,
        )
        hub = getattr(result.loaded, "hub", None) if result else None
        if hub:  # the split and subset picked in the hub picker, and the commit read: the run trains what was shown
            values.update(data_split=hub["split"], data_subset="" if hub["subset"] == "default" else hub["subset"],
                          data_revision=commit_of(hub.get("revision") or ""))
        elif result is not None:  # a file or folder: a hub subset or revision left from an earlier run would be refused
            values.update(data_subset="", data_revision="")
        cfg = default_config(method)
        for name, value in values.items():
            try:
                cfg = replace_values(cfg, {name: value})
            except ConfigError as exc:
                for field_name, message in exc.problems:
                    problems.setdefault(field_name, message)
        cfg = with_stored_grants(cfg, self.grants)  # what the user allowed for this model's exact files
        for field_name, message in validate(cfg):
            problems.setdefault(field_name, message)
        # Cheap enough for every keystroke: the model on disk, and the loaded data's lengths.
        model_problem, setting = form.model_problem(cfg.trust_remote_code, cfg.allow_pickle_weights)
        if model_problem and setting in PERMISSION_HINTS:
            problems.setdefault(setting, PERMISSION_HINTS[setting])
        if result is not None:
            for field_name, message in max_length_problems(cfg, getattr(result, "report", None)):
                problems.setdefault(field_name, message)
        return cfg, problems, model_problem

    def state(self, form: TrainForm) -> TrainState:
        """Whether Train can start, and what the button and the ready line say."""
        cfg, problems, model_problem = self._collect(form)
        result, failure = form.data_result(), form.data_failure()
        running = self.launcher.is_running()
        reason = ""
        if form.data_reading():
            reason = "Reading the dataset…"
        elif result is None:
            reason = ("The dataset cannot be used yet: see the message in step 1."
                      if failure else "Load a dataset first: drop a file anywhere on the window.")
        elif not form.method_supported():
            reason = "This dataset does not support the chosen method."
        elif model_problem:
            reason = f"Model: {model_problem}"
        elif problems:
            reason = settings_reason(problems)
        state = TrainState(cfg, problems, reason, running, data_problem=data_problem(failure))
        if state.can_train:
            # What Max length will do to long examples, before anything starts (the worker
            # says the same once it has counted with the real tokenizer).
            report = getattr(result, "report", None)
            state.ready_text = (f"Ready to train {method_label(cfg.method)} on {Path(result.path).name} "
                                f"({result.loaded.rows_kept:,} rows) with {form.model_display_name()}.")
            state.ready_note = " ".join(max_length_notes(cfg, report) + method_advice(cfg, report))
        elif not running:
            state.ready_text = ("Not ready to train yet." if result is not None
                                else "Load a dataset, pick a method, press Train.")
        return state

    def preflight(self, cfg, form: TrainForm) -> list[tuple[str, str]]:
        """What would stop ``cfg`` before its first step: the model, the runs folder, the disk.

        For a hub id that is not cached this tries to reach huggingface.co (up to 3 s,
        on Train only); the data was measured when it was loaded, so it is not read again."""
        return run_preflight(cfg, data_report=getattr(form.data_result(), "report", None), measure_data=False,
                             free_space=self.free_space)

    # ------------------------------------------------------ starting, resuming
    def start(self, form: TrainForm, before_launch: Callable[[Any], None] | None = None) -> StartOutcome:
        """Start the run the form describes, unless something stops it first; the outcome says
        what. ``before_launch(cfg)`` runs once every check has passed, just before the worker."""
        if self.launcher.is_running():
            return StartOutcome(False, reason="A run is in progress.")
        state = self.state(form)
        if not state.can_train:
            return StartOutcome(False, state.cfg, state.problems, reason=state.reason)
        cfg, problems = state.cfg, state.problems
        if not self.confirm_permissions(cfg):
            return StartOutcome(False, cfg, problems, declined=True)
        refusals = self.preflight(cfg, form)
        if refusals:
            return StartOutcome(False, cfg, problems, refusals=refusals)
        if before_launch is not None:
            before_launch(cfg)
        self.launcher.start(cfg)
        return StartOutcome(True, cfg, problems)

    def resume(self, run_dir: str, before_launch: Callable[[ResumeOutcome], None] | None = None) -> ResumeOutcome:
        """Continue a stopped or crashed run from its last checkpoint. ``before_launch(outcome)``
        runs once every check has passed (the outcome holds the run's summary and history)."""
        if self.launcher.is_running():
            return ResumeOutcome(False, "A run is in progress; stop it before resuming another.")
        from backend.runs.folder import current_attempt_events, read_events, summarize_run

        events = read_events(run_dir)
        summary = summarize_run(run_dir, events)
        if not summary.resumable:
            why = "it saved no checkpoint" if summary.checkpoint_step is None else f"it is {summary.status}"
            return ResumeOutcome(False, f"{Path(run_dir).name} cannot be resumed: {why}.", summary=summary)
        granted = self.granted_run_config(run_dir)
        if granted is False:
            return ResumeOutcome(False, summary=summary)  # the user said no; the question was the message
        permissions = {p: True for p in ("trust_remote_code", "allow_pickle_weights") if getattr(granted, p, False)}
        refusals = resume_problems(run_dir, free_space=self.free_space, permissions=permissions)
        if refusals:
            lines = describe_problems(refusals, keys=False)
            return ResumeOutcome(False, f"The run was not resumed: {lines[0][:140]}",
                                 f"{summary.name} was not resumed", lines, summary)
        outcome = ResumeOutcome(True, f"Resuming {summary.name} from step {summary.checkpoint_step}…",
                                summary=summary, history=current_attempt_events(events))
        if before_launch is not None:
            before_launch(outcome)
        self.launcher.resume(run_dir, granted=granted or None)
        return outcome

    # ------------------------------------------------------------ permissions
    def confirm_permissions(self, cfg) -> bool:
        """Every permission the settings turn on must be the user's, confirmed for these files."""
        return all(self.ask_permission(subject) for subject in ungranted_subjects(cfg, self.grants))

    def granted_run_config(self, run_dir: str):
        """A run folder's config with the permissions its model needs, each confirmed by the user
        (remembered grants count; the folder itself grants nothing). False when the user said no;
        None when the config cannot be read (the caller's checks say so)."""
        from backend.runs.folder import load_run_config

        try:
            cfg = load_run_config(run_dir)
        except (ConfigError, OSError):
            return None
        return self.granted_config(cfg)

    def confirm_model_code(self, model: str) -> str:
        """For the Compare tab: "ok", "granted" (asked now, and allowed) or "refused"."""
        before = self.grants.grants()
        # Only the model's permissions matter here; any method's config carries them.
        if self.granted_config(default_config(DEFAULT_METHOD, model=model)) is False:
            return "refused"
        return "granted" if self.grants.grants() != before else "ok"

    def granted_config(self, cfg):
        """``cfg`` with each permission its model needs, asked for unless already granted; False on a no."""
        from backend.models.source import ModelSourceError, resolve_checked_model

        cfg = with_stored_grants(cfg, self.grants)
        for _ in range(2):  # a model can need both permissions
            try:
                resolve_checked_model(cfg.model, trust_remote_code=cfg.trust_remote_code,
                                      allow_pickle_weights=cfg.allow_pickle_weights)
                return cfg
            except ModelSourceError as exc:
                subject = model_subject(cfg.model, exc.setting) if exc.setting != "model" else None
                if subject is None:
                    return cfg  # not a permission problem: the resume or compare checks report it
                if not self.ask_permission(subject):
                    return False
                cfg = replace_values(cfg, {exc.setting: True})
        return cfg


def settings_reason(problems: dict[str, str]) -> str:
    """Why Train is refused, naming the settings, so the user need not hunt for the red."""
    if len(problems) == 1:
        return "Fix this setting first: " + describe_problems(list(problems.items()), keys=False)[0]
    labels = ", ".join(dict.fromkeys(field_label(name) for name in problems))
    return f"Fix the {len(problems)} settings marked in red: {labels}."


def data_problem(failure) -> str:
    """The refused file and why, its name first (the data layer's messages usually lead with it)."""
    if failure is None:
        return ""
    name = Path(failure.path).name
    return failure.message if name in failure.message else f"{name}: {failure.message}"


def refusal_text(refusals: list[tuple[str, str]]) -> tuple[str, list[str]]:
    """The banner's title and lines when the checks before a run refused it."""
    lines = describe_problems(refusals, keys=False)
    return "Training was not started" + (f": {len(lines)} problems to fix first" if len(lines) > 1 else ""), lines


# ---------------------------------------------------------------- without Qt
@dataclass
class LoadedData:
    """A dataset read in this thread: what the presenter needs of the window's load result."""

    path: str
    loaded: Any  # backend.data.loading.LoadedDataset
    report: Any  # backend.data.report.DataReport
    supported_methods: list[str]


@dataclass
class RefusedData:
    path: str
    message: str


class PlainForm:
    """A TrainForm held in plain values: for tests and scripts that drive the presenter.

    The model is checked as the window's model panel checks it; the data is read in this
    thread with the studio's own loader and report (lengths counted in characters)."""

    def __init__(self, method: str = DEFAULT_METHOD, values: dict[str, Any] | None = None, model: str = "",
                 parse_problems: dict[str, str] | None = None):
        self.method_key = method
        self.settings = dict(values or {})
        self.model = model
        self.problems = dict(parse_problems or {})
        self.result: LoadedData | None = None
        self.failure: RefusedData | None = None
        self.path = ""
        self.override: dict = {}

    def load_data(self, path: str | Path, data_format: str = "", column_map: dict | None = None) -> None:
        from backend.data.formats import DatasetError
        from backend.data.loading import load_dataset_file
        from backend.data.report import build_report

        self.path, self.result, self.failure = str(path), None, None
        self.override = {"format": data_format or None, "column_map": column_map or None}
        try:
            loaded = load_dataset_file(path, format=data_format or None, column_map=column_map or None)
        except (DatasetError, OSError) as exc:
            self.failure = RefusedData(str(path), str(exc))
            return
        self.result = LoadedData(str(path), loaded, build_report(loaded), list(loaded.supported_methods))

    # -- TrainForm
    def method(self) -> str:
        return self.method_key

    def values(self) -> dict[str, Any]:
        return dict(self.settings)

    def parse_problems(self) -> dict[str, str]:
        return dict(self.problems)

    def method_supported(self) -> bool:
        return self.result is None or self.method_key in self.result.supported_methods

    def model_value(self) -> str:
        return self.model

    def model_display_name(self) -> str:
        return Path(self.model).name if self.model else "Gemma 3 270M (embedded)"

    def model_problem(self, trust_remote_code: bool, allow_pickle_weights: bool) -> tuple[str, str]:
        if not self.model:
            return "", ""
        from backend.models.source import ModelSourceError, resolve_checked_model

        try:
            resolve_checked_model(self.model, trust_remote_code=trust_remote_code,
                                  allow_pickle_weights=allow_pickle_weights)
        except ModelSourceError as exc:
            return str(exc), exc.setting
        return "", ""

    def data_result(self):
        return self.result

    def data_failure(self):
        return self.failure

    def data_path(self) -> str:
        return self.path

    def data_override(self) -> dict:
        return dict(self.override)

    def data_reading(self) -> bool:
        return False


class WorkerLauncher:
    """A Launcher without Qt: the worker process through the training client, one run at a time."""

    def __init__(self, runs_root: str | Path | None = None):
        self.runs_root = runs_root
        self.run = None  # backend.training.client.TrainingRun of the latest start or resume

    def is_running(self) -> bool:
        return self.run is not None and self.run.is_running()

    def start(self, config) -> None:
        from backend.training.client import TrainingRun

        self.run = TrainingRun.start(config, self.runs_root)

    def resume(self, run_dir: str, granted=None) -> None:
        from backend.training.client import TrainingRun

        self.run = TrainingRun.resume(run_dir, granted=granted)

    def events(self, timeout: float = 300.0):
        """The latest run's events until it ends; asked to stop if it outlives ``timeout``."""
        deadline = time.monotonic() + timeout
        for event in self.run.events():
            yield event
            if time.monotonic() > deadline:
                self.run.request_stop()
        self.run.wait(timeout=60)
        self.run.close()
