"""Reward model (Bradley–Terry), key ``bradley_terry``: a one-output score head on the base model learns to rank
the chosen answer of each pair above the rejected one.

The run folder is a reward model: its adapter holds the LoRA weights and the trained
score head (``modules_to_save``), and a marker file names the base it belongs on
(``backend.rewards.scoring``), so graders, Best-of-N and Compare can load it.

The key is not plain "reward": that word is a metric, a column and a role all over the
studio, and no module outside ``backend/methods`` may name a method key.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from backend.methods.pairwise import PAIRS_ONLY
from backend.methods.spec import BuildContext, MemoryTraits, Metric, MethodSpec
from backend.runs.config import BaseRunConfig, setting


@dataclass
class BradleyTerryRunConfig(BaseRunConfig):
    """Reward model (Bradley–Terry) on chosen/rejected pairs."""

    method: str = field(default="bradley_terry", metadata={"help": "Training method", "internal": True})
    learning_rate: float = setting(
        1e-4, "Peak learning rate. The score head starts from random weights, so reward models take more than "
        "preference tuning: 5e-5 to 2e-4 with LoRA.",
        label="Learning rate", minimum=1e-9, maximum=1e-1,
    )
    center_rewards_coefficient: float = setting(
        0.0, "Pulls the rewards towards a mean of zero (0.01 is typical), so scores from different runs sit on "
             "a comparable scale. 0 leaves them free.",
        label="Centre rewards", minimum=0.0, maximum=10.0, group="Reward model", advanced=True,
    )


def build_args(cfg: BradleyTerryRunConfig, args: dict):
    from trl import RewardConfig

    return RewardConfig(**args, **trl_cli_keys(cfg))


def trl_cli_keys(cfg: BradleyTerryRunConfig) -> dict:
    return dict(center_rewards_coefficient=cfg.center_rewards_coefficient or None)


def build(ctx: BuildContext):
    from trl import RewardTrainer

    trainer = RewardTrainer(**ctx.trainer_kwargs())
    # With a quantized base TRL casts every trainable parameter to bf16 whatever the precision;
    # the score head's copy then meets fp32 activations on a CPU and the first matmul fails.
    # fp32 trainable weights work under every precision (bf16 autocast casts them per op).
    import torch

    for param in trainer.model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()
    return trainer


REWARD_METRICS = (
    Metric("accuracy", "accuracy", "Ranking accuracy (chosen scored above rejected)", "accuracy",
           role="accuracy", order=20),
    Metric("margin", "margin", "Reward margin (chosen − rejected)", "margin", role="margin", order=30),
    Metric("max_reward", "rewards", "Rewards: min, mean, max over the batch", "max", role="chosen", order=40,
           line="dash"),
    Metric("mean_reward", "rewards", "Rewards: min, mean, max over the batch", "mean", role="reward", order=40),
    Metric("min_reward", "rewards", "Rewards: min, mean, max over the batch", "min", role="rejected", order=40),
)

SPEC = MethodSpec(
    key="bradley_terry",
    aliases=("reward", "reward_model", "rm"),
    label="Reward model",
    title="Reward model (Bradley–Terry)",
    group="Reward model",
    summary="Trains a score head to rank chosen over rejected answers; the run then grades answers "
            "(RL, Best-of-N).",
    config=BradleyTerryRunConfig,
    data=PAIRS_ONLY,
    build_args=build_args,
    build=build,
    metrics=REWARD_METRICS,
    expected_keys=("loss", "accuracy", "margin", "min_reward", "mean_reward", "max_reward", "learning_rate",
                   "grad_norm"),
    headline=("loss", "accuracy", "margin", "mean_reward"),
    # Own labels: the Runs table has one column per label, and DPO's accuracy and margin are other figures.
    summary_metrics=(("loss", "loss"), ("accuracy", "ranking accuracy"), ("margin", "ranking margin")),
    diagnostics=("non_finite_loss",),
    memory=MemoryTraits(sequences_per_example=2),
    model_head="score",
    trl_cli="reward",
    trl_cli_keys=trl_cli_keys,
)
