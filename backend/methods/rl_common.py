"""What the RL methods share: sampling settings, graders, data, checks, metrics.

The methods that sample while they train declare their settings once here: the group
methods inherit ``RLRunConfig``; the others take single settings with ``rl_setting``
(the same key, help, label and form) and the answer-length check with ``completion_room``.

The policy samples several completions per prompt while it trains, the graders
(``backend.graders``) score each one, and the advantage of a completion is its reward
relative to the others of its group. Torch-free at import: TRL is imported in
``build`` only, and the reward functions are made there, in the worker.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from backend.methods.spec import DataNeed, MemoryTraits, Metric, MethodSpec
from backend.runs.config import BaseRunConfig, setting
from backend.training import sampling_backend
from backend.training.speed_options import TrainedTokenScoring

GROUP = "RL"


def _default_graders() -> list[dict]:
    from backend.graders import DEFAULT_GRADERS

    return [dict(g) for g in DEFAULT_GRADERS]


@dataclass
class RLRunConfig(TrainedTokenScoring, BaseRunConfig):
    """Settings every method that samples and grades its own completions has."""

    learning_rate: float = setting(
        5e-5, "Peak learning rate. RL with LoRA: 1e-5 to 1e-4; higher learns faster and collapses sooner.",
        label="Learning rate", minimum=1e-9, maximum=1e-1,
    )
    num_generations: int = setting(
        4, "Completions sampled per prompt (the group). Each is judged against the others of its group, so "
        "at least 2; more gives a steadier signal and costs sampling time. Batch size x gradient accumulation "
        "must be a multiple of it.",
        label="Completions per prompt", minimum=2, maximum=1024, group="Sampling",
    )
    max_completion_length: int = setting(
        32, "Longest sampled completion in tokens. Sampling is most of a step's time: keep it as short as "
        "the task allows (32 suits short answers on a CPU; reasoning wants hundreds, on a GPU). Prompt plus "
        "completion must fit in Max length.",
        label="Max completion length", minimum=1, maximum=131072, group="Sampling",
    )
    temperature: float = setting(
        1.0, "Sampling temperature. The completions of a group must differ for any of them to be better "
        "than the others; below about 0.7 they often come out the same.",
        label="Temperature", minimum=0.01, maximum=5.0, group="Sampling",
    )
    top_p: float = setting(
        1.0, "Sample only from the most likely tokens that together hold this much probability. 1 disables it.",
        label="Top-p", minimum=0.01, maximum=1.0, group="Sampling", advanced=True,
    )
    sampling_backend: str = sampling_backend.sampling_backend_setting()
    num_iterations: int = setting(
        1, "Optimisation passes over each batch of sampled completions before sampling again (mu). Above 1 "
        "reuses samples (faster per completion) and turns on the clipping of the policy ratio.",
        label="Iterations per generation", minimum=1, maximum=64, group="Sampling", advanced=True,
    )
    mask_truncated_completions: bool = setting(
        False, "Leave completions cut at Max completion length out of the loss: their reward judges an "
        "unfinished answer (the DAPO paper recommends it).",
        label="Mask truncated completions", group="Sampling", advanced=True,
    )
    epsilon: float = setting(
        0.2, "Clipping range of the policy ratio (PPO-style), when samples are reused.",
        label="Clip epsilon", minimum=0.0, maximum=10.0, group="Reward", advanced=True,
    )
    graders: list = field(default_factory=_default_graders, metadata={
        "help": "What scores each completion: a list of entries {grader: <name>, weight: 1.0, ...settings}. "
                "Built-in graders (`alignstudio train --reward NAME`), file:<function> for a function of the "
                "reward file, reward_model for the reward model. The weighted sum is the reward.",
        "label": "Graders", "min": None, "max": None, "choices": None, "advanced": False, "group": "Reward"})
    reward_file: str = setting(
        "", "A Python file of your own reward functions with TRL's signature (prompts, completions, "
        "completion_ids and dataset columns by name; a list of floats, None to abstain). It runs only when "
        "you allow it.",
        label="Reward file", group="Reward",
    )
    reward_model: str = setting(
        "", "A reward model run folder (trained with the reward model method) or a model folder with a "
        "one-output classification head, for a reward_model grader.",
        label="Reward model", group="Reward",
    )
    allow_reward_code: bool = setting(
        False, "Let the reward file's functions run during training, with your permissions. Only for a file "
        "you trust; a config file or run folder can never turn this on.",
        label="Allow reward code", group="Reward", advanced=True,
    )


# Each shared setting once: RLRunConfig's fields, and those TRL's group trainers have no key for.
_SHARED_SETTINGS = {f.name: f for f in dataclasses.fields(RLRunConfig)}
_SHARED_SETTINGS["missing_eos_penalty"] = setting(
    0.0, "Subtracted from the score of an answer that did not end by itself within the answer length; 1.0 is "
    "typical to teach the model to finish (stops it learning to ramble). 0 applies none.",
    label="Unfinished answer penalty", minimum=0.0, maximum=100.0, group="Reward", advanced=True,
)


def rl_setting(name: str, **changes):
    """The shared setting ``name`` for a config that is not an ``RLRunConfig`` (same YAML key,
    help, label and form); ``default=`` or ``default_factory=`` replace its default."""
    source = _SHARED_SETTINGS[name]
    values = dict(default=source.default, default_factory=source.default_factory, metadata=source.metadata)
    values.update(changes)
    if "default" in changes:
        values["default_factory"] = dataclasses.MISSING
    if "default_factory" in changes:
        values["default"] = dataclasses.MISSING
    return field(**values)


def completion_room(cfg, length_field: str, label: str) -> list[tuple[str, str]]:
    """The sampled answer's token budget must leave the prompt room in Max length."""
    length = getattr(cfg, length_field)
    if length < cfg.max_length:
        return []
    return [(length_field, f"{label} ({length}) leaves no room for the prompt in Max length ({cfg.max_length}); "
                           "prompt plus answer must fit. Raise Max length or shorten the answers.")]


