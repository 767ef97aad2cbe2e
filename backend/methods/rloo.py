"""REINFORCE Leave-One-Out: each sampled completion's baseline is the mean reward of the
other completions of its prompt (TRL's ``RLOOTrainer``), on the same graders as GRPO."""

from __future__ import annotations

from dataclasses import dataclass, field

from backend.methods.rl_common import RLRunConfig, group_trainer, rl_spec, rl_trl_keys, validate_rl
from backend.methods.spec import BuildContext
from backend.runs.config import setting


@dataclass
class RLOORunConfig(RLRunConfig):
    """RLOO: grade sampled completions; each one's baseline is the mean of the rest of its group."""

    method: str = field(default="rloo", metadata={"help": "Training method", "internal": True})
    beta: float = setting(
        0.05, "Weight of the KL penalty to the reference (the base with the adapter off), TRL's default for "
        "RLOO. 0 skips the reference pass.",
        label="Beta (KL)", minimum=0.0, maximum=100.0, group="Reward",
    )
    normalize_advantages: bool = setting(
        False, "Scale the advantages of each batch to mean 0 and spread 1.",
        label="Normalise advantages", group="Reward",
    )


def validate(cfg: RLOORunConfig) -> list[tuple[str, str]]:
    return validate_rl(cfg)


def build_args(cfg: RLOORunConfig, args: dict):
    from trl import RLOOConfig

    return RLOOConfig(**rl_trl_keys(cfg, args), normalize_advantages=cfg.normalize_advantages)


def build(ctx: BuildContext):
    from trl import RLOOTrainer

    return group_trainer(ctx, RLOOTrainer)


SPEC = rl_spec(
    key="rloo",
    label="RLOO",
    title="RLOO (REINFORCE leave-one-out)",
    summary="Like GRPO on the same graders; each answer is judged against the rest of its group.",
    config=RLOORunConfig,
    build_args=build_args,
    build=build,
    validate=validate,
)
