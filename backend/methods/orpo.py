"""Odds-Ratio Preference Optimisation: SFT and preference in one loss, no reference model."""

from __future__ import annotations

from dataclasses import dataclass, field

from backend.methods.pairwise import PAIRS_ONLY, PAIRWISE_METRICS, PAIRWISE_SUMMARY
from backend.methods.spec import BuildContext, MemoryTraits, Metric, MethodSpec
from backend.runs.config import BaseRunConfig, setting


@dataclass
class ORPORunConfig(BaseRunConfig):
    """Odds-Ratio Preference Optimisation: SFT and preference in one loss, no reference model."""

    method: str = field(default="orpo", metadata={"help": "Training method", "internal": True})
    learning_rate: float = setting(
        8e-6, "Peak learning rate. The ORPO paper uses 8e-6; with LoRA up to 5e-5.",
        label="Learning rate", minimum=1e-9, maximum=1e-1,
    )
    beta: float = setting(
        0.1, "Weight of the odds-ratio (preference) term against the NLL (SFT) term; lambda in the paper.",
        label="Beta (lambda)", minimum=1e-6, maximum=100.0, group="Preference",
    )


def build_args(cfg: ORPORunConfig, args: dict):
    from backend.methods.trl_experimental import ORPOConfig

    return ORPOConfig(**args, beta=cfg.beta)


def build(ctx: BuildContext):
    from backend.methods.trl_experimental import ORPOTrainer

    return ORPOTrainer(**ctx.trainer_kwargs())


SPEC = MethodSpec(
    key="orpo",
    label="ORPO",
    title="ORPO (odds-ratio preference optimisation)",
    group="Offline preference",
    summary="Learns the chosen answers and prefers them over the rejected in one pass; no reference model.",
    config=ORPORunConfig,
    data=PAIRS_ONLY,
    build_args=build_args,
    build=build,
    metrics=PAIRWISE_METRICS + (
        Metric("nll_loss", "nll_loss", "NLL loss on the chosen answers (the SFT part)", "NLL", role="nll", order=60),
        Metric("log_odds_ratio", "log_odds_ratio", "Log-odds ratio", "log-odds ratio", role="margin", order=62),
        Metric("log_odds_chosen", "log_odds_chosen", "Log-odds of chosen over rejected", "log-odds",
               role="odds", order=64),
    ),
    expected_keys=("loss", "nll_loss", "log_odds_ratio", "rewards/margins", "rewards/chosen", "rewards/rejected",
                   "rewards/accuracies", "logps/chosen", "logps/rejected", "learning_rate", "grad_norm"),
    headline=("loss", "nll_loss", "log_odds_ratio", "rewards/margins", "rewards/accuracies"),
    summary_metrics=PAIRWISE_SUMMARY,
    diagnostics=("non_finite_loss", "both_pushed_down", "too_easy", "margins_flat"),
    memory=MemoryTraits(sequences_per_example=2, full_logits=True),
)