def grader_entries(cfg) -> list[dict]:
    entries = list(getattr(cfg, "graders", None) or [])
    if getattr(cfg, "reward_model", "") and not any(isinstance(e, dict) and e.get("grader") == "reward_model"
                                                   for e in entries):
        # Naming a reward model means grading with it: no separate entry needed.
        entries.append({"grader": "reward_model", "weight": 1.0})
    return entries


def validate_rl(cfg: RLRunConfig) -> list[tuple[str, str]]:
    """What TRL would refuse only after the model has loaded, said before anything loads."""
    from backend.graders import entry_problems
    from backend.training.trainer_builders import eval_batch_size

    problems: list[tuple[str, str]] = []
    groups = cfg.num_generations
    generation_batch = cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps
    if groups >= 2 and generation_batch % groups:
        problems.append(("num_generations", (
            f"Completions per prompt ({groups}) must divide Batch size x Gradient accumulation "
            f"({cfg.per_device_train_batch_size} x {cfg.gradient_accumulation_steps} = {generation_batch}): "
            "each batch of samples holds whole groups. For example set Gradient accumulation to "
            f"{_accumulation_for(cfg.per_device_train_batch_size, cfg.gradient_accumulation_steps, groups)}, or "
            f"Completions per prompt to {_divisor_at_most(generation_batch, groups)}.")))
    if cfg.eval_fraction > 0 and groups >= 2 and eval_batch_size(cfg) % groups:
        problems.append(("eval_batch_size", (
            f"Evaluation batch size ({eval_batch_size(cfg)}) must be a multiple of Completions per prompt "
            f"({groups}): held-out prompts are sampled in whole groups too. Set it to "
            f"{_next_multiple(eval_batch_size(cfg), groups)}, or Held-out fraction to 0.")))
    problems += completion_room(cfg, "max_completion_length", "Max completion length")
    if "lm_head" in [t.strip() for t in cfg.lora_target_modules.split(",")]:
        # TRL computes the completions' log-probs from lm_head.weight directly: an adapter there never trains.
        problems.append(("lora_target_modules", "LoRA target modules: the RL trainers cannot train an adapter "
                                                "on lm_head; remove it from the list"))
    entries = grader_entries(cfg)
    if not entries:
        problems.append(("graders", "no grader: add at least one (a built-in grader, a function of the reward "
                                    "file, or a reward model), or nothing tells good completions from bad"))
    for message in entry_problems(entries, reward_file=cfg.reward_file, reward_model=cfg.reward_model):
        problems.append(("graders", message))
    uses_file = any(isinstance(e, dict) and str(e.get("grader", "")).startswith("file:") for e in entries)
    if cfg.reward_file and not uses_file:
        missing = not Path(cfg.reward_file).expanduser().is_file()
        problems.append(("reward_file", f"the reward file {cfg.reward_file} does not exist" if missing else
                         f"the reward file {Path(cfg.reward_file).name} is set but no grader uses it; add "
                         "file:<function> graders (--reward file:NAME)"))
    return problems


