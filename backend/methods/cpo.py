"""Contrastive Preference Optimisation: prefer the chosen answer by its own likelihood, plus NLL
on the chosen answers, with no reference model (TRL's experimental CPOTrainer)."""

from __future__ import annotations

from dataclasses import dataclass, field

from backend.methods.pairwise import PAIRS_ONLY, PAIRWISE_METRICS, PAIRWISE_SUMMARY
from backend.methods.spec import BuildContext, MemoryTraits, Metric, MethodSpec
from backend.runs.config import BaseRunConfig, setting

CPO_LOSS_TYPES = ("sigmoid", "hinge", "ipo")  # CPOTrainer's own, less "simpo" (its own method here)

# CPOTrainer logs the pairwise keys with rewards = beta * the policy's log-probs (no reference),
# and the NLL of the chosen answers even when its weight is 0.
CPO_FAMILY_METRICS = PAIRWISE_METRICS + (
    Metric("nll_loss", "nll_loss", "NLL loss on the chosen answers (the SFT part)", "NLL", role="nll", order=60),
)
CPO_FAMILY_KEYS = ("loss", "nll_loss", "rewards/margins", "rewards/chosen", "rewards/rejected",
                   "rewards/accuracies", "logps/chosen", "logps/rejected", "logits/chosen", "logits/rejected",
                   "learning_rate", "grad_norm")
CPO_FAMILY_DIAGNOSTICS = ("non_finite_loss", "both_pushed_down", "too_easy", "margins_flat")
# No reference pass; CPOTrainer builds the whole logits of chosen and rejected, as ORPO does.
CPO_FAMILY_MEMORY = MemoryTraits(sequences_per_example=2, full_logits=True)


@dataclass
class CPORunConfig(BaseRunConfig):
    """Contrastive Preference Optimisation on chosen/rejected pairs, no reference model."""

    method: str = field(default="cpo", metadata={"help": "Training method", "internal": True})
    learning_rate: float = setting(
        5e-6, "Peak learning rate. Preference tuning needs far less than SFT: 1e-6 to 5e-5 with LoRA.",
        label="Learning rate", minimum=1e-9, maximum=1e-1,
    )
    beta: float = setting(
        0.1, "Scale of the preference term: the reward of an answer is beta times its log-probability. "
        "0.1 is the CPO paper's.",
        label="Beta", minimum=1e-6, maximum=100.0, group="Preference",
    )
    loss_type: str = setting(
        "sigmoid", "Preference loss: sigmoid (the CPO paper's), hinge (SLiC) or ipo (a squared loss on the "
        "length-averaged log-probs).",
        label="Loss type", choices=CPO_LOSS_TYPES, group="Preference",
    )
    cpo_alpha: float = setting(
        1.0, "Weight of the NLL (supervised) term on the chosen answers; it keeps them likely while the "
        "preference term pushes the rejected ones down.",
        label="NLL weight", minimum=0.0, maximum=100.0, group="Preference",
    )
    label_smoothing: float = setting(
        0.0, "Assumed fraction of flipped preference labels (sigmoid loss only). 0 trusts every label.",
        label="Label smoothing", minimum=0.0, maximum=0.49, group="Preference", advanced=True,
    )


def validate(cfg: CPORunConfig) -> list[tuple[str, str]]:
    if cfg.label_smoothing > 0 and cfg.loss_type != "sigmoid":
        # TRL only warns and ignores it; a setting with no effect is a misunderstanding to name.
        return [("label_smoothing", f"the {cfg.loss_type} loss ignores label smoothing; set it to 0 or use the "
                                    "sigmoid loss")]
    return []


def cpo_config(args: dict, **keys):
    from backend.methods.trl_experimental import CPOConfig

    return CPOConfig(**args, **keys)


def build_args(cfg: CPORunConfig, args: dict):
    return cpo_config(args, beta=cfg.beta, loss_type=cfg.loss_type, cpo_alpha=cfg.cpo_alpha,
                      label_smoothing=cfg.label_smoothing)


def build(ctx: BuildContext):
    from backend.methods.trl_experimental import CPOTrainer

    return CPOTrainer(**ctx.trainer_kwargs())


SPEC = MethodSpec(
    key="cpo",
    label="CPO",
    title="CPO (contrastive preference optimisation)",
    group="Offline preference",
    summary="Prefers the chosen answers and learns them (NLL) in one pass; no reference model.",
    config=CPORunConfig,
    data=PAIRS_ONLY,
    build_args=build_args,
    build=build,
    metrics=CPO_FAMILY_METRICS,
    expected_keys=CPO_FAMILY_KEYS,
    headline=("loss", "nll_loss", "rewards/margins", "rewards/accuracies", "logps/chosen"),
    summary_metrics=PAIRWISE_SUMMARY,
    diagnostics=CPO_FAMILY_DIAGNOSTICS,
    memory=CPO_FAMILY_MEMORY,
    validate=validate,
)
