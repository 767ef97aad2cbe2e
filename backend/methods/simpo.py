"""SimPO: prefer the chosen answer by its length-averaged log-probability, by at least a target
margin, with no reference model at all (TRL's CPOTrainer with loss_type "simpo")."""

from __future__ import annotations

from dataclasses import dataclass, field

from backend.methods.cpo import (CPO_FAMILY_DIAGNOSTICS, CPO_FAMILY_KEYS, CPO_FAMILY_MEMORY, CPO_FAMILY_METRICS,
                                 build, cpo_config)
from backend.methods.pairwise import PAIRS_ONLY, PAIRWISE_SUMMARY
from backend.methods.spec import MethodSpec
from backend.runs.config import BaseRunConfig, setting


@dataclass
class SimPORunConfig(BaseRunConfig):
    """Simple Preference Optimisation on chosen/rejected pairs: no reference model."""

    method: str = field(default="simpo", metadata={"help": "Training method", "internal": True})
    learning_rate: float = setting(
        5e-6, "Peak learning rate. SimPO is sensitive to it: the paper uses 3e-7 to 1e-6 for full "
        "fine-tuning; with LoRA 1e-6 to 2e-5.",
        label="Learning rate", minimum=1e-9, maximum=1e-1,
    )
    beta: float = setting(
        2.0, "Scale of the reward, beta times the average log-probability per answer token. The SimPO paper "
        "uses 2 to 2.5 (up to 10 for some models).",
        label="Beta", minimum=1e-6, maximum=100.0, group="Preference",
    )
    gamma_beta_ratio: float = setting(
        0.5, "Target margin as a fraction of beta: the chosen answer's reward should beat the rejected one's "
        "by gamma = ratio x beta. The paper tunes it between 0.3 and 0.8; 0 asks for no margin.",
        label="Margin / beta (gamma/beta)", minimum=0.0, maximum=10.0, group="Preference",
    )
    cpo_alpha: float = setting(
        0.0, "Weight of an NLL (supervised) term on the chosen answers. 0 is SimPO; above 0 is CPO-SimPO, "
        "which keeps the chosen answers likely.",
        label="NLL weight", minimum=0.0, maximum=100.0, group="Preference", advanced=True,
    )
    label_smoothing: float = setting(
        0.0, "Assumed fraction of flipped preference labels. 0 trusts every label.",
        label="Label smoothing", minimum=0.0, maximum=0.49, group="Preference", advanced=True,
    )
    alpha: float = setting(
        0.0, "AlphaPO: reshapes the reward from the log-probability p to (1 - p^-alpha) / alpha. 0 is SimPO; "
        "the AlphaPO paper uses about 0.1 to 0.25.",
        label="AlphaPO alpha", minimum=-10.0, maximum=10.0, group="Preference", advanced=True,
    )


def build_args(cfg: SimPORunConfig, args: dict):
    # TRL divides simpo_gamma by beta for the margin of the log-sigmoid, so the ratio is what counts.
    return cpo_config(args, loss_type="simpo", beta=cfg.beta, simpo_gamma=cfg.gamma_beta_ratio * cfg.beta,
                      cpo_alpha=cfg.cpo_alpha, label_smoothing=cfg.label_smoothing, alpha=cfg.alpha)


SPEC = MethodSpec(
    key="simpo",
    label="SimPO",
    title="SimPO (simple preference optimisation)",
    group="Offline preference",
    summary="Prefers the chosen answers by length-averaged likelihood with a margin; no reference pass at all.",
    config=SimPORunConfig,
    data=PAIRS_ONLY,
    build_args=build_args,
    build=build,
    metrics=CPO_FAMILY_METRICS,
    expected_keys=CPO_FAMILY_KEYS,
    headline=("loss", "rewards/margins", "rewards/accuracies", "logps/chosen", "logps/rejected"),
    summary_metrics=PAIRWISE_SUMMARY,
    diagnostics=CPO_FAMILY_DIAGNOSTICS,
    memory=CPO_FAMILY_MEMORY,
)
