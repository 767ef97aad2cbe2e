"""The training worker process: ``python -m backend.training.worker RUN_DIR [--resume]``.

It reads ``config.yaml`` from the run folder, trains, and reports through events:
one JSON object per line on the stdout it was started with (and appended to
``metrics.jsonl``). Everything else the libraries print goes to the worker log,
because the real stdout is moved onto the log at start; a stray ``print`` can
never corrupt the event stream. A line "stop" on stdin, SIGTERM, or stdin
closing (the studio went away) asks for a cooperative stop: the adapter is
saved at the next step.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Callable

from backend.core.events import (Event, PhaseChanged, RunFailed, RunFinished, RunStarted, WorkerWarning)
from backend.testing.fault_injection import hold_phase, planned_faults
from backend.core.process_ranks import is_main_process, record_rank_agreement
from backend.runs.folder import (ADAPTER_DIR, CHECKPOINTS_DIR, EVAL_SPLIT_FILE, PID_FILE, latest_checkpoint,
                                load_run_config, open_metrics_for_append)


class EventChannel:
    """Writes events to the supervisor's pipe and to ``metrics.jsonl``."""

    def __init__(self, run_dir: Path, stream=None):
        self.metrics = open_metrics_for_append(run_dir)
        self.stream = stream
        self.lock = threading.Lock()

    def emit(self, event: Event) -> None:
        line = event.to_json() + "\n"
        with self.lock:
            self.metrics.write(line)
            self.metrics.flush()
            if self.stream is not None:
                try:
                    self.stream.write(line)
                    self.stream.flush()
                except (BrokenPipeError, ValueError, OSError):
                    self.stream = None  # the supervisor is gone; the run folder still gets everything


def take_over_stdout() -> object:
    """Keep the original stdout for events only and point fd 1 at the log (fd 2)."""
    event_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
    return os.fdopen(event_fd, "w", buffering=1, encoding="utf-8")


# Before training starts there is nothing to save, and the calls that take long
# there (loading weights, converting a GGUF, tokenizing) never look at a stop
# flag; so a stop in these phases ends the process at once. Every file those
# phases write is written atomically, so nothing is left half-done.
EXIT_AT_ONCE_PHASES = ("starting", "loading_model", "preparing_data")


class WorkerState:
    """What the main thread is doing, shared with the thread that hears stop requests."""

    def __init__(self, run_dir: Path, resume: bool, emit: Callable[[Event], None] | None = None):
        self.run_dir = run_dir
        self.resume = resume
        self.emit = emit
        self.phase = "starting"
        self.started = time.time()
        # The run clock (backend.runs.clock) goes on from where earlier attempts left it.
        self.clock_start = self.started - (earlier_attempts_seconds(run_dir) if resume else 0.0)
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.faults = planned_faults()
        self.cfg = None  # the run's config, once read: failure hints name the method's own settings

    def enter_phase(self, phase: str, message: str) -> None:
        with self.lock:
            if self.stop.is_set() and phase in EXIT_AT_ONCE_PHASES:
                raise StoppedBeforeTraining()
            self.phase = phase
        if self.emit is not None:
            self.emit(PhaseChanged(phase=phase, message=message, elapsed_seconds=self.elapsed()))
        hold_phase(self.faults, phase)

    def elapsed(self) -> float:
        return time.time() - self.clock_start

    def request_stop(self, why: str) -> None:
        print(why, flush=True)
        with self.lock:
            self.stop.set()
            if self.phase in EXIT_AT_ONCE_PHASES and self.emit is not None:
                self.emit(stopped_before_training(self))
                # Holding the lock keeps the main thread from starting to train meanwhile.
                _exit_now(0, self.run_dir)
        from backend.graders import when_grader_hangs

        # The trainer looks at the stop flag between steps only; a grader that never returns would hold it.
        when_grader_hangs(self._end_for_stuck_grader)

    def _end_for_stuck_grader(self, failure) -> None:
        if self.emit is not None:
            self.emit(RunFailed(kind=failure.failure_kind, message=str(failure), hint=failure.hint,
                                elapsed_seconds=self.elapsed()))
        _exit_now(1, self.run_dir)


def earlier_attempts_seconds(run_dir: Path) -> float:
    from backend.runs.clock import run_duration
    from backend.runs.folder import read_events

    return run_duration(read_events(run_dir)) or 0.0


