"""The speed options a bare TRL script leaves off, chosen from the data, the device and the memory estimate.

With ``speed_options: auto`` (the default of the methods that carry these settings) the
studio decides each option a user left at its default, and says why in one line:
gradient checkpointing only when the run would not fit without it, the training batch
as large as the estimate allows at the same effective batch, padding-free batches
when lengths vary (for a method whose trainer can flatten its batches), batches grouped
by length when padding remains, reference log-probs computed once when training sees
the pairs more than once, the vocabulary projection only at trained positions off GPUs
(``trained_token_scoring``), and Liger kernels on CUDA GPUs. A setting changed from its default is the user's choice and
is kept; ``speed_options: as set`` keeps every setting exactly as given.

No torch here (the window imports the settings below); ``choose`` takes the measured
lengths, the device dict of ``backend.core.device_info.describe_device()`` and a
function that estimates memory, so its rules are tested without a model.
"""

from __future__ import annotations

import dataclasses
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from backend.core.atomic_files import write_text_atomic
from backend.runs.config import setting

SPEED_OPTIONS_FILE = "speed_options.json"
# Padding below this share of the batch is not worth changing how batches are built.
WASTE_WORTH_REMOVING = 0.10
# sdpa/eager attend over a whole flattened batch (transformers masks the sequences apart
# from the position ids), so attention costs (sum of lengths)^2 instead of the sum of squares:
# cheap next to the linear layers only while the flattened batch stays short.
FLATTENED_TOKENS_WITHOUT_FLASH = 4096
# Lengths are counted on the raw texts; the chat template and special tokens add a few.
TEMPLATE_MARGIN_TOKENS = 16
MEASURE_ROWS = 20_000


_SCORING_HELP = ("Compute the vocabulary projection only where the loss uses it (the answers), not on prompts and "
                 "padding. TRL does this by itself on GPUs with Triton; elsewhere it projects every position. Same "
                 "loss, less work, most of all on models with a large vocabulary.")


@dataclass
class SpeedSettings:
    """The settings the studio may choose; a mixin of the configs of the methods that have them."""

    speed_options: str = setting(
        "auto", "auto: the studio turns on the speed options that pay for this data and device (gradient "
        "checkpointing only when memory needs it, the largest batch that fits at the same effective batch, "
        "padding-free or length-grouped batches, reference log-probs computed once, only trained tokens scored, Liger kernels on GPUs) and "
        "writes each choice with its reason to the run's log and speed_options.json. Any of those settings you "
        "change from its default is kept as you set it. as set: every setting exactly as given.",
        label="Speed options", choices=("auto", "as set"), advanced=True,
    )
    group_by_length: bool = setting(
        False, "Batch examples of similar length together so less padding is computed. The order stays random "
        "between groups.", label="Group batches by length", advanced=True,
    )
    # Off by default here so that ``as set`` is TRL's own behaviour; auto turns it on off GPUs.
    score_trained_tokens_only: bool = setting(False, _SCORING_HELP, label="Score only trained tokens", advanced=True)
    use_liger_kernel: bool = setting(
        False, "Liger's fused Triton kernels (needs a CUDA GPU and the liger-kernel package): less memory and "
        "faster steps.", label="Liger kernels", advanced=True,
    )


@dataclass
class TrainedTokenScoring:
    """The one speed option of the methods without the others (their batches are built by
    their trainers): on unless switched off, since it changes no result."""

    score_trained_tokens_only: bool = setting(True, _SCORING_HELP, label="Score only trained tokens", advanced=True)


@dataclass(frozen=True)
class SpeedChoice:
    """One option the studio set (or left), with the reason a user reads in the log."""

    setting: str
    label: str
    value: Any
    reason: str

    def line(self) -> str:
        shown = {True: "on", False: "off"}.get(self.value, self.value) if isinstance(self.value, bool) \
            else self.value
        return f"{self.label}: {shown} ({self.reason})"


@dataclass
class SpeedPlan:
    """The choices, and the config they amount to (``cfg``: what the trainer is built from)."""

    cfg: Any
    choices: list[SpeedChoice] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [c.line() for c in self.choices]

    def to_dict(self) -> dict:
        return {"mode": getattr(self.cfg, "speed_options", "as set"),
                "choices": [dataclasses.asdict(c) for c in self.choices]}


def user_changed(cfg, name: str) -> bool:
    """Whether ``name`` differs from its default in ``cfg``'s class: a value the user chose."""
    for f in dataclasses.fields(cfg):
        if f.name == name:
            return getattr(cfg, name) != f.default
    return False


