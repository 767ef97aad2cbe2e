"""A transformers TrainerCallback that turns the trainer's life into studio events.

It forwards every logged metric under TRL's own key, adds throughput, ETA and
peak memory, watches for NaN losses, and turns a stop request into
``control.should_training_stop`` at the next step (Python threads cannot be
killed; stopping is cooperative). Evaluations report their own progress, and
the ETA counts the evaluations still to come: on a large held-out set they can
take longer than the training itself.
"""

from __future__ import annotations

import math
import resource
import sys
import threading
import time
from typing import Callable

from transformers import TrainerCallback

from backend.core.events import CheckpointSaved, EvalLog, EvalProgress, Event, PhaseChanged, TrainLog, WorkerWarning
from backend.core.process_ranks import any_rank_true, world_size
from backend.runs.clock import evaluations_left

# Before the first evaluation its cost is guessed from the training speed: an
# evaluation batch is a forward pass without the backward one (about a third of a
# training example's work; reference passes make it more, so the guess errs high).
EVAL_COST_PER_TRAIN_EXAMPLE = 0.5
# Evaluation progress is sent at most this often (and at the first and last batch).
EVAL_PROGRESS_EVERY_S = 0.5

# Keys the Trainer logs once at the end of train(); they go into the summary, not the plots.
_END_OF_TRAINING_KEYS = {"train_runtime", "train_samples_per_second", "train_steps_per_second",
                         "total_flos", "train_loss"}


class EvaluationStopped(Exception):
    """Raised from inside an evaluation loop to end it early when a stop is requested:
    the Trainer offers no other way out of an evaluation, which can take minutes."""


def peak_memory_mb() -> tuple[float, str]:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_reserved() / 2**20, "gpu"
    # ru_maxrss is in KiB on Linux and bytes on macOS.
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (rss / 2**20 if sys.platform == "darwin" else rss / 1024), "rss"