def _next_multiple(value: int, of: int) -> int:
    return ((value + of - 1) // of) * of


def _accumulation_for(batch: int, accumulation: int, groups: int) -> int:
    return next(a for a in range(accumulation, accumulation + groups + 1) if batch * a % groups == 0)


def _divisor_at_most(value: int, limit: int) -> int:
    return max([d for d in range(2, limit + 1) if value % d == 0] or [value])


def rl_trl_keys(cfg: RLRunConfig, args: dict) -> dict:
    """The shared TRL config keys; ``max_length`` is the studio's budget for prompt plus
    completion, not a key of TRL's RL configs."""
    args = {k: v for k, v in args.items() if k != "max_length"}
    return dict(args, num_generations=cfg.num_generations, max_completion_length=cfg.max_completion_length,
                temperature=cfg.temperature, top_p=cfg.top_p, num_iterations=cfg.num_iterations,
                mask_truncated_completions=cfg.mask_truncated_completions, epsilon=cfg.epsilon,
                beta=cfg.beta, reward_weights=[float(e.get("weight", 1.0)) for e in grader_entries(cfg)],
                generation_kwargs={"use_cache": True}, **sampling_backend.trl_keys(cfg, args))


def group_trainer(ctx, trainer_class):
    """A TRL group trainer on the graders' reward functions. No ``ref_model``: with a PEFT
    model TRL's reference is the policy with its adapter off."""
    fit_prompts(ctx)
    return trainer_class(reward_funcs=reward_functions(ctx), **ctx.trainer_kwargs())


def reward_functions(ctx) -> list:
    """The guarded reward functions of ``ctx.cfg``'s graders, made in the worker. A reward
    file runs only when this launch granted that exact file (backend.runs.code_permissions)."""
    from backend.runs.code_permissions import REWARD_CODE, file_subject, granted_in_launch
    from backend.graders import build_reward_functions

    cfg = ctx.cfg
    allowed = False
    if cfg.reward_file:
        try:
            allowed = granted_in_launch(file_subject(cfg.reward_file, REWARD_CODE))
        except FileNotFoundError:
            allowed = False
    run_dir = Path(ctx.args.output_dir).parent
    funcs, _weights, _names = build_reward_functions(
        grader_entries(cfg), reward_file_allowed=allowed, run_dir=run_dir, reward_file=cfg.reward_file,
        reward_model=cfg.reward_model,
        model_permissions={"trust_remote_code": cfg.trust_remote_code,
                           "allow_pickle_weights": cfg.allow_pickle_weights})
    return funcs


def fit_prompts(ctx) -> None:
    """Prompts longer than Max length less Max completion length, per the Long prompts
    setting: cut from the start (text prompts), dropped, or refused. TRL's RL trainers
    do not cut prompts themselves."""
    from backend.runs.config import ConfigError

    cfg, tok = ctx.cfg, ctx.tokenizer
    budget = cfg.max_length - cfg.max_completion_length
    policy = getattr(cfg, "long_prompts", "truncate_left") or "truncate_left"

    def length(prompt) -> int:
        if isinstance(prompt, list):
            return len(tok.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True))
        return len(tok(prompt, add_special_tokens=False)["input_ids"])

    def fit(ds, where: str):
        if ds is None or len(ds) == 0:
            return ds
        lengths = [length(p) for p in ds["prompt"]]
        long = [i for i, n in enumerate(lengths) if n > budget]
        if not long:
            return ds
        text = isinstance(ds[0]["prompt"], str)
        if policy == "refuse":
            raise ConfigError([("max_length", (
                f"{len(long)} {where} prompts are longer than Max length ({cfg.max_length}) less Max completion "
                f"length ({cfg.max_completion_length}) = {budget} tokens (the longest: {max(lengths)}). Raise Max "
                "length, shorten the completions, or set Long prompts to truncate_left or drop."))])
        if policy == "drop" or not text:
            keep = [i for i in range(len(ds)) if i not in set(long)]
            print(f"Data: {len(long)} {where} prompts longer than {budget} tokens left out.", flush=True)
            if not keep:
                raise ConfigError([("max_length", f"every {where} prompt is longer than {budget} tokens (Max "
                                                  "length less Max completion length); raise Max length")])
            return ds.select(keep)
        cut = set(long)

        def cut_left(row, index):
            if index in cut:
                ids = tok(row["prompt"], add_special_tokens=False)["input_ids"]
                row["prompt"] = tok.decode(ids[len(ids) - budget:])
            return row

        print(f"Data: {len(long)} {where} prompts cut from the start to {budget} tokens.", flush=True)
        return ds.map(cut_left, with_indices=True)

    ctx.train_dataset = fit(ctx.train_dataset, "training")
    ctx.eval_dataset = fit(ctx.eval_dataset, "held-out")