def padding_share(lengths: list[int], batch: int, grouped: bool = False, seed: int = 0) -> float:
    """The share of a padded batch's positions that is padding, for batches drawn at random
    (or, ``grouped``, from length-sorted runs as a length-grouped sampler draws them)."""
    if batch < 2 or len(lengths) < 2:
        return 0.0
    order = list(lengths)
    random.Random(seed).shuffle(order)
    if grouped:  # transformers sorts megabatches of 50 batches by length
        mega = 50 * batch
        order = [n for start in range(0, len(order), mega) for n in sorted(order[start:start + mega])]
    padded = real = 0
    for start in range(0, len(order), batch):
        chunk = order[start:start + batch]
        padded += max(chunk) * len(chunk)
        real += sum(chunk)
    return 1.0 - real / padded if padded else 0.0


def _mb(value: float | None) -> str:
    if value is None:
        return "?"
    return f"{value / 1024:.1f} GB" if value >= 1024 else f"{value:.0f} MB"


Estimator = Callable[[Any], Any]  # a config -> an object with ``fits``, ``total_mb`` and ``usable_mb``


def choose(cfg, lengths: list[int], device: dict, *, estimate: Estimator, attention: str = "sdpa",
           liger_installed: bool = False, rows: int | None = None, measured_all: bool = True,
           shape=None) -> SpeedPlan:
    """The options for training ``cfg`` on examples of ``lengths`` tokens (prompt plus longest answer)
    on ``device``. ``rows`` is the number of training rows (``len(lengths)`` when every row was
    measured); ``shape`` (a ``memory_estimate.ModelShape``) weighs attention against the other
    layers. Returns the plan; with ``speed_options`` other than auto, the config unchanged."""
    plan = SpeedPlan(cfg)
    if getattr(cfg, "speed_options", "as set") != "auto":
        return plan
    rows = rows if rows is not None else len(lengths)
    if lengths and measured_all:
        # No batch is longer than the longest example: the estimate's worst case of full-length
        # sequences would refuse batches that fit.
        longest = min(int(cfg.max_length), max(lengths) + TEMPLATE_MARGIN_TOKENS)
        full_length = estimate

        def estimate(c):
            return full_length(dataclasses.replace(c, max_length=min(int(c.max_length), longest)))
    plan = _checkpointing(plan, estimate)
    plan = _batch(plan, estimate)
    if hasattr(cfg, "padding_free"):  # a method whose trainer can flatten its batches
        plan = _padding_free(plan, lengths, attention, measured_all, shape)
    plan = _grouping(plan, lengths)
    plan = _precompute_reference(plan, rows)
    plan = _trained_tokens(plan, device)
    plan = _liger(plan, device, liger_installed)
    return plan


def _with(plan: SpeedPlan, name: str, label: str, value: Any, reason: str) -> SpeedPlan:
    cfg = dataclasses.replace(plan.cfg, **{name: value})
    return SpeedPlan(cfg, plan.choices + [SpeedChoice(name, label, value, reason)])


def _checkpointing(plan: SpeedPlan, estimate: Estimator) -> SpeedPlan:
    label = "Gradient checkpointing"
    cfg = plan.cfg
    if user_changed(cfg, "gradient_checkpointing"):
        return plan
    without = estimate(dataclasses.replace(cfg, gradient_checkpointing=False))
    if without.fits is True:
        return _with(plan, "gradient_checkpointing", label, False,
                     f"the run fits without it: ≈ {_mb(without.total_mb)} of {_mb(without.usable_mb)} usable")
    if without.fits is False:
        return _with(plan, "gradient_checkpointing", label, True,
                     f"without it the run needs ≈ {_mb(without.total_mb)}, over the {_mb(without.usable_mb)} usable")
    return _with(plan, "gradient_checkpointing", label, True, "memory unknown, so kept on to be safe")