def _exit_now(code: int, run_dir: Path) -> None:
    try:
        (run_dir / PID_FILE).unlink()
    except OSError:
        pass
    sys.stdout.flush()
    os._exit(code)


def watch_for_stop(state: WorkerState) -> None:
    def read_stdin():
        try:
            for line in sys.stdin:
                if line.strip() == "stop":
                    state.request_stop("Stop requested.")
        except (OSError, ValueError):
            pass
        # EOF: the supervisor closed our stdin or died. Finish cleanly rather than orphaned.
        if not state.stop.is_set():
            state.request_stop("Supervisor went away; stopping.")

    threading.Thread(target=read_stdin, name="stop-watcher", daemon=True).start()

    def on_sigterm(signum, frame):
        if state.stop.is_set():
            raise SystemExit(143)  # a second SIGTERM means now
        # Not state.request_stop: a signal handler must not wait for the lock the
        # interrupted main thread may hold. The watcher thread is the one that exits.
        state.stop.set()
        threading.Thread(target=state.request_stop, args=("Terminate requested; stopping.",), daemon=True).start()

    signal.signal(signal.SIGTERM, on_sigterm)


class StoppedBeforeTraining(Exception):
    pass


def stopped_before_training(state: WorkerState) -> RunFinished:
    """A stop before the first step: the run folder is as it was (a resumed run keeps its checkpoint)."""
    checkpoint = latest_checkpoint(state.run_dir) if state.resume else None
    step = int(checkpoint.name.rsplit("-", 1)[1]) if checkpoint else 0
    adapter = state.run_dir / ADAPTER_DIR
    return RunFinished(adapter_path=str(adapter) if (adapter / "adapter_config.json").exists() else "",
                       stopped=True, step=step, total_steps=0, elapsed_seconds=state.elapsed(),
                       summary={})


def run_training(state: WorkerState) -> int:
    """Train per ``run_dir/config.yaml``. Returns the process exit code. Never raises."""
    emit = state.emit
    try:
        return _train(state)
    except StoppedBeforeTraining:
        emit(stopped_before_training(state))
        return 0
    except BaseException as exc:  # noqa: BLE001 - every failure must become an event
        kind, message, hint = classify_failure(exc, state.cfg)
        emit(RunFailed(kind=kind, message=message, hint=hint, traceback=traceback.format_exc(),
                       elapsed_seconds=state.elapsed()))
        print(traceback.format_exc(), file=sys.stderr, flush=True)
        return 1


def _check_stop(stop: threading.Event) -> None:
    if stop.is_set():
        raise StoppedBeforeTraining()


