"""Direct Preference Optimisation on chosen/rejected pairs, against the frozen base as reference."""

from __future__ import annotations

from dataclasses import dataclass, field

from backend.methods.pairwise import PAIRS_ONLY, PAIRWISE_METRICS, PAIRWISE_SUMMARY
from backend.methods.spec import BuildContext, MemoryTraits, MethodSpec
from backend.run_config import BaseRunConfig, setting

DPO_LOSS_TYPES = ("sigmoid", "ipo", "hinge", "robust", "bco_pair", "sppo_hard", "nca_pair", "exo_pair",
                  "apo_zero", "apo_down", "aot", "aot_unpaired", "discopop", "sigmoid_norm")


@dataclass
class DPORunConfig(BaseRunConfig):
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
        "sigmoid", "DPO loss: sigmoid is the original; ipo regularises harder against overfitting; "
        "hinge is SLiC; robust tolerates noisy labels (with label smoothing).",
        label="Loss type", choices=DPO_LOSS_TYPES, group="Preference",
    )
    label_smoothing: float = setting(
        0.0, "Assumed fraction of flipped preference labels (robust DPO). 0 trusts every label.",
        label="Label smoothing", minimum=0.0, maximum=0.49, group="Preference", advanced=True,
    )
    precompute_ref_log_probs: bool = setting(
        False, "Compute the reference log-probs once before training: saves memory and time per step.",
        label="Precompute reference", group="Preference", advanced=True,
    )


def validate(cfg: DPORunConfig) -> list[tuple[str, str]]:
    problems = []
    if cfg.loss_type == "robust" and cfg.label_smoothing <= 0.0:
        problems.append(("label_smoothing", "the robust loss needs a label smoothing above 0 (0.1 is typical)"))
    if cfg.loss_type == "exo_pair" and cfg.label_smoothing <= 0.0:
        # TRL raises for this only after the model is loaded; say it before.
        problems.append(("label_smoothing", "the exo_pair loss needs a label smoothing above 0 "
                                            "(the EXO paper uses 0.001)"))
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
    from trl import DPOTrainer

    return DPOTrainer(ref_model=None, **ctx.trainer_kwargs())


def trl_cli_keys(cfg: DPORunConfig) -> dict:
    return dict(beta=cfg.beta, loss_type=[cfg.loss_type], label_smoothing=cfg.label_smoothing,
                precompute_ref_log_probs=cfg.precompute_ref_log_probs)


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