def _batch(plan: SpeedPlan, estimate: Estimator) -> SpeedPlan:
    """Accumulated passes folded into one larger batch: the same examples per optimizer step,
    so the same steps and schedule, with fewer and fuller passes."""
    cfg = plan.cfg
    if user_changed(cfg, "per_device_train_batch_size") or user_changed(cfg, "gradient_accumulation_steps"):
        return plan
    batch, accum = int(cfg.per_device_train_batch_size), int(cfg.gradient_accumulation_steps)
    effective = batch * accum
    for new_accum in [a for a in range(1, accum) if accum % a == 0]:
        new_batch = effective // new_accum
        trial = dataclasses.replace(cfg, per_device_train_batch_size=new_batch, gradient_accumulation_steps=new_accum)
        result = estimate(trial)
        if result.fits is True:
            reason = (f"{new_batch} x {new_accum} instead of {batch} x {accum}: the same {effective} examples per "
                      f"step in fewer passes; ≈ {_mb(result.total_mb)} of {_mb(result.usable_mb)} usable")
            plan = _with(plan, "per_device_train_batch_size", "Batch size", new_batch, reason)
            plan = _with(plan, "gradient_accumulation_steps", "Gradient accumulation", new_accum,
                         f"with batch size {new_batch}")
            if user_changed(cfg, "eval_batch_size"):
                return plan
            # Twice the training batch (the default) is safe only below the largest that fits:
            # evaluation keeps no activations, but builds the same logits per example.
            return _with(plan, "eval_batch_size", "Evaluation batch size", new_batch,
                         "the training batch: the largest the estimate allows")
    return plan


def batch_costs(lengths: list[int], batch: int, waste: float, shape) -> tuple[float, float]:
    """Forward FLOPs of one batch, padded and flattened, on a model of ``shape`` (a
    ``memory_estimate.ModelShape``) whose attention sees the whole flattened batch: the linear
    layers and the head per token, plus attention per token over its context."""
    mean = sum(lengths) / len(lengths)
    real = batch * mean
    padded_tokens = real / (1.0 - waste) if waste < 1.0 else real
    per_token = 2.0 * (shape.attention_params + shape.mlp_params) + 2.0 * shape.hidden_size * shape.vocab_size
    attention_per_context = 4.0 * shape.num_layers * shape.q_dim
    padded = padded_tokens * (per_token + attention_per_context * padded_tokens / batch)
    flat = real * (per_token + attention_per_context * real)
    return padded, flat


def _padding_free(plan: SpeedPlan, lengths: list[int], attention: str, measured_all: bool, shape=None) -> SpeedPlan:
    label = "Padding-free batches"
    cfg = plan.cfg
    if user_changed(cfg, "padding_free") or cfg.packing or not lengths:
        return plan
    batch = int(cfg.per_device_train_batch_size)
    waste = padding_share(lengths, batch)
    spread = max(lengths) / max(1, min(lengths))
    longest = max(lengths) + TEMPLATE_MARGIN_TOKENS
    # Without packing TRL does not truncate a padding-free batch, so every example must fit already.
    limit = cfg.max_length if measured_all else cfg.max_length // 2
    flash = attention.startswith("flash") or attention.startswith("kernels-community/flash")
    flattened = batch * (sum(lengths) / len(lengths))
    if batch < 2:
        return _with(plan, "padding_free", label, False, "batch size 1 has no padding")
    if longest > limit:
        return _with(plan, "padding_free", label, False,
                     f"some examples reach Max length ({cfg.max_length}) and must be truncated")
    if waste < WASTE_WORTH_REMOVING:
        return _with(plan, "padding_free", label, False, f"lengths are even: padding is {waste:.0%} of a batch")
    if not flash and shape is not None:
        padded, flat = batch_costs(lengths, batch, waste, shape)
        if flat >= padded:
            return _with(plan, "padding_free", label, False,
                         f"without flash attention ({attention}) a flattened batch of ≈ {flattened:.0f} tokens "
                         f"attends across all of them: ≈ {flat / padded:.2f}x the compute of padding ({waste:.0%})")
    elif not flash and flattened > FLATTENED_TOKENS_WITHOUT_FLASH:
        return _with(plan, "padding_free", label, False,
                     f"a flattened batch of ≈ {flattened:.0f} tokens costs more attention than the padding "
                     f"({waste:.0%}) without flash attention ({attention})")
    return _with(plan, "padding_free", label, True,
                 f"lengths vary {spread:.1f}x: padding would be {waste:.0%} of each batch")