class EventCallback(TrainerCallback):
    def __init__(self, emit: Callable[[Event], None], stop_requested: threading.Event,
                 tokens_per_example: float | None = None, on_train_begin: Callable | None = None,
                 clock_start: float | None = None, eval_rows: int = 0):
        self.emit = emit
        # The run clock's zero (backend.runs.clock): the worker's start, less earlier attempts.
        self.clock_start = time.time() if clock_start is None else clock_start
        self.eval_rows = eval_rows
        self.stop_requested = stop_requested
        self.tokens_per_example = tokens_per_example
        self._on_train_begin_hook = on_train_begin
        self.start_time = 0.0
        self.start_step = 0
        self.last_metrics: dict[str, float] = {}
        self.last_eval: dict[str, float] = {}
        self.last_eval_step: int | None = None
        self.summary: dict[str, float] = {}
        self.nan_step: int | None = None
        self._last_log = (0.0, 0, None)  # time, step, num_tokens at the previous log
        self._step_seconds_ema: float | None = None
        self._last_step_time = 0.0
        self._training = False
        self._evaluating = False
        self._eval_started = 0.0
        self._eval_batches_done = 0
        self._eval_final = False
        self._eval_last_sent = 0.0
        self._eval_seconds_per_batch: float | None = None  # measured by the last evaluation
        self._max_steps = 0
        self._eval_steps = 0
        self._eval_batch_size = 1
        self._train_examples_per_step = 1
        self._samples = None  # a SampleCapture once the worker asks for samples (backend.training.sample_capture)

    # -- lifecycle ---------------------------------------------------------
    def on_train_begin(self, args, state, control, **kwargs):
        self.start_time = self._last_step_time = time.time()
        self.start_step = state.global_step
        self._max_steps = state.max_steps
        self._eval_steps = int(args.eval_steps or 0) if str(args.eval_strategy).endswith("steps") else 0
        self._eval_batch_size = max(1, int(args.per_device_eval_batch_size))
        self._train_examples_per_step = max(1, args.per_device_train_batch_size * args.gradient_accumulation_steps)
        self._last_log = (self.start_time, state.global_step, None)
        self._training = True
        if self._on_train_begin_hook:
            self._on_train_begin_hook(state)

    def on_train_end(self, args, state, control, **kwargs):
        self._training = False

    def on_step_end(self, args, state, control, **kwargs):
        now = time.time()
        dt = now - self._last_step_time
        self._last_step_time = now
        # An EMA follows speed changes (warm-up, evaluation pauses) without jitter.
        self._step_seconds_ema = dt if self._step_seconds_ema is None else 0.8 * self._step_seconds_ema + 0.2 * dt
        if any_rank_true(self.stop_requested.is_set(), args.device):
            self.stop_requested.set()  # the worker's after-training steps read it on every rank
            control.should_training_stop = True
            # A checkpoint at the stop step lets Resume continue exactly where the user stopped.
            control.should_save = self.nan_step is None
        elif control.should_evaluate and self.eval_rows:
            # Announced before the step's log and the evaluation: the window shows the
            # evaluation from its first moment, not after its first batch.
            # The Trainer also evaluates after the last step; that one is the final evaluation.
            self.begin_evaluation(state.global_step, final=state.global_step >= state.max_steps)
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = dict(logs or {})
        epoch = float(logs.pop("epoch", state.epoch or 0.0))
        logs.pop("step", None)
        if any(k.startswith("eval_") for k in logs):
            # Eval keys drop their "eval_" prefix so a viewer overlays them on the train curve.
            metrics = {k[5:]: v for k, v in logs.items() if k.startswith("eval_") and _is_number(v)}
            self.last_eval, self.last_eval_step = metrics, state.global_step
            self.emit(EvalLog(step=state.global_step, epoch=epoch, metrics=metrics))
            print(f"eval @ step {state.global_step}  " + _readable(metrics), flush=True)
            return
        end = {k: v for k, v in logs.items() if k in _END_OF_TRAINING_KEYS}
        if end:
            self.summary.update({k: float(v) for k, v in end.items() if _is_number(v)})
        metrics = {k: float(v) for k, v in logs.items() if k not in _END_OF_TRAINING_KEYS and _is_number(v)}
        if not metrics:
            return
        self.last_metrics = metrics
        event = self._train_log(args, state, epoch, metrics)
        self.emit(event)
        self._emit_samples(state.global_step)
        print(f"step {state.global_step}/{state.max_steps}  " + _readable(metrics), flush=True)
        loss = metrics.get("loss")
        if loss is not None and not math.isfinite(loss) and self.nan_step is None:
            self.nan_step = state.global_step
            control.should_training_stop = True
            control.should_save = False  # a checkpoint of diverged weights is worth nothing
            self.emit(WorkerWarning(
                message=f"The loss became {loss} at step {state.global_step}; training stops here.",
                kind="nan_loss"))
        return control

    def _train_log(self, args, state, epoch, metrics) -> TrainLog:
        now = time.time()
        last_time, last_step, last_tokens = self._last_log
        steps = state.global_step - last_step
        tokens_per_second = None
        num_tokens = metrics.get("num_tokens")
        if num_tokens is not None and last_tokens is not None and now > last_time:
            tokens_per_second = (num_tokens - last_tokens) / (now - last_time)
        elif self.tokens_per_example and steps > 0 and now > last_time:
            per_step = self.tokens_per_example * args.per_device_train_batch_size * args.gradient_accumulation_steps
            tokens_per_second = per_step * steps / (now - last_time)
        self._last_log = (now, state.global_step, num_tokens)
        sec_per_step = self._step_seconds_ema
        remaining = max(0, state.max_steps - state.global_step)
        eta = None
        if sec_per_step is not None:
            evals = evaluations_left(state.global_step, state.max_steps, self._eval_steps, bool(self.eval_rows))
            eta = remaining * sec_per_step + evals * self.evaluation_seconds()
        peak, kind = peak_memory_mb()
        return TrainLog(
            step=state.global_step,
            epoch=epoch,
            metrics=metrics,
            total_steps=state.max_steps,
            tokens_per_second=tokens_per_second,
            seconds_per_step=sec_per_step,
            eta_seconds=eta,
            elapsed_seconds=now - self.clock_start,
            peak_memory_mb=peak,
            memory_kind=kind,
        )

    # -- sampled completions ----------------------------------------------
    def watch_samples(self, trainer) -> None:
        """Send the completions ``trainer`` samples and grades (an RL method's trainer)
        with each training log; only the main process speaks for the run."""
        from backend.core.process_ranks import is_main_process
        from backend.training.sample_capture import SampleCapture

        self._samples = SampleCapture(trainer) if is_main_process() else None

    def _emit_samples(self, step: int) -> None:
        capture = self._samples
        if capture is None:
            return
        batch = capture.collect(step)
        if batch is not None:
            self.emit(batch)
        elif capture.broken:
            self._samples = None
            self.emit(WorkerWarning(message=f"The sample table stays empty: {capture.broken}.",
                                    kind="samples"))

    # -- evaluation --------------------------------------------------------
    def eval_batches(self) -> int:
        return math.ceil(self.eval_rows / self._eval_batch_size) if self.eval_rows else 0

    def evaluation_seconds(self) -> float:
        """What one whole evaluation takes: measured once one has run, guessed before."""
        if self._eval_seconds_per_batch is not None:
            return self._eval_seconds_per_batch * self.eval_batches()
        if self._step_seconds_ema is None:
            return 0.0
        per_example = self._step_seconds_ema / self._train_examples_per_step
        return per_example * EVAL_COST_PER_TRAIN_EXAMPLE * self.eval_rows

    def begin_evaluation(self, step: int, final: bool) -> None:
        """An evaluation starts now (the worker calls this for the final one)."""
        self._evaluating = True
        self._eval_final = final
        self._eval_started = time.time()
        self._eval_batches_done = 0
        if self._training:  # the worker announces an evaluation after training itself
            self.phase("evaluating", f"Evaluating on the held-out rows at step {step}")
        self._send_eval_progress(step, force=True)

    def _send_eval_progress(self, step: int, force: bool = False) -> None:
        now = time.time()
        total = self.eval_batches()
        done = min(self._eval_batches_done, total) if total else self._eval_batches_done
        if not force and now - self._eval_last_sent < EVAL_PROGRESS_EVERY_S and done < total:
            return
        self._eval_last_sent = now
        spent = now - self._eval_started
        if done:
            eval_eta = spent / done * max(0, total - done)
        else:
            eval_eta = max(0.0, self.evaluation_seconds() - spent)
        later = 0.0
        if not self._eval_final and self._step_seconds_ema is not None:
            # Evaluations after this one, then the steps left (a final one only if the last step has none).
            evals_after = evaluations_left(step, self._max_steps, self._eval_steps, bool(self.eval_rows)) - 1
            later = (max(0, self._max_steps - step) * self._step_seconds_ema
                     + max(0, evals_after) * (spent + eval_eta))
        self.emit(EvalProgress(step=step, batch=done, total_batches=total, rows=self.eval_rows,
                               final=self._eval_final, eval_eta_seconds=eval_eta, eta_seconds=eval_eta + later,
                               elapsed_seconds=now - self.clock_start))

    def on_prediction_step(self, args, state, control, **kwargs):
        # With several processes an evaluation is cut short on no rank: the others would
        # wait for this one's results. The stop takes effect at the next step instead.
        if self.stop_requested.is_set() and world_size() == 1:
            raise EvaluationStopped()
        if not self._evaluating:  # an evaluation nobody announced (a caller of trainer.evaluate())
            self.begin_evaluation(state.global_step, final=not self._training)
        self._eval_batches_done += 1
        self._send_eval_progress(state.global_step)

    def on_evaluate(self, args, state, control, **kwargs):
        if self._evaluating and self._eval_batches_done:
            self._eval_seconds_per_batch = (time.time() - self._eval_started) / self._eval_batches_done
        self._evaluating = False
        # The evaluation's time is not a step's: the next step's duration starts now.
        self._last_step_time = time.time()
        if self.stop_requested.is_set() and world_size() == 1:  # several ranks agree at the next step
            control.should_training_stop = True
        elif self._training:
            self.phase("training", "Training")

    def on_save(self, args, state, control, **kwargs):
        from pathlib import Path

        path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        self.emit(CheckpointSaved(step=state.global_step, path=str(path)))

    def on_substep_end(self, args, state, control, **kwargs):
        # Between accumulation passes the ranks cannot agree without an extra all-reduce
        # per pass, so with several processes stops wait for the optimizer step.
        if self.stop_requested.is_set() and world_size() == 1:
            control.should_training_stop = True

    def phase(self, phase: str, message: str = "") -> None:
        self.emit(PhaseChanged(phase=phase, message=message, elapsed_seconds=time.time() - self.clock_start))


def _readable(metrics: dict[str, float]) -> str:
    return "  ".join(f"{k}={v:.4g}" for k, v in metrics.items() if not k.endswith(("runtime", "per_second")))


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)
