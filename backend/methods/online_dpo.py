"""Online DPO: the policy answers each prompt twice while it trains, a reward model run,
the graders or a judge model say which answer is better, and DPO learns from that fresh pair.

TRL 1.16 keeps the trainer in ``trl.experimental.online_dpo`` and dropped its ``judge``
parameter: every judge is a reward function now, so a reward model run is wrapped as one
(the ``reward_model`` grader) beside the graders' functions, a judge model asked pairwise in
both orders is one too (``backend.graders.judge``), and the pair's order comes from their
weighted sum. The reference is the base model with the
adapter off, as in offline DPO.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from backend.methods.pairwise import PAIRWISE_METRICS, PAIRWISE_SUMMARY
from backend.methods.rl_common import RL_DATA, grader_entries, rl_setting
from backend.methods.spec import BuildContext, MemoryTraits, Metric, MethodSpec
from backend.runs.config import BaseRunConfig, setting

@dataclass
class OnlineDPORunConfig(BaseRunConfig):
    """Online DPO: pairs sampled from the policy and labelled by a reward model, graders or a judge model."""

    method: str = field(default="online_dpo", metadata={"help": "Training method", "internal": True})
    learning_rate: float = setting(
        5e-6, "Peak learning rate. As for DPO: 1e-6 to 5e-5 with LoRA.",
        label="Learning rate", minimum=1e-9, maximum=1e-1,
    )
    beta: float = setting(
        0.1, "How far the model may move from the reference (the base with the adapter off). Higher keeps it "
        "closer; 0.01-0.5 is typical.",
        label="Beta", minimum=1e-6, maximum=100.0, group="Preference",
    )
    loss_type: str = setting(
        "sigmoid", "sigmoid is DPO's loss; ipo regularises harder against overfitting the labels.",
        label="Loss type", choices=("sigmoid", "ipo"), group="Preference",
    )
    # Online DPO labels with the reward model alone unless graders are added.
    graders: list = rl_setting("graders", default_factory=list)
    reward_file: str = rl_setting("reward_file")
    reward_model: str = rl_setting("reward_model")
    allow_reward_code: bool = rl_setting("allow_reward_code")
    judge_model: str = setting(
        "", "A model that reads the prompt and both sampled answers and says which is better, asked in both "
        "orders: the answer both orders prefer is chosen; when they disagree the pair counts as a tie. Any "
        "model the studio can load (a folder, a .gguf file, a cached hub id, a run folder; 'embedded' for the "
        "embedded model); an instruct model judges best. Empty: no judge.",
        label="Judge model", group="Reward", placeholder="e.g. a folder with an instruct model",
    )
    max_new_tokens: int = setting(
        64, "Longest sampled answer in tokens. Sampling is the slow part of a step: keep it short.",
        label="Max new tokens", minimum=1, maximum=8192, group="Sampling",
    )
    temperature: float = setting(
        0.9, "Sampling temperature of the two answers; they must differ for the pair to teach anything.",
        label="Temperature", minimum=0.01, maximum=5.0, group="Sampling",
    )
    top_p: float = rl_setting("top_p")
    sampling_backend: str = rl_setting("sampling_backend")
    top_k: int = setting(
        0, "Sample only from this many most likely tokens. 0 disables it.",
        label="Top-k", minimum=0, maximum=100000, group="Sampling", advanced=True,
    )
    missing_eos_penalty: float = rl_setting("missing_eos_penalty")


NO_REWARD_SOURCE = ("Online DPO needs something to label its sampled pairs: pick a reward model run (Reward model, "
                    "--reward-model), add graders (--reward), or name a judge model (Judge model, "
                    "--set judge_model=MODEL)")


def validate(cfg: OnlineDPORunConfig) -> list[tuple[str, str]]:
    """The graders named are checked here; a missing reward source is the required input
    (``requires``) the form and the CLI ask for, refused by ``build`` if still missing."""
    from backend.graders import entry_problems

    entries = grader_entries(cfg)
    problems = [("graders", m) for m in entry_problems(entries, reward_file=cfg.reward_file,
                                                       reward_model=cfg.reward_model)]
    if cfg.reward_file and not any(str(e.get("grader", "")).startswith("file:") for e in entries):
        problems.append(("reward_file", "the reward file is set but no grader uses it; add file:<function> "
                                        "graders"))
    if cfg.judge_model.strip():
        from backend.graders.judge import check_judge_model

        why = check_judge_model(cfg.judge_model.strip())
        if why:
            problems.append(("judge_model", why))
    return problems


def missing_inputs(cfg: OnlineDPORunConfig) -> list[tuple[str, str]]:
    return [] if grader_entries(cfg) or cfg.judge_model.strip() else [("reward_model", NO_REWARD_SOURCE)]


def reward_weights(cfg: OnlineDPORunConfig) -> list[float]:
    """One weight per reward function, in ``build``'s order: the graders', then the judge's (1)."""
    return [float(e.get("weight", 1.0)) for e in grader_entries(cfg)] + ([1.0] if cfg.judge_model.strip() else [])


def build_args(cfg: OnlineDPORunConfig, args: dict):
    from backend.methods.trl_experimental import OnlineDPOConfig
    from backend.training import sampling_backend

    return OnlineDPOConfig(
        **args, beta=cfg.beta, loss_type=cfg.loss_type, max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k,
        missing_eos_penalty=cfg.missing_eos_penalty or None,
        reward_weights=reward_weights(cfg),
        # The prompt column must reach training_step; the other columns go to the graders by name.
        remove_unused_columns=False, **sampling_backend.trl_keys(cfg, args),
    )