RL_DATA = DataNeed(
    accepts=frozenset({"prompts", "pairs"}),
    convert={"pairs": "prompts_from_pairs"},
    needs="prompts (a prompt/question/problem column, text or chat messages); any other column (answer, "
          "solution, ...) reaches the graders by name; pairs train on their prompts",
    refusals={"single": "{name} samples its own answers to each prompt and grades them; this file was read as "
                        "answers to imitate ({format}). If its answer column holds reference answers for the "
                        "graders, set Format to Prompts only (data_format: prompt_only, --set "
                        "data_format=prompt_only): every column other than the prompt then reaches the graders "
                        "by its own name.",
              "unpaired": "{name} grades its own sampled answers; this file holds answers judged good or bad "
                          "({format}). Use a method for unpaired feedback, or keep only the prompts."},
)

RL_METRICS = (
    Metric("reward", "reward", "Reward", "mean", role="reward", order=20),
    Metric("reward_std", "reward_std", "Reward spread within groups", "std", role="reward", order=22),
    Metric("rewards/*/mean", "graders", "Reward per grader", "*", role="reward", order=24),
    Metric("rewards/*/std", "graders_std", "Reward spread per grader", "*", role="neutral", order=26),
    Metric("frac_reward_zero_std", "zero_std", "Groups with all rewards equal (no signal)", "fraction",
           role="neutral", order=28),
    Metric("kl", "kl", "KL to the reference", "kl", role="kl", order=30),
    Metric("completions/mean_length", "length", "Completion length (tokens)", "mean", role="length", order=40),
    Metric("completions/min_length", "length", "Completion length (tokens)", "min", role="length", order=41,
           line="dot"),
    Metric("completions/max_length", "length", "Completion length (tokens)", "max", role="length", order=42,
           line="dash"),
    Metric("completions/mean_terminated_length", "length_terminated", "Length of finished completions",
           "mean", role="length", order=43),
    Metric("completions/min_terminated_length", "length_terminated", "Length of finished completions",
           "min", role="length", order=44, line="dot"),
    Metric("completions/max_terminated_length", "length_terminated", "Length of finished completions",
           "max", role="length", order=45, line="dash"),
    Metric("completions/clipped_ratio", "clipped", "Completions cut at the max length", "fraction",
           role="rejected", order=46),
    Metric("clip_ratio/region_mean", "clip", "Clipped policy ratio", "region", role="neutral", order=50),
    Metric("clip_ratio/low_mean", "clip", "Clipped policy ratio", "low", role="rejected", order=51),
    Metric("clip_ratio/high_mean", "clip", "Clipped policy ratio", "high", role="chosen", order=52),
    Metric("clip_ratio/low_min", "clip", "Clipped policy ratio", "low min", role="rejected", order=53, line="dot"),
    Metric("clip_ratio/high_max", "clip", "Clipped policy ratio", "high max", role="chosen", order=54, line="dot"),
)

RL_EXPECTED_KEYS = ("loss", "reward", "reward_std", "frac_reward_zero_std", "completions/mean_length",
                    "completions/clipped_ratio", "entropy", "learning_rate", "grad_norm")
RL_HEADLINE = ("reward", "reward_std", "frac_reward_zero_std", "completions/mean_length")
RL_SUMMARY = (("reward", "reward"), ("reward_std", "reward spread"), ("completions/mean_length", "length"))
RL_DIAGNOSTICS = ("non_finite_loss", "rewards_all_equal", "length_hacking", "completions_clipped", "kl_runaway",
                  "grader_constant")
RL_MEMORY = MemoryTraits(sequences_per_example=1, group_size_setting="num_generations",
                         generated_tokens_setting="max_completion_length")

# The demo of the RL group: a small verifiable task whose reward rises within a few dozen steps.
DEMO_NAME = "rlvr"


def rl_spec(**fields) -> MethodSpec:
    """A method spec with what every RL method shares: the group, data, metrics, memory, samples, demo."""
    shared = dict(group=GROUP, data=RL_DATA, metrics=RL_METRICS, expected_keys=RL_EXPECTED_KEYS,
                  headline=RL_HEADLINE, summary_metrics=RL_SUMMARY, diagnostics=RL_DIAGNOSTICS, memory=RL_MEMORY,
                  samples=True, demo=DEMO_NAME)
    return MethodSpec(**dict(shared, **fields))