def _grouping(plan: SpeedPlan, lengths: list[int]) -> SpeedPlan:
    label = "Group batches by length"
    cfg = plan.cfg
    if user_changed(cfg, "group_by_length") or not lengths:
        return plan
    if getattr(cfg, "padding_free", False) or getattr(cfg, "packing", False):
        return _with(plan, "group_by_length", label, False, "padding-free batches have no padding to save")
    batch = int(cfg.per_device_train_batch_size)
    waste = padding_share(lengths, batch)
    if batch < 2 or waste < WASTE_WORTH_REMOVING:
        return _with(plan, "group_by_length", label, False,
                     "batch size 1 has no padding" if batch < 2 else f"padding is only {waste:.0%} of a batch")
    grouped = padding_share(lengths, batch, grouped=True)
    return _with(plan, "group_by_length", label, True, f"padding falls from {waste:.0%} to {grouped:.0%} of a batch")


def planned_examples(cfg, rows: int) -> float:
    """Examples the run will show the model: steps x effective batch, or epochs x rows."""
    if cfg.max_steps > 0:
        return cfg.max_steps * cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps
    return cfg.num_train_epochs * rows


def _precompute_reference(plan: SpeedPlan, rows: int) -> SpeedPlan:
    """Computing the reference once costs one no-grad pass per training row up front; it saves
    one per example seen. It pays when the run sees more examples than the data holds."""
    label = "Precomputed reference log-probs"
    cfg = plan.cfg
    if not hasattr(cfg, "precompute_ref_log_probs") or user_changed(cfg, "precompute_ref_log_probs") or rows <= 0:
        return plan
    seen = planned_examples(cfg, rows)
    times = seen / rows
    # Measured side by side (4-bit LoRA, batch 4, same seeds, 20 steps over 48 pairs: 1.7 times):
    # the same eval loss to the last digit, and on a 4-layer model a step took 1.55 s of CPU
    # instead of 2.1-2.4 s for 0.5 s per precomputed batch. The pass over the held-out rows
    # pays at the first evaluation. (It was off for a while: its eval-mode forward had made
    # bitsandbytes cut the 4-bit gradients, see backend/training/cpu_4bit_gradients.py.)
    if times > 1.0:
        return _with(plan, "precompute_ref_log_probs", label, True,
                     f"training sees each pair {times:.1f} times: its reference is computed once instead of "
                     "at every pass")
    return _with(plan, "precompute_ref_log_probs", label, False,
                 f"training sees {seen:.0f} of the {rows} pairs: passing all of them first would cost more")


def _trained_tokens(plan: SpeedPlan, device: dict) -> SpeedPlan:
    label = "Score only trained tokens"
    if not hasattr(plan.cfg, "score_trained_tokens_only") or user_changed(plan.cfg, "score_trained_tokens_only"):
        return plan
    if (device or {}).get("kind") == "cuda":
        return _with(plan, "score_trained_tokens_only", label, False,
                     "TRL already projects only the trained positions on a GPU with Triton")
    return _with(plan, "score_trained_tokens_only", label, True,
                 "prompts and padding skip the vocabulary projection, which TRL computes for every position "
                 "off GPUs: the same loss with less work")


def _liger(plan: SpeedPlan, device: dict, installed: bool) -> SpeedPlan:
    label = "Liger kernels"
    if user_changed(plan.cfg, "use_liger_kernel"):
        return plan
    if (device or {}).get("kind") != "cuda":
        return _with(plan, "use_liger_kernel", label, False, "they need a CUDA GPU")
    if not installed:
        return _with(plan, "use_liger_kernel", label, False, "the liger-kernel package is not installed")
    return _with(plan, "use_liger_kernel", label, True, "CUDA GPU with liger-kernel installed")


# ---------------------------------------------------------------------------
# Measuring and recording (used by the worker; imports the tokenizer's library lazily)
# ---------------------------------------------------------------------------
def example_lengths(dataset, tokenizer, limit: int = MEASURE_ROWS) -> tuple[list[int], bool]:
    """Token lengths (prompt plus longest answer) of the training rows, the first ``limit`` of
    them, and whether that was every row. Counted on the texts, like the data report."""
    from backend.data.report import _parts, _total_lengths

    n = len(dataset)
    rows = dataset.select(range(min(n, limit))).to_list() if n else []
    by_part = {name: [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
               for name, texts in _parts(rows).items()}
    return _total_lengths(by_part), n <= limit


def liger_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("liger_kernel") is not None


def record(run_dir: Path, plan: SpeedPlan) -> None:
    """``speed_options.json`` in the run folder: what the studio chose and why."""
    write_text_atomic(Path(run_dir) / SPEED_OPTIONS_FILE, json.dumps(plan.to_dict(), indent=2, ensure_ascii=False))


def read_recorded(run_dir: Path) -> dict | None:
    path = Path(run_dir) / SPEED_OPTIONS_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