def _train(state: WorkerState) -> int:
    from backend.runs.config import check

    run_dir, emit, stop, resume = state.run_dir, state.emit, state.stop, state.resume
    from backend.runs.code_permissions import apply_launch_grants

    # The run folder grants nothing: permissions come from this launch, checked against the files now.
    cfg = state.cfg = apply_launch_grants(check(load_run_config(run_dir)))
    if resume:  # the rows the run started on, not a hub dataset's newer commit
        from backend.data.hub import with_recorded_revision

        cfg = state.cfg = with_recorded_revision(cfg, run_dir)
    state.enter_phase("loading_model", "Loading the model")

    from backend.models.source import local_model_folder, model_source_for_config

    # Refuses pickle-only weights and remote code the settings do not allow, before torch is imported.
    source = model_source_for_config(cfg)
    model_path = local_model_folder(source, log=lambda m: print(m, flush=True))
    _check_stop(stop)

    import torch  # noqa: F401 - heavy imports happen after the cheap checks above
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()

    from backend.training.event_callback import EvaluationStopped, EventCallback, peak_memory_mb
    from backend.training.trainer_builders import (apply_speed_options, build_model, build_tokenizer, build_trainer,
                                                   build_trl_args, choose_precision)

    precision = choose_precision()
    tokenizer = build_tokenizer(model_path, cfg)
    model = build_model(model_path, cfg, precision)
    _check_stop(stop)

    state.enter_phase("preparing_data", "Preparing the dataset")
    train_ds, eval_ds = prepare_datasets(cfg, run_dir)
    eval_ds = cap_evaluation_rows(cfg, eval_ds)
    train_ds, eval_ds, answer_tokens = apply_long_prompt_policy(cfg, tokenizer, train_ds, eval_ds, emit)
    _check_stop(stop)

    # Options left at their defaults are chosen for this data and device; each choice is logged,
    # and the memory estimate kept for comparison with the peak is of the run as chosen.
    cfg = state.cfg = apply_speed_options(cfg, model, tokenizer, train_ds, run_dir if is_main_process() else None,
                                          answer_tokens=answer_tokens)
    device = describe_precision(precision)
    estimate = estimate_memory_quietly(cfg, model_path, answer_tokens)

    def on_train_begin(trainer_state):
        model_ = trainer.model
        total = sum(p.numel() for p in model_.parameters())
        trainable = sum(p.numel() for p in model_.parameters() if p.requires_grad)
        emit(RunStarted(run_dir=str(run_dir), method=cfg.method, config=_config_dict(cfg), device=device,
                        total_params=int(total), trainable_params=int(trainable), total_steps=int(trainer_state.max_steps),
                        train_rows=len(train_ds), eval_rows=len(eval_ds) if eval_ds is not None else 0,
                        resumed_from_step=int(trainer_state.global_step),
                        memory_estimate_mb=(estimate or {}).get("total_mb")))
        state.enter_phase("training", "Training")

    callback = EventCallback(emit, stop, on_train_begin=on_train_begin, clock_start=state.clock_start,
                             eval_rows=len(eval_ds) if eval_ds is not None else 0)
    callbacks = [callback]
    if state.faults:
        from backend.testing.fault_injection import fault_callback

        callbacks.append(fault_callback(state.faults))
    from backend.training.tracking import tensorboard_dir

    # transformers 5 takes TensorBoard's folder from the environment only: beside metrics.jsonl.
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(tensorboard_dir(run_dir))
    args = build_trl_args(cfg, precision, str(run_dir / CHECKPOINTS_DIR), has_eval=eval_ds is not None)
    trainer = build_trainer(cfg, model, tokenizer, args, train_ds, eval_ds, callbacks)
    # The Trainer's own printer dumps raw dicts into the log; the callback writes readable lines instead.
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    check_rows_survived_tokenizing(cfg, len(train_ds), trainer.train_dataset, emit)
    from backend.training.batch_watch import watch_training_batches

    batches = watch_training_batches(trainer, keep=cfg.gradient_accumulation_steps * cfg.logging_steps)
    callback.tokens_per_example = tokens_per_example(trainer.train_dataset)
    from backend.methods import find_method

    if getattr(find_method(cfg.method), "samples", False):
        callback.watch_samples(trainer)
    _check_stop(stop)

    resume_from = None
    if resume:
        checkpoint = latest_checkpoint(run_dir)
        if checkpoint is None:
            emit(WorkerWarning(message="No checkpoint to resume from; training starts from the beginning.",
                               kind="resume"))
        else:
            resume_from = str(checkpoint)
            print(f"Resuming from {checkpoint}", flush=True)
    try:
        trainer.train(resume_from_checkpoint=resume_from)
    except EvaluationStopped:
        print("Evaluation cut short by the stop request.", flush=True)
    progress = trainer.state
    if stop.is_set() and callback.nan_step is None:
        save_stop_checkpoint(trainer, run_dir)

    if callback.nan_step is not None:
        from backend.training.batch_watch import diagnose

        finding = diagnose(list(batches.recent), max_length=cfg.max_length, fp16=precision.fp16,
                           learning_rate=cfg.learning_rate, policy=getattr(cfg, "long_prompts", "truncate_left"))
        print(f"NaN diagnosis: {finding.summary} Causes: {', '.join(finding.causes)}", flush=True)
        kept = keep_last_good_adapter(run_dir, callback.nan_step) if is_main_process() else None
        raise NonFiniteLoss(callback.nan_step, kept, finding)

    stopped = stop.is_set() and progress.global_step < progress.max_steps
    if eval_ds is not None and not stop.is_set() and callback.last_eval_step != progress.global_step:
        state.enter_phase("evaluating", "Final evaluation on the held-out rows")
        callback.begin_evaluation(progress.global_step, final=True)
        try:
            trainer.evaluate()
        except EvaluationStopped:
            stopped = True
    state.enter_phase("saving", "Saving the adapter")
    check_ranks_agree(trainer.model, run_dir, emit)
    adapter = save_adapter_atomically(trainer, run_dir / ADAPTER_DIR, describe=head_marker_writer(cfg))
    peak, kind = peak_memory_mb()
    record_memory_quietly(run_dir, estimate, peak, kind)
    summary = dict(callback.summary)
    summary.update({k: v for k, v in callback.last_metrics.items()})
    summary.update({f"eval_{k}": v for k, v in callback.last_eval.items()})
    emit(RunFinished(adapter_path=str(adapter), stopped=stopped, step=progress.global_step,
                     total_steps=progress.max_steps, elapsed_seconds=state.elapsed(),
                     summary=summary, peak_memory_mb=peak))
    return 0


