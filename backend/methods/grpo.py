"""Group Relative Policy Optimisation: the policy samples a group of completions per
prompt, the graders score them, and each completion's advantage is its reward against
its group's mean (TRL's ``GRPOTrainer``), on the 4-bit base with LoRA."""

from __future__ import annotations

from dataclasses import dataclass, field

from backend.methods.rl_common import RLRunConfig, group_trainer, rl_spec, rl_trl_keys, validate_rl
from backend.methods.spec import BuildContext
from backend.runs.config import setting

# Every loss_type TRL 1.16's GRPOConfig accepts (trl/trainer/grpo_config.py).
GRPO_LOSS_TYPES = ("dapo", "grpo", "dr_grpo", "bnpo", "cispo", "sapo", "luspo", "vespo")


@dataclass
class GRPORunConfig(RLRunConfig):
    """GRPO: sample a group of completions per prompt, grade them, prefer the better ones of each group."""

    method: str = field(default="grpo", metadata={"help": "Training method", "internal": True})
    beta: float = setting(
        0.0, "Weight of the KL penalty to the reference (the base with the adapter off). 0, TRL's default, "
        "skips the reference pass; 0.01-0.1 keeps the policy from drifting far.",
        label="Beta (KL)", minimum=0.0, maximum=100.0, group="Reward",
    )
    loss_type: str = setting(
        "dapo", "How token losses are averaged. dapo (default) and dr_grpo have no length bias; grpo divides by "
        "each completion's length (favours short right answers and long wrong ones); bnpo averages per local "
        "batch; cispo clips importance weights; sapo and vespo replace clipping with a soft gate; luspo is a "
        "sequence-level loss (needs Importance sampling level = sequence).",
        label="Loss type", choices=GRPO_LOSS_TYPES, group="Reward",
    )
    scale_rewards: str = setting(
        "group", "Divide advantages by the reward spread of the group (group), of the whole batch (batch), or "
        "not at all (none; the Dr. GRPO paper's advice against a difficulty bias).",
        label="Reward scaling", choices=("group", "batch", "none"), group="Reward",
    )
    importance_sampling_level: str = setting(
        "token", "Policy ratio per token (GRPO) or per sequence (GSPO).",
        label="Importance sampling level", choices=("token", "sequence"), group="Reward", advanced=True,
    )


def validate(cfg: GRPORunConfig) -> list[tuple[str, str]]:
    problems = validate_rl(cfg)
    if cfg.loss_type == "luspo" and cfg.importance_sampling_level != "sequence":
        problems.append(("importance_sampling_level", "the luspo loss is sequence-level: set Importance sampling "
                                                      "level to sequence"))
    return problems


def build_args(cfg: GRPORunConfig, args: dict):
    from trl import GRPOConfig

    return GRPOConfig(**rl_trl_keys(cfg, args), loss_type=cfg.loss_type, scale_rewards=cfg.scale_rewards,
                      importance_sampling_level=cfg.importance_sampling_level)


def build(ctx: BuildContext):
    from trl import GRPOTrainer

    return group_trainer(ctx, GRPOTrainer)


SPEC = rl_spec(
    key="grpo",
    label="GRPO",
    title="GRPO (group relative policy optimisation)",
    summary="Samples a group of answers per prompt, grades them, prefers each group's best. Needs prompts.",
    config=GRPORunConfig,
    build_args=build_args,
    build=build,
    validate=validate,
)
