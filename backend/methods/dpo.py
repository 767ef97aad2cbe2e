"""Direct Preference Optimisation on chosen/rejected pairs, against the frozen base as reference.

Every loss TRL's DPOTrainer knows can be the main loss, and others can be added with
weights ("Extra losses", e.g. ``sft:1`` for RPO or ``bco_pair:0.2, sft:1`` for MPO):
TRL sums ``weight * loss`` over the list it is given.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, field

from backend.methods.pairwise import PAIRS_ONLY, PAIRWISE_METRICS, PAIRWISE_SUMMARY
from backend.methods.spec import BuildContext, MemoryTraits, MethodSpec
from backend.runs.config import BaseRunConfig, setting
from backend.training.speed_options import SpeedSettings

# What each loss of TRL 1.16's DPOTrainer is for; the keys must stay TRL's own list
# (tests/methods/test_dpo.py reads it from TRL's source, so an upgrade that adds one fails there).
DPO_LOSS_NOTES = {
    "sigmoid": "the original DPO loss",
    "ipo": "IPO: a squared loss that resists overfitting when preferences are near-certain",
    "hinge": "SLiC: a hinge on the margin",
    "robust": "robust DPO for noisy labels (needs Label smoothing, e.g. 0.1)",
    "exo_pair": "EXO (needs Label smoothing, e.g. 0.001)",
    "nca_pair": "NCA: keeps the chosen answers' likelihood from falling",
    "bco_pair": "BCO on pairs: each answer judged on its own",
    "sppo_hard": "SPPO with hard labels: pushes chosen and rejected to fixed targets",
    "aot": "AOT: aligns the margins across a batch (batch size 2 or more)",
    "aot_unpaired": "AOT, chosen and rejected sorted apart (batch size 2 or more)",
    "apo_zero": "APO-zero: when the chosen answers are better than the model's own",
    "apo_down": "APO-down: when even the chosen answers are worse than the model's own",
    "discopop": "DiscoPOP: a discovered blend of logistic and exponential loss (DiscoPOP tau)",
    "sigmoid_norm": "sigmoid on length-normalised log-ratios",
    "sft": "plain NLL on the chosen answers; as an extra loss it gives RPO",
}
DPO_LOSS_TYPES = tuple(DPO_LOSS_NOTES)
# AOT sorts the log-ratios of a batch; TRL's WPO weights are per pair and would be misaligned.
BATCH_SORTED_LOSSES = ("aot", "aot_unpaired")
# TRL 1.16 weighs these in place (sft's broadcast view, hinge's relu output kept for backward)
# and stops at the first step with WPO on; measured on the tiny model.
WEIGHTING_FAILS = ("hinge", "sft")
# f-DPO's reparameterisation only cancels in the chosen-rejected reward difference.
F_DIVERGENCE_LOSSES = ("sigmoid", "sigmoid_norm", "hinge", "ipo", "exo_pair", "robust", "discopop", "sft")
F_DIVERGENCES = ("reverse_kl", "forward_kl", "js_divergence", "alpha_divergence")


def _loss_help() -> str:
    return "Main DPO loss. " + "; ".join(f"{name}: {note}" for name, note in DPO_LOSS_NOTES.items()) + "."


@dataclass
class DPORunConfig(SpeedSettings, BaseRunConfig):
    """Direct Preference Optimisation on chosen/rejected pairs."""

    method: str = field(default="dpo", metadata={"help": "Training method", "internal": True})
    learning_rate: float = setting(
        5e-6, "Peak learning rate. Preference tuning needs far less than SFT: 1e-6 to 5e-5 with LoRA.",
        label="Learning rate", minimum=1e-9, maximum=1e-1,
    )
    beta: float = setting(
        0.1, "How far the model may move from the reference (the base with the adapter off). "
        "Higher keeps it closer; 0.01-0.5 is typical.",
        label="Beta", minimum=1e-6, maximum=100.0, group="Preference",
    )
    loss_type: str = setting(
        "sigmoid", _loss_help(), label="Loss type", choices=DPO_LOSS_TYPES, group="Preference",
        choice_notes=DPO_LOSS_NOTES,
    )
    extra_losses: str = setting(
        "", "Further losses added to the main one, each with its weight: name:weight separated by commas, "
        "e.g. 'sft:1' (RPO: DPO plus NLL on the chosen answers) or 'bco_pair:0.2, sft:1' with Main loss "
        "weight 0.8 (MPO). A name without a weight counts 1. Empty: the main loss alone. Names: "
        + ", ".join(DPO_LOSS_TYPES) + ".",
        label="Extra losses", group="Preference", placeholder="none; e.g. sft:1  or  bco_pair:0.2, sft:1",
    )
    loss_weight: float = setting(
        1.0, "Weight of the main loss in the sum with the Extra losses (MPO uses 0.8). Alone it only scales "
        "the loss, like the learning rate.",
        label="Main loss weight", minimum=1e-6, maximum=1000.0, group="Preference",
    )
    label_smoothing: float = setting(
        0.0, "Assumed fraction of flipped preference labels: robust DPO (0.1 is typical), EXO (0.001) and AOT "
        "read it; the other losses ignore it. 0 trusts every label.",
        label="Label smoothing", minimum=0.0, maximum=0.49, group="Preference", advanced=True,
    )
    precompute_ref_log_probs: bool = setting(
        False, "Compute the reference log-probs once before training: saves memory and time per step, and pays "
        "when training sees the pairs more than once.",
        label="Precompute reference", group="Preference", advanced=True,
    )
    discopop_tau: float = setting(
        0.05, "Temperature of the DiscoPOP loss: how sharply it switches between its logistic and exponential "
        "parts. The paper uses 0.05. Only the discopop loss reads it.",
        label="DiscoPOP tau", minimum=1e-6, maximum=100.0, group="Preference", advanced=True,
    )
    use_weighting: bool = setting(
        False, "WPO: weight each pair by how likely the model finds both answers, so pairs far from what the "
        "model would write count less. Not with the aot, aot_unpaired, hinge or sft losses.",
        label="Weight pairs (WPO)", group="Preference", advanced=True,
    )
    ld_alpha: float = setting(
        1.0, "LD-DPO: weight of the tokens by which the longer answer of a pair outruns the shorter, against "
        "rewarding length. 1 counts them fully (plain DPO); 0 ignores them; the paper uses 0.3-0.7.",
        label="Length weight (LD-DPO)", minimum=0.0, maximum=1.0, group="Preference", advanced=True,
    )
    f_divergence_type: str = setting(
        "reverse_kl", "Divergence that keeps the model near the reference (f-DPO). reverse_kl is standard DPO; "
        "the others work only with the losses " + ", ".join(F_DIVERGENCE_LOSSES) + ".",
        label="Divergence", choices=F_DIVERGENCES, group="Preference", advanced=True,
    )
    f_alpha_divergence_coef: float = setting(
        0.5, "Alpha of the alpha-divergence (Divergence alpha_divergence only).",
        label="Alpha-divergence alpha", minimum=0.0, maximum=10.0, group="Preference", advanced=True,
    )


_ENTRY_SPLIT = re.compile(r"[,;\n]")
_NAME_WEIGHT = re.compile(r"^\s*([A-Za-z_]\w*)\s*(?:[:=]\s*(\S+))?\s*$")


def parse_extra_losses(text: str) -> tuple[list[tuple[str, float]], list[str]]:
    """``"sft:0.5, bco_pair"`` -> ``[("sft", 0.5), ("bco_pair", 1.0)]``, and a message for
    each entry that is not a known loss with a positive number as its weight."""
    losses: list[tuple[str, float]] = []
    problems: list[str] = []
    for raw in _ENTRY_SPLIT.split(text or ""):
        entry = raw.strip()
        if not entry:
            continue
        match = _NAME_WEIGHT.match(entry)
        if not match:
            problems.append(f"'{entry}' is not name:weight (e.g. sft:0.5)")
            continue
        name, weight_text = match.group(1).lower(), match.group(2)
        if name not in DPO_LOSS_NOTES:
            close = [t for t in DPO_LOSS_TYPES if t.startswith(name)] or \
                difflib.get_close_matches(name, DPO_LOSS_TYPES, n=1)
            hint = f" (did you mean {close[0]}?)" if close else f"; the losses are {', '.join(DPO_LOSS_TYPES)}"
            problems.append(f"'{entry}': there is no loss '{name}'{hint}")
            continue
        try:
            weight = 1.0 if weight_text is None else float(weight_text)
        except ValueError:
            problems.append(f"'{entry}': the weight '{weight_text}' is not a number")
            continue
        if not math.isfinite(weight) or weight <= 0:
            problems.append(f"'{entry}': the weight must be a number above 0")
            continue
        if name in dict(losses):
            problems.append(f"'{entry}': {name} is listed twice; give it once with the sum of its weights")
            continue
        losses.append((name, weight))
    return losses, problems


def loss_list(cfg: DPORunConfig) -> tuple[list[str], list[float]]:
    """The losses and weights TRL is given: the main loss first, then the valid extra ones."""
    extras, _problems = parse_extra_losses(cfg.extra_losses)
    extras = [(name, w) for name, w in extras if name != cfg.loss_type]
    return [cfg.loss_type] + [n for n, _w in extras], [cfg.loss_weight] + [w for _n, w in extras]


def validate(cfg: DPORunConfig) -> list[tuple[str, str]]:
    """What TRL would refuse only after the model is loaded, or would train without meaning."""
    problems = []
    extras, extra_problems = parse_extra_losses(cfg.extra_losses)
    if cfg.loss_type in dict(extras):
        extra_problems.append(f"{cfg.loss_type} is already the main loss (Loss type); set its weight with "
                              "Main loss weight instead")
    losses = {cfg.loss_type} | set(dict(extras))
    if {"apo_zero", "apo_down"} <= losses:
        extra_problems.append("apo_zero assumes the chosen answers are better than the model's own and apo_down "
                              "that they are worse; use one of the two")
    if extra_problems:  # one message: the form shows one per setting
        problems.append(("extra_losses", "; ".join(extra_problems)))
    # TRL raises for exo_pair only once the model is loaded; robust with 0 is plain sigmoid.
    typical = {"robust": "0.1 is typical for robust", "exo_pair": "the EXO paper uses 0.001"}
    smoothed = [name for name in typical if name in losses]
    if smoothed and cfg.label_smoothing <= 0.0:
        needs = "loss needs" if len(smoothed) == 1 else "losses need"
        problems.append(("label_smoothing", f"the {' and '.join(smoothed)} {needs} a label smoothing above 0 "
                                            f"({'; '.join(typical[n] for n in smoothed)})"))
    sorted_ = sorted(losses & set(BATCH_SORTED_LOSSES))
    if sorted_ and cfg.per_device_train_batch_size < 2:
        problems.append(("per_device_train_batch_size",
                         f"the {' and '.join(sorted_)} loss compares the examples of a batch with each other; with "
                         "a batch size of 1 it is plain sigmoid DPO: set Batch size to 2 or more"))
    if sorted_ and cfg.use_weighting:
        problems.append(("use_weighting", f"Weight pairs (WPO) does not work with the {' and '.join(sorted_)} "
                                          "loss, which reorders the pairs of a batch; turn one of them off"))
    elif cfg.use_weighting and losses & set(WEIGHTING_FAILS):
        failing = " and ".join(sorted(losses & set(WEIGHTING_FAILS)))
        problems.append(("use_weighting", f"Weight pairs (WPO) does not work with the {failing} loss (TRL stops "
                                          "at the first step); turn one of them off"))
    if cfg.f_divergence_type != "reverse_kl":
        outside = sorted(losses - set(F_DIVERGENCE_LOSSES))
        if outside:
            problems.append(("f_divergence_type",
                             f"Divergence {cfg.f_divergence_type} does not work with the {', '.join(outside)} loss; "
                             f"use reverse_kl, or only the losses {', '.join(F_DIVERGENCE_LOSSES)}"))
    if "lm_head" in [t.strip() for t in cfg.lora_target_modules.split(",")]:
        # TRL's DPO computes log-probs from lm_head.weight directly, so an adapter there never trains.
        problems.append(("lora_target_modules", "LoRA target modules: DPO cannot train an adapter on lm_head; "
                                                "remove it from the list"))
    return problems


def build_args(cfg: DPORunConfig, args: dict):
    from trl import DPOConfig

    return DPOConfig(**args, **trl_cli_keys(cfg))


def build(ctx: BuildContext):
    """No ``ref_model``: with a PEFT model TRL uses the policy with its adapter disabled
    as the reference, so no second copy of the weights is ever loaded."""
    return _trainer_class()(ref_model=None, **ctx.trainer_kwargs())


def _trainer_class():
    import torch
    from trl import DPOTrainer

    class StudioDPOTrainer(DPOTrainer):
        """TRL's trainer, with a precomputed reference that leaves the run's random state alone.

        The precompute's DataLoaders draw their seeds from the global generator, which
        transformers' length-grouped sampler also reads (it gets no generator of its own), so
        the same seed trained the pairs in another order: eval loss 0.0475 against 0.0462 on the
        tiny model. With the state kept, both ways train the same batches."""

        def _precompute_ref_logps(self, dataset, name, batch_size):
            device = self.accelerator.device
            on_device = {} if device.type == "cpu" else {"device_type": device.type}
            with torch.random.fork_rng(devices=[] if device.type == "cpu" else [device], **on_device):
                return super()._precompute_ref_logps(dataset, name, batch_size)

    return StudioDPOTrainer


def trl_cli_keys(cfg: DPORunConfig) -> dict:
    losses, weights = loss_list(cfg)
    keys = dict(beta=cfg.beta, loss_type=losses, label_smoothing=cfg.label_smoothing,
                precompute_ref_log_probs=cfg.precompute_ref_log_probs)
    if weights != [1.0] * len(losses):
        keys["loss_weights"] = weights
    if "discopop" in losses:
        keys["discopop_tau"] = cfg.discopop_tau
    if cfg.use_weighting:
        keys["use_weighting"] = True
    if cfg.ld_alpha < 1.0:  # 1 weighs every token fully, which is TRL's None
        keys["ld_alpha"] = cfg.ld_alpha
    if cfg.f_divergence_type != "reverse_kl":
        keys["f_divergence_type"] = cfg.f_divergence_type
        keys["f_alpha_divergence_coef"] = cfg.f_alpha_divergence_coef
    return keys


SPEC = MethodSpec(
    key="dpo",
    label="DPO",
    title="DPO (direct preference optimisation)",
    group="Offline preference",
    summary="Prefers the chosen over the rejected answer of each pair, staying close to the base model.",
    config=DPORunConfig,
    data=PAIRS_ONLY,
    build_args=build_args,
    build=build,
    metrics=PAIRWISE_METRICS,
    expected_keys=("loss", "rewards/margins", "rewards/chosen", "rewards/rejected", "rewards/accuracies",
                   "logps/chosen", "logps/rejected", "learning_rate", "grad_norm"),
    headline=("loss", "rewards/margins", "rewards/accuracies", "logps/chosen", "logps/rejected"),
    summary_metrics=PAIRWISE_SUMMARY,
    diagnostics=("non_finite_loss", "both_pushed_down", "too_easy", "margins_flat"),
    memory=MemoryTraits(sequences_per_example=2, reference_pass=True,
                        reference_skip_setting="precompute_ref_log_probs", adapter_half_when_quantized=True),
    implicit_reward=True,
    validate=validate,
    trl_cli="dpo",
    trl_cli_keys=trl_cli_keys,
)