def estimate_memory_quietly(cfg, model_path: str, answer_tokens: int | None = None) -> dict | None:
    """The pre-training estimate, kept to compare with the measured peak. Never fails a run."""
    try:
        from backend.core.device_info import describe_device
        from backend.training.memory_estimate import estimate_memory, model_shape

        return estimate_memory(cfg, describe_device(), shape=model_shape(model_path),
                               answer_tokens=answer_tokens).to_dict()
    except Exception as exc:  # noqa: BLE001 - an estimate is advice, not a requirement
        print(f"Memory estimate unavailable: {exc}", flush=True)
        return None


def record_memory_quietly(run_dir: Path, estimate: dict | None, peak: float, kind: str) -> None:
    try:
        from backend.training.memory_estimate import record_measured_peak

        record_measured_peak(run_dir, estimate, peak, kind)
    except Exception as exc:  # noqa: BLE001
        print(f"Could not record memory figures: {exc}", flush=True)


class NonFiniteLoss(RuntimeError):
    def __init__(self, step: int, kept_step: int | None, finding=None):
        if kept_step is not None:
            kept = (f"The adapter from step {kept_step}, the last checkpoint with finite weights, "
                    f"was kept in {ADAPTER_DIR}/.")
        else:
            kept = "No checkpoint from before that step exists, so no adapter was kept."
        found = f" {finding.summary}" if finding is not None else ""
        super().__init__(f"The loss became NaN or infinite at step {step}; training stopped there.{found} {kept}")
        self.step = step
        self.kept_step = kept_step
        self.finding = finding  # backend.training.batch_watch.Finding: what the step's batches held


def keep_last_good_adapter(run_dir: Path, bad_step: int) -> int | None:
    """Make the newest checkpoint from before ``bad_step`` whose weights are all
    finite the run's adapter. Weights can turn NaN a few steps before the loss
    shows it, so a checkpoint is trusted only after its tensors are checked; a
    diverged one is renamed out of Resume's way (kept, for a post-mortem), or
    Resume would start from NaN weights again."""
    import shutil

    import torch
    from safetensors.torch import load_file

    checkpoints = []
    for folder in (run_dir / CHECKPOINTS_DIR).glob("checkpoint-*"):
        step = folder.name.rsplit("-", 1)[1]
        if step.isdigit() and (folder / "adapter_model.safetensors").exists():
            checkpoints.append((int(step), folder))
    for step, folder in sorted(checkpoints, reverse=True):
        tensors = load_file(str(folder / "adapter_model.safetensors"))
        if step >= bad_step or not all(torch.isfinite(t).all() for t in tensors.values()):
            print(f"Checkpoint {folder.name} has diverged weights; renamed to diverged-{folder.name}.", flush=True)
            os.replace(folder, folder.with_name(f"diverged-{folder.name}"))
            continue
        tmp = run_dir / (ADAPTER_DIR + ".saving")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        for name in ("adapter_model.safetensors", "adapter_config.json", "README.md"):
            if (folder / name).exists():
                shutil.copy2(folder / name, tmp / name)
        _replace_folder(tmp, run_dir / ADAPTER_DIR)
        return step
    return None


def _config_dict(cfg) -> dict:
    from backend.runs.config import to_dict

    return to_dict(cfg)


def describe_precision(precision) -> dict:
    import torch

    info = {"kind": precision.device, "precision": precision.label, "torch": torch.__version__}
    if precision.device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info.update(name=props.name, memory_mb=props.total_memory / 2**20)
    else:
        import platform

        info.update(name=platform.processor() or platform.machine(), threads=torch.get_num_threads())
    return info


