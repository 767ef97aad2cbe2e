"""Proximal policy optimisation against a reward model: the RLHF stage of the classic pipeline.

Why PPO is written here rather than taken from TRL: TRL moved ``PPOTrainer`` to
``trl.experimental.ppo`` in 1.10 and removed it in September 2026 (TRL pull request
7020, "Remove PPOTrainer"); the projects that still run PPO pin TRL below 1.0, and no
other maintained library runs PPO with LoRA on one consumer GPU alongside TRL 1.16 and
transformers 5. So ``backend/methods/ppo_training`` implements it, in the shape that fits such a GPU: one
(4-bit) base model carrying LoRA adapters for the policy, the value function (with a
scalar head) and, when the reward-model run was trained on the same base, the reward
model (its adapter and score head: ``ppo_training/shared_reward``); the reference is
the same base with the adapters off. A reward model on another base loads as a separate
model through ``backend.rewards.scoring``. Each step samples one
answer per prompt, pays the reward model's score on the last token and a per-token KL
penalty against the reference on every token, estimates advantages with GAE, whitens
them, and runs several epochs of clipped policy and value updates on the batch.
Metric names are the ones PPO users know from TRL.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from backend.methods.rl_common import completion_room, rl_setting
from backend.methods.spec import BuildContext, DataNeed, MemoryTraits, Metric, MethodSpec
from backend.runs.config import BaseRunConfig, setting


@dataclass
class PPORunConfig(BaseRunConfig):
    """PPO: a policy trained on its own sampled answers, scored by a reward model."""

    method: str = field(default="ppo", metadata={"help": "Training method", "internal": True})
    learning_rate: float = setting(
        1e-5, "Peak learning rate of the policy and value adapters. RL with LoRA wants little: 1e-6 to 5e-5.",
        label="Learning rate", minimum=1e-9, maximum=1e-1,
    )
    reward_model: str = setting(
        "", "The reward model that scores each sampled answer: a reward-model run folder, or a model folder "
        "with a one-output sequence-classification head.",
        label="Reward model", group="Reward",
    )
    max_completion_length: int = setting(
        53, "Longest answer sampled per prompt (tokens). The prompt keeps at most Max length minus this.",
        label="Max answer tokens", minimum=1, maximum=8192, group="Sampling",
    )
    temperature: float = setting(
        0.7, "Sampling temperature of the answers; the log-probabilities use the same temperature.",
        label="Temperature", minimum=0.05, maximum=5.0, group="Sampling",
    )
    missing_eos_penalty: float = rl_setting("missing_eos_penalty")
    kl_coef: float = setting(
        0.05, "Weight of the per-token KL penalty against the reference (the base with adapters off). "
              "Higher keeps the policy closer to the base model.",
        label="KL coefficient", minimum=0.0, maximum=10.0, group="PPO",
    )
    kl_estimator: str = setting(
        "k1", "How each token's KL is estimated: k1 = log p - log q (unbiased, can be negative per token); "
              "k3 = (q/p - 1) - log(q/p) (unbiased, never negative, lower variance).",
        label="KL estimator", choices=("k1", "k3"), group="PPO", advanced=True,
    )
    num_ppo_epochs: int = setting(
        4, "Passes of clipped policy and value updates over each batch of sampled answers.",
        label="PPO epochs", minimum=1, maximum=64, group="PPO",
    )
    num_mini_batches: int = setting(
        1, "Optimizer steps per PPO epoch: the sampled batch (Batch size x Gradient accumulation x this) is "
           "split into this many mini-batches.",
        label="Mini-batches", minimum=1, maximum=64, group="PPO", advanced=True,
    )
    cliprange: float = setting(
        0.2, "How far the probability ratio new/old may move per update before the policy loss stops rewarding "
             "it.", label="Policy clip range", minimum=0.001, maximum=10.0, group="PPO", advanced=True,
    )
    cliprange_value: float = setting(
        0.2, "How far a value prediction may move per update before the value loss stops rewarding it.",
        label="Value clip range", minimum=0.001, maximum=100.0, group="PPO", advanced=True,
    )
    vf_coef: float = setting(
        0.1, "Weight of the value loss against the policy loss.",
        label="Value loss weight", minimum=0.0, maximum=100.0, group="PPO", advanced=True,
    )
    gamma: float = setting(
        1.0, "Discount of later rewards; 1 counts the final score fully at every token.",
        label="Discount (gamma)", minimum=0.0, maximum=1.0, group="PPO", advanced=True,
    )
    lam: float = setting(
        0.95, "GAE lambda: trades the value function's bias (lower) against the sampled return's variance "
              "(higher).", label="GAE lambda", minimum=0.0, maximum=1.0, group="PPO", advanced=True,
    )
    whiten_rewards: bool = setting(
        False, "Normalise the per-token rewards of each batch before GAE (helps when scores are on a large "
               "scale).", label="Whiten rewards", group="PPO", advanced=True,
    )


def validate(cfg: PPORunConfig) -> list[tuple[str, str]]:
    return completion_room(cfg, "max_completion_length", "Max answer tokens")


def settings_of(cfg: PPORunConfig):
    from backend.methods.ppo_training.trainer import RolloutSettings

    return RolloutSettings(
        max_completion_length=cfg.max_completion_length,
        max_prompt_length=max(1, cfg.max_length - cfg.max_completion_length),
        temperature=cfg.temperature, kl_coef=cfg.kl_coef, kl_estimator=cfg.kl_estimator,
        num_ppo_epochs=cfg.num_ppo_epochs, num_mini_batches=cfg.num_mini_batches, cliprange=cfg.cliprange,
        cliprange_value=cfg.cliprange_value, vf_coef=cfg.vf_coef, gamma=cfg.gamma, lam=cfg.lam,
        whiten_rewards=cfg.whiten_rewards, missing_eos_penalty=cfg.missing_eos_penalty,
    )


def build_args(cfg: PPORunConfig, args: dict):
    from transformers import TrainingArguments

    shared = {k: v for k, v in args.items() if k != "max_length"}  # the rollout settings carry the lengths
    # The loop reads the prompt column itself; the Trainer must not drop it as unused.
    return TrainingArguments(**shared, remove_unused_columns=False)


def build(ctx: BuildContext, scorer=None):
    """The trainer, with the reward model of ``cfg.reward_model`` (or ``scorer``: anything with
    ``score(prompts, completions)``, or a plain callable, as tests and benchmarks pass)."""
    from backend.methods.ppo_training.trainer import RolloutTrainer, attach_value_function

    from transformers import set_seed

    cfg = ctx.cfg
    # The adapters' random start is part of the run: seeded here, it does not depend on what
    # the process drew before (a test session, a second trainer in one process).
    set_seed(cfg.seed)
    model = attach_value_function(ctx.model, ctx.peft_config)
    if scorer is None:
        scorer = load_scorer(cfg, policy_model=model, tokenizer=ctx.tokenizer)
    return RolloutTrainer(model=model, args=ctx.args, settings=settings_of(cfg), scorer=scorer,
                          processing_class=ctx.tokenizer, train_dataset=ctx.train_dataset,
                          eval_dataset=ctx.eval_dataset, callbacks=ctx.callbacks)


NO_REWARD_MODEL = ("PPO needs a reward model to score its answers: choose a reward-model run (train one with "
                   "the Reward model method) or a model folder with a one-output sequence-classification head")


def missing_inputs(cfg: PPORunConfig) -> list[tuple[str, str]]:
    return [] if cfg.reward_model else [("reward_model", NO_REWARD_MODEL)]


def load_scorer(cfg: PPORunConfig, policy_model=None, tokenizer=None, log=None):
    """The reward model's scorer. Given the policy's PEFT model, a reward-model run trained on
    the same base becomes a third adapter on it; anything else loads separately. The log
    says which, and why."""
    from backend.rewards.scoring import load_reward_scorer, locate_reward_model
    from backend.runs.config import ConfigError

    if not cfg.reward_model:
        raise ConfigError(missing_inputs(cfg))
    log = log or (lambda message: print(message, flush=True))
    if policy_model is not None:
        from backend.methods.ppo_training.shared_reward import base_weight_mb, placement, shared_base_scorer

        location = locate_reward_model(cfg.reward_model)
        chosen = placement(cfg, location)
        log(chosen.reason)
        if chosen.shared:
            scorer = shared_base_scorer(policy_model, tokenizer, location)
            log(f"Reward model on the shared base: about {base_weight_mb(policy_model):.1f} MB of base weights "
                "not loaded a second time.")
            return scorer
    return load_reward_scorer(cfg.reward_model, trust_remote_code=cfg.trust_remote_code,
                              allow_pickle_weights=cfg.allow_pickle_weights)


PPO_METRICS = (
    Metric("objective/scores", "scores", "Reward model score", "score", role="reward", order=10),
    Metric("objective/rlhf_reward", "scores", "Reward model score", "RLHF reward (score − KL penalty)",
           role="margin", order=10),
    Metric("objective/kl", "kl", "KL to the reference (per answer)", "KL", role="kl", order=20),
    Metric("objective/entropy", "entropy", "Entropy of the answers (per answer)", "entropy", role="neutral",
           order=30),
    Metric("loss/policy_avg", "losses", "Policy and value losses", "policy", role="train", order=40),
    Metric("loss/value_avg", "losses", "Policy and value losses", "value", role="accuracy", order=40),
    Metric("policy/clipfrac_avg", "clipfrac", "Clipped fraction", "policy", role="train", order=50),
    Metric("val/clipfrac_avg", "clipfrac", "Clipped fraction", "value", role="accuracy", order=50),
    Metric("policy/approxkl_avg", "approxkl", "Approximate KL per update (old → new)", "approx KL", role="kl",
           order=60),
    Metric("completions/mean_length", "length", "Answer length (tokens)", "mean length", role="length", order=70),
)

SPEC = MethodSpec(
    key="ppo",
    label="PPO",
    title="PPO (proximal policy optimisation, RLHF)",
    group="RL",
    summary="Samples answers to prompts and learns from a reward model's scores, kept close to the base by KL.",
    config=PPORunConfig,
    data=DataNeed(
        accepts=frozenset({"prompts", "pairs"}),
        convert={"pairs": "prompts_from_pairs"},
        needs="prompts (pairs give their prompts); answers are sampled and scored by the reward model",
        refusals={
            "single": ("{name} samples its own answers and needs prompts only; this file has prompt/answer rows "
                       "({format}). Train a supervised method on it first, or give a file with a prompt column."),
            "unpaired": ("{name} samples its own answers and needs prompts only; this file has answers labelled "
                         "good or bad ({format}). Use it to train a reward model, or give a file of prompts."),
        },
    ),
    build_args=build_args,
    build=build,
    metrics=PPO_METRICS,
    expected_keys=("loss", "objective/scores", "objective/kl", "objective/rlhf_reward", "objective/entropy",
                   "objective/non_score_reward", "policy/approxkl_avg", "policy/clipfrac_avg", "policy/entropy_avg",
                   "loss/policy_avg", "loss/value_avg", "val/clipfrac_avg", "val/ratio", "val/num_eos_tokens",
                   "completions/mean_length", "learning_rate", "grad_norm"),
    headline=("objective/scores", "objective/kl", "objective/rlhf_reward", "loss/policy_avg", "loss/value_avg"),
    summary_metrics=(("objective/scores", "score"), ("objective/kl", "KL"), ("objective/rlhf_reward", "RLHF reward")),
    diagnostics=("non_finite_loss", "answer_kl_runaway", "value_loss_diverging", "entropy_collapse"),
    memory=MemoryTraits(sequences_per_example=1, reference_pass=True, full_logits=True),
    requires=("reward_model",),
    validate=validate,
    missing_inputs=missing_inputs,
    samples=True,
)
