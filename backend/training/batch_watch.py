"""What the batches of the last steps held, so a NaN loss is explained by its batch
before anyone blames the learning rate.

A NaN at step 3 that comes back at the same step with a tenth of the learning rate
is a data problem: an example whose answer is empty (its log-probability is an
average over zero tokens), one cut at Max length, lengths far apart, or fp16's
narrow range. The worker wraps the trainer's collator with ``BatchWatch``; it keeps
a few numbers per collated training batch (never the tensors) and, when the loss
turns non-finite, ``diagnose`` turns them into a finding and the advice that fits it.
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

# Label value the collators use for tokens that carry no loss (prompt, padding).
IGNORE_INDEX = -100
# Sequences this many times longer than the batch's median count as an extreme mix.
EXTREME_LENGTH_RATIO = 8


@dataclass
class BatchStats:
    lengths: list[int]
    answer_tokens: list[int]


def batch_stats(batch: dict[str, Any]) -> BatchStats:
    """Sequence lengths and answer tokens of one collated batch, for the layouts TRL 1.16's
    collators produce: chosen and rejected stacked with a ``completion_mask``, ``chosen_``/``rejected_``
    prefixed labels, and single sequences with ``labels`` or a ``completion_mask``."""
    lengths: list[int] = []
    answers: list[int] = []
    for prefix in ("", "chosen_", "rejected_"):
        mask = batch.get(prefix + "attention_mask")
        ids = batch.get(prefix + "input_ids")
        if mask is None and ids is None:
            continue
        if mask is not None:
            lengths += [int(x) for x in mask.sum(-1).tolist()]
        else:
            lengths += [int(ids.shape[-1])] * int(ids.shape[0])
        completion = batch.get(prefix + "completion_mask")
        labels = batch.get(prefix + "labels")
        if completion is not None:
            answers += [int(x) for x in completion.sum(-1).tolist()]
        elif labels is not None:
            answers += [int(x) for x in (labels != IGNORE_INDEX).sum(-1).tolist()]
    return BatchStats(lengths, answers)


class BatchWatch:
    """A collator wrapper remembering the stats of the last ``keep`` training batches."""

    def __init__(self, collator: Callable, keep: int):
        self.collator = collator
        self.recent: deque[BatchStats] = deque(maxlen=max(1, keep))

    def __call__(self, examples):
        batch = self.collator(examples)
        try:
            self.recent.append(batch_stats(batch))
        except Exception:  # noqa: BLE001 - watching must never break a batch
            pass
        return batch


def watch_training_batches(trainer, keep: int) -> BatchWatch:
    """Wrap ``trainer``'s collator for training batches only: evaluation batches go
    through the plain collator, so a NaN is never explained by a held-out batch."""
    raw = trainer.data_collator
    watch = BatchWatch(raw, keep)
    trainer.data_collator = watch
    plain_eval_loader = trainer.get_eval_dataloader

    def eval_loader(*args, **kwargs):
        trainer.data_collator = raw
        try:
            return plain_eval_loader(*args, **kwargs)
        finally:
            trainer.data_collator = watch

    trainer.get_eval_dataloader = eval_loader
    return watch


@dataclass
class Finding:
    summary: str  # what the batches held
    hint: str  # what to do, most likely cause first
    causes: list[str] = field(default_factory=list)  # empty_answers, extreme_lengths, fp16, learning_rate


def diagnose(recent: list[BatchStats], *, max_length: int, fp16: bool, learning_rate: float,
             policy: str = "truncate_left") -> Finding:
    lengths = [n for s in recent for n in s.lengths]
    answers = [n for s in recent for n in s.answer_tokens]
    causes: list[str] = []
    advice: list[str] = []
    if not lengths:
        summary = "No batch of that step was recorded."
    else:
        empty = sum(1 for a in answers if a == 0)
        cut = sum(1 for n in lengths if n >= max_length)
        median = statistics.median(lengths)
        summary = (f"The batches of the steps before the NaN held {len(lengths)} sequences of "
                   f"{min(lengths)}-{max(lengths)} tokens (median {median:g})")
        if answers:
            summary += f", with {min(answers)}-{max(answers)} answer tokens each"
        summary += "; "
        findings = []
        if empty:
            findings.append(f"{empty} had no answer tokens at all")
            causes.append("empty_answers")
            fix = ("Long prompts is already truncate_left, so look for answers that are empty or only "
                   "whitespace in the data" if policy == "truncate_left"
                   else "Set Long prompts to truncate_left (cut prompts from the start) or drop")
            advice.append("An empty answer makes the loss NaN whatever the learning rate (its log-probability is "
                          f"an average over zero tokens). {fix}, or raise Max length above {max_length}.")
        if cut:
            # Said, not blamed: a cut answer still has tokens, and a prompt cut by truncate_left
            # fills Max length exactly.
            findings.append(f"{cut} reached Max length ({max_length}), where anything longer is cut")
        if max(lengths) >= EXTREME_LENGTH_RATIO * max(median, 1):
            findings.append(f"the longest was {max(lengths) / max(median, 1):.0f}× the median")
            causes.append("extreme_lengths")
            advice.append("Very uneven lengths in one batch: lower Max length, or use batch size 1 with more "
                          "gradient accumulation.")
        summary += "; ".join(findings or ["none was empty or far longer than the rest"]) + "."
    if fp16:
        causes.append("fp16")
        advice.append("Training ran in fp16 (this GPU has no bf16), whose range overflows easily: lower the "
                      "learning rate and Max length, or train on a GPU with bf16.")
    if not causes:
        causes.append("learning_rate")
        advice.append(f"No batch held an empty or cut answer and training did not run in fp16, so the likely "
                      f"cause is the learning rate ({learning_rate:g}): lower it about 10x and keep Max gradient "
                      "norm at 1.0.")
    else:
        advice.append(f"Only if none of that applies, lower the learning rate ({learning_rate:g}).")
    return Finding(summary=summary, hint=" ".join(advice), causes=causes)