def prepare_datasets(cfg, run_dir: Path):
    """Load, normalise and split the data; the held-out rows are written to the run
    folder so the Compare tab and later evaluations use exactly the same split."""
    from backend.data.loading import dataset_for_method
    from backend.data.run_data import load_run_data, record_data_source

    if not cfg.data_path:
        from backend.data.loading import DatasetError

        raise DatasetError("No dataset was given. Choose a dataset file or folder.")
    loaded = load_run_data(cfg)
    if is_main_process():  # several training processes read the same data; one writes about it
        record_data_source(run_dir, loaded)
    for note in getattr(loaded, "notes", []) or []:
        print(f"Data: {note}", flush=True)
    if loaded.dropped:
        print(f"Data: {loaded.rows_dropped} rows dropped (see `alignstudio data inspect`).", flush=True)
    dataset = dataset_for_method(loaded, cfg.method)
    eval_ds = None
    n_eval = int(round(len(dataset) * cfg.eval_fraction))
    if loaded.heldout is not None:  # the dataset's own test split
        eval_ds = dataset_for_method(loaded.heldout, cfg.method).shuffle(seed=cfg.seed)
    elif cfg.eval_fraction > 0 and n_eval >= 1 and len(dataset) - n_eval >= 1:
        split = dataset.train_test_split(test_size=n_eval, seed=cfg.seed, shuffle=True)
        dataset, eval_ds = split["train"], split["test"]
    if eval_ds is not None and is_main_process():
        with (run_dir / EVAL_SPLIT_FILE).open("w", encoding="utf-8") as fh:
            for row in eval_ds:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"Data: {len(dataset)} training rows, {0 if eval_ds is None else len(eval_ds)} held out.", flush=True)
    return dataset, eval_ds


def cap_evaluation_rows(cfg, eval_ds):
    """The rows each evaluation uses: at most ``eval_max_rows`` of the held-out ones
    (the split is already shuffled, so the first rows are a fair sample)."""
    if eval_ds is None or not cfg.eval_max_rows or len(eval_ds) <= cfg.eval_max_rows:
        return eval_ds
    print(f"Data: evaluations use {cfg.eval_max_rows} of the {len(eval_ds)} held-out rows "
          "(Evaluation rows (max)); all of them stay out of training.", flush=True)
    return eval_ds.select(range(cfg.eval_max_rows))


def apply_long_prompt_policy(cfg, tokenizer, train_ds, eval_ds, emit):
    """Examples whose prompt leaves too little room for their answer are cut from the
    prompt's start, dropped or refused per ``cfg.long_prompts``, counted with the model's
    own tokenizer, before TRL sees them (``backend.data.long_prompts``): no example reaches a
    trainer with an empty answer. Also returns the longest trained answer for the memory
    estimate (``memory_estimate.trained_answer_tokens_of_rows``)."""
    from backend.data.long_prompts import fit_dataset, outcome_text, refusal
    from backend.runs.config import ConfigError
    from backend.training.memory_estimate import trained_answer_tokens_of_rows

    policy = getattr(cfg, "long_prompts", "truncate_left") or "truncate_left"
    train_ds, result = fit_dataset(train_ds, tokenizer, cfg.max_length, policy)
    problem = refusal(result.fit, policy, name=Path(cfg.data_path).name)
    if problem:
        raise ConfigError([("max_length", problem)])
    text = outcome_text(result.fit, policy, where="training examples")
    if text:
        print(f"Data: {text}", flush=True)
        emit(WorkerWarning(message=text, kind="long_prompts"))
    if eval_ds is not None:
        # Held-out rows follow the same rule (refuse has judged the data already: cut them).
        eval_ds, held_out = fit_dataset(eval_ds, tokenizer, cfg.max_length,
                                        "truncate_left" if policy == "refuse" else policy)
        text = outcome_text(held_out.fit, policy, where="held-out examples")
        if text:
            print(f"Data (held out): {text}", flush=True)
        if len(eval_ds) == 0:
            eval_ds = None
    return train_ds, eval_ds, trained_answer_tokens_of_rows(cfg, train_ds.column_names, result.fit.longest_answer)