def build(ctx: BuildContext):
    """No ``ref_model``: with a PEFT model TRL uses the policy with its adapter disabled.
    The reward functions are the RL methods' (a reward file runs only when this launch
    granted it), then the judge model's."""
    from backend.methods.rl_common import reward_functions
    from backend.runs.config import ConfigError
    from backend.methods.trl_experimental import OnlineDPOTrainer

    cfg = ctx.cfg
    if missing_inputs(cfg):
        # The graders' own default (a format check) would label every pair silently.
        raise ConfigError(missing_inputs(cfg))
    # Without graders, reward_functions would fall back to that default: the judge alone labels.
    funcs = reward_functions(ctx) if grader_entries(cfg) else []
    if cfg.judge_model.strip():
        funcs.append(judge_function(cfg))
    trainer_class = with_sampled_evaluation(OnlineDPOTrainer)
    return trainer_class(ref_model=None, reward_funcs=funcs, **ctx.trainer_kwargs())


def judge_function(cfg: OnlineDPORunConfig):
    """The judge model loaded (as the policy's base is: same quantization) and wrapped as a reward function."""
    from backend.graders.judge import JudgeLoadError, judge_reward_function, load_judge
    from backend.runs.config import ConfigError

    try:
        judge = load_judge(cfg.judge_model.strip(), cfg.quantization)
    except JudgeLoadError as exc:
        raise ConfigError([("judge_model", str(exc))]) from exc
    print(f"Judge model {judge.label}: labels each sampled pair, asked in both orders.", flush=True)
    return judge_reward_function(judge)


def with_sampled_evaluation(trainer_class):
    """TRL's online DPO trainer cannot evaluate: the Trainer's evaluation loop feeds it raw
    prompts as if they were token ids. Here evaluation does what a step does before its loss:
    two answers per held-out prompt from the current policy, scored by the same reward
    functions; it reports their mean score and the gap between the two (eval_objective/...)."""

    class OnlineDPOWithEvaluation(trainer_class):
        def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
            from trl.data_utils import is_conversational

            dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
            if dataset is None or len(dataset) == 0:
                return {}
            size = self.args.per_device_eval_batch_size
            scores, gaps = [], []
            for start in range(0, len(dataset), size):
                batch = dataset[start:start + size]
                prompts = list(batch["prompt"])
                _ids, _mask, completion_ids, _completion_mask, _vision = self._generate(self.model, prompts)
                completions = self.processing_class.batch_decode(completion_ids, skip_special_tokens=True)
                if is_conversational({"prompt": prompts[0]}):
                    completions = [[{"role": "assistant", "content": c}] for c in completions]
                columns = {k: list(v) * 2 for k, v in batch.items() if k != "prompt"}
                rewards = self._calculate_rewards_from_functions(
                    prompts=2 * prompts, completions=completions,
                    completion_ids_list=[ids.tolist() for ids in completion_ids], **columns)
                first, second = rewards.split(len(prompts))
                scores += rewards.tolist()
                gaps += (first - second).abs().tolist()
                self.control = self.callback_handler.on_prediction_step(self.args, self.state, self.control)
            metrics = {f"{metric_key_prefix}_objective/scores": _mean(scores),
                       f"{metric_key_prefix}_objective/scores_margin": _mean(gaps)}
            self.log(metrics)
            self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
            return metrics

    return OnlineDPOWithEvaluation


def _mean(values: list[float]) -> float:
    values = [v for v in values if v == v]
    return sum(values) / len(values) if values else float("nan")


# Online DPO logs no mean logits.
ONLINE_METRICS = tuple(m for m in PAIRWISE_METRICS if not m.key.startswith("logits/")) + (
    Metric("objective/scores", "scores", "Reward of the sampled answers", "mean score", role="reward", order=10),
    Metric("objective/scores_margin", "scores_margin", "Score margin (chosen − rejected sample)", "score margin",
           role="margin", order=12),
    Metric("objective/rlhf_reward", "rlhf_reward", "Score minus KL penalty", "RLHF reward", role="reward",
           order=14),
    Metric("objective/kl", "kl", "KL to the reference", "KL", role="kl", order=16),
    Metric("objective/entropy", "entropy", "Entropy of the samples", "entropy", role="neutral", order=70),
    Metric("val/contain_eos_token", "eos", "Samples that ended by themselves", "share ended", role="length",
           order=72),
)

SPEC = MethodSpec(
    key="online_dpo",
    label="Online DPO",
    title="Online DPO (pairs sampled from the model, labelled by a reward model, graders or a judge)",
    group="Online",
    summary="Samples two answers per prompt while training; a reward model, graders or a judge model pick the "
            "better one.",
    config=OnlineDPORunConfig,
    data=RL_DATA,
    build_args=build_args,
    build=build,
    metrics=ONLINE_METRICS,
    expected_keys=("loss", "objective/scores", "objective/scores_margin", "objective/rlhf_reward", "objective/kl",
                   "objective/entropy", "rewards/margins", "rewards/chosen", "rewards/rejected",
                   "rewards/accuracies", "logps/chosen", "logps/rejected", "val/contain_eos_token",
                   "learning_rate", "grad_norm"),
    headline=("loss", "objective/scores", "objective/scores_margin", "rewards/margins", "objective/kl"),
    summary_metrics=(("objective/scores", "score"), ("objective/scores_margin", "score margin")) + PAIRWISE_SUMMARY,
    diagnostics=("non_finite_loss", "both_pushed_down", "margins_flat"),
    # Two sampled answers per prompt, a reference pass, and generation on top.
    memory=MemoryTraits(sequences_per_example=2, reference_pass=True, adapter_half_when_quantized=True),
    implicit_reward=True,
    requires=("reward_model",),
    validate=validate,
    missing_inputs=missing_inputs,
)