def check_rows_survived_tokenizing(cfg, rows_before: int, tokenized, emit) -> None:
    """TRL's preference trainers drop examples whose prompt alone fills ``max_length``
    (nothing of the answers would be left to compare). A few dropped rows deserve
    a warning; all of them mean the setting contradicts the data."""
    from backend.runs.config import ConfigError

    rows_after = len(tokenized) if tokenized is not None else rows_before
    dropped = rows_before - rows_after
    if dropped <= 0:
        return
    if rows_after == 0:
        raise ConfigError([("max_length", (
            f"Max length ({cfg.max_length} tokens) is shorter than every prompt in the data, so no training "
            f"example is left (all {rows_before} were dropped). Raise Max length above the prompt lengths "
            "shown in the data report, or shorten the prompts."))])
    emit(WorkerWarning(
        message=(f"{dropped} of {rows_before} training rows were dropped because their prompt alone is "
                 f"{cfg.max_length} tokens or longer (Max length). Raise Max length to keep them."),
        kind="rows_dropped"))


def tokens_per_example(dataset) -> float | None:
    """Mean tokens one example costs a forward pass; for trainers that do not log num_tokens."""
    if dataset is None or len(dataset) == 0:
        return None
    cols = [c for c in dataset.column_names if c in ("chosen_input_ids", "rejected_input_ids", "chosen_ids",
                                                     "rejected_ids")]
    cols = cols or [c for c in dataset.column_names if c == "input_ids"]
    if not cols:
        return None
    sample = dataset.select(range(min(len(dataset), 256)))
    total = sum(len(ids) for c in cols for ids in sample[c])
    return total / len(sample)


def save_stop_checkpoint(trainer, run_dir: Path) -> None:
    """A stop between optimizer steps (in gradient accumulation or an evaluation)
    skips the Trainer's own save; without a checkpoint at the stop step, Resume
    would repeat the steps since the last periodic one."""
    step = trainer.state.global_step
    checkpoint = latest_checkpoint(run_dir)
    if step == 0 or (checkpoint is not None and checkpoint.name == f"checkpoint-{step}"):
        return
    try:
        trainer._save_checkpoint(trainer.model, trial=None)  # the Trainer's own format, so resume reads it
    except Exception as exc:  # noqa: BLE001 - the adapter is still saved; resume falls back a few steps
        print(f"Could not save a checkpoint at the stop step: {exc}", flush=True)


def check_ranks_agree(model, run_dir: Path, emit) -> None:
    """With several processes, DDP must have kept every rank's adapter identical;
    ``ranks.json`` records each rank's fingerprint, and a mismatch is reported."""
    record = record_rank_agreement(model, run_dir)
    if record is None:
        return
    if record["identical"]:
        print(f"All {record['world_size']} processes ended with identical adapters.", flush=True)
    else:
        emit(WorkerWarning(message=(f"The {record['world_size']} training processes ended with different "
                                    f"adapters (see {run_dir / 'ranks.json'}); rank 0's was saved."),
                           kind="ranks_differ"))


def head_marker_writer(cfg) -> Callable[[Path], object] | None:
    """A score head's adapter folder also says it is a reward model and on which base
    (``backend.rewards.scoring``), so it loads as one from the folder alone."""
    from backend.training.trainer_builders import model_head

    if model_head(cfg) != "score":
        return None
    from backend.rewards.scoring import write_reward_marker

    return lambda folder: write_reward_marker(folder, cfg)


def save_adapter_atomically(trainer, target: Path, describe: Callable[[Path], object] | None = None) -> Path:
    import shutil

    from backend.core.process_ranks import barrier

    tmp = target.with_name(target.name + ".saving")
    main = is_main_process()
    if main:
        shutil.rmtree(tmp, ignore_errors=True)
    # Every rank takes part (sharded layouts gather the weights); only rank 0 writes.
    trainer.save_model(str(tmp))
    if main:
        if describe is not None:
            describe(tmp)
        _replace_folder(tmp, target)
    barrier()
    return target


def _replace_folder(new: Path, target: Path) -> None:
    """Put ``new`` in place of ``target``; at every moment one complete version exists."""
    import shutil

    if target.exists():
        old = target.with_name(target.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
        os.replace(new, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, target)


# How allocators word running out: CUDA, torch's CPU allocator, cuBLAS, C++.
_OUT_OF_MEMORY_SIGNS = ("out of memory", "can't allocate memory", "cublas_status_alloc_failed", "std::bad_alloc")


def _method_memory_tip(cfg) -> str:
    """The method's own way to save memory, from its spec (e.g. a reference pass it can precompute)."""
    from backend.methods import find_method
    from backend.runs.config import field_label

    spec = find_method(getattr(cfg, "method", "")) if cfg is not None else None
    skip = spec.memory.reference_skip_setting if spec is not None else ""
    return f", turning on {field_label(skip)} (the reference log-probs computed once)," if skip else ","


def classify_failure(exc: BaseException, cfg=None) -> tuple[str, str, str]:
    """(kind, message, hint) for a failure, in words a user can act on."""
    from backend.runs.config import ConfigError

    text = str(exc) or type(exc).__name__
    name = type(exc).__name__
    if isinstance(exc, ConfigError):
        return "bad_config", text, "Fix the setting named above and start again."
    if getattr(exc, "failure_kind", ""):  # a failure that knows its kind and hint (e.g. a broken grader)
        return exc.failure_kind, text, getattr(exc, "hint", "")
    if name == "DatasetError":
        return "bad_data", text, "Run `alignstudio data inspect` on the file to see every problem."
    if name == "ModelSourceError":
        if getattr(exc, "setting", "model") != "model":
            return "bad_model", text, ("Turn on the setting named above only if you trust where the model "
                                       "comes from; otherwise pick another model.")
        return "bad_model", text, "Check the model name or path. Leave it empty for the embedded model."
    if isinstance(exc, NonFiniteLoss):
        if exc.finding is not None:
            return "nan_loss", text, exc.finding.hint
        return "nan_loss", text, (
            "Usual causes: empty or cut answers in the data, fp16 overflow, or a learning rate that is too "
            "high. Check the data report and Max length first, then lower the learning rate (e.g. by 10x).")
    if name == "OutOfMemoryError" or isinstance(exc, MemoryError) or any(
            sign in text.lower() for sign in _OUT_OF_MEMORY_SIGNS):
        return "out_of_memory", f"Out of memory: {text.splitlines()[0][:300]}", (
            "Try a shorter max length, a smaller batch size with more gradient accumulation, "
            "4-bit quantization" + _method_memory_tip(cfg) + " or gradient checkpointing.")
    if isinstance(exc, (KeyboardInterrupt, SystemExit)):
        return "interrupted", "The worker was interrupted.", "Resume the run from its last checkpoint."
    if isinstance(exc, OSError) and ("does not appear to have" in text or "not a valid model" in text
                                     or "Can't load" in text or "couldn't connect" in text.lower()
                                     or "offline" in text.lower()):
        return "bad_model", text.splitlines()[0][:500], (
            "The model could not be loaded. For a hub id you need network access (or a copy in the "
            "Hugging Face cache); otherwise pick a local folder or .gguf file.")
    if isinstance(exc, ImportError) and "bitsandbytes" in text:
        return "environment", text, "Install bitsandbytes, or set quantization to none."
    return "crash", f"{name}: {text.splitlines()[0][:500] if text else name}", (
        "This is unexpected. The worker log in the run folder has the details.")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print("usage: python -m backend.training.worker RUN_DIR [--resume]", file=sys.stderr)
        return 2
    run_dir = Path(argv[0])
    resume = "--resume" in argv
    events_out = take_over_stdout()
    # Under a launcher (accelerate launch, torchrun) every rank runs this; rank 0 alone
    # writes events, metrics.jsonl and the pid file and hears stop requests, which the
    # event callback passes on to the other ranks at the next step.
    main_rank = is_main_process()
    if main_rank:
        (run_dir / PID_FILE).write_text(str(os.getpid()))
        emit = EventChannel(run_dir, events_out).emit
    else:
        emit = _discard_event
    state = WorkerState(run_dir, resume, emit)
    if main_rank:
        watch_for_stop(state)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Progress bars are for terminals; in the log they are walls of carriage returns.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_TQDM", "1")
    try:
        return run_training(state)
    finally:
        if main_rank:
            try:
                (run_dir / PID_FILE).unlink()
            except OSError:
                pass


def _discard_event(event: Event) -> None:
    pass


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    # Skip interpreter teardown: it can hang on CUDA/bitsandbytes threads after a stop.
    os._exit(code)
