"""KTO (Kahneman-Tversky optimisation): single answers labelled good or bad, no pairs needed.

Each answer's implicit reward is beta times its policy/reference log-ratio; good answers are
pushed above, bad ones below, a reference point that is the KL between policy and reference,
estimated on mismatched (prompt, answer) pairs of the same batch. So every step runs the
reference over two sequences per example, and the batch order matters (see ``order_rows``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from backend.methods.spec import BuildContext, DataNeed, MemoryTraits, Metric, MethodSpec
from backend.runs.config import BaseRunConfig, setting
from backend.training.speed_options import TrainedTokenScoring

KTO_LOSS_TYPES = ("kto", "apo_zero_unpaired")
# TRL's advice (from the KTO paper, eq. 8): the good side, weighted, should outweigh the bad
# side by a factor between 1 and 4/3.
BALANCE_LOW, BALANCE_HIGH = 1.0, 4 / 3


@dataclass
class KTORunConfig(TrainedTokenScoring, BaseRunConfig):
    """KTO on answers labelled good or bad (thumbs up/down); pairs are split into one of each."""

    method: str = field(default="kto", metadata={"help": "Training method", "internal": True})
    learning_rate: float = setting(
        5e-6, "Peak learning rate. As for DPO: 1e-6 to 5e-5 with LoRA.",
        label="Learning rate", minimum=1e-9, maximum=1e-1,
    )
    beta: float = setting(
        0.1, "How far the model may move from the reference (the base with the adapter off). "
        "Higher keeps it closer; 0.01-0.5 is typical.",
        label="Beta", minimum=1e-6, maximum=100.0, group="Preference",
    )
    desirable_weight: float = setting(
        1.0, "Weight of the loss on answers labelled good. With more bad than good answers, raise it so "
        "that good × weight is 1 to 1.33 times bad × its weight (the data report says by how much).",
        label="Desirable weight", minimum=1e-3, maximum=100.0, group="Preference",
    )
    undesirable_weight: float = setting(
        1.0, "Weight of the loss on answers labelled bad. With more good than bad answers, keep good × its "
        "weight 1 to 1.33 times bad × this weight.",
        label="Undesirable weight", minimum=1e-3, maximum=100.0, group="Preference",
    )
    loss_type: str = setting(
        "kto", "kto is the paper's loss; apo_zero_unpaired (anchored preference) pushes good answers up and "
        "bad ones down without the KL reference point, for when the good answers beat what the model writes now.",
        label="Loss type", choices=KTO_LOSS_TYPES, group="Preference", advanced=True,
    )
    precompute_ref_log_probs: bool = setting(
        False, "Compute the reference log-probs once before training: saves memory and time per step.",
        label="Precompute reference", group="Preference", advanced=True,
    )


def balance_advice(good: int, bad: int, desirable_weight: float = 1.0,
                   undesirable_weight: float = 1.0) -> str | None:
    """Why and how to reweigh unbalanced classes, in words; None when they are in TRL's range."""
    if good == 0 or bad == 0:
        which, other = ("good", "bad") if bad == 0 else ("bad", "good")
        return (f"KTO: every answer is labelled {which}. It still trains, but it learns what to do and what to "
                f"avoid only with some answers labelled {other} too.")
    ratio = desirable_weight * good / (undesirable_weight * bad)
    if BALANCE_LOW <= ratio <= BALANCE_HIGH + 1e-9:
        return None
    # Either weight alone can bring the ratio into range: name both, the other kept as it is.
    und_low, und_high = desirable_weight * good / (BALANCE_HIGH * bad), desirable_weight * good / bad
    des_low, des_high = undesirable_weight * bad / good, BALANCE_HIGH * undesirable_weight * bad / good
    return (f"KTO: {good:,} answers are labelled good and {bad:,} bad, so with desirable weight "
            f"{desirable_weight:g} and undesirable weight {undesirable_weight:g} the good side weighs {ratio:.2f}× "
            f"the bad (TRL recommends 1 to 1.33×). Set the undesirable weight to {und_low:.2f}–{und_high:.2f}, or "
            f"the desirable weight to {des_low:.2f}–{des_high:.2f}.")


def data_advice(cfg: KTORunConfig | None, report) -> list[str]:
    counts = getattr(report, "label_counts", None)
    if not counts:
        return []  # pairs split into exactly one good and one bad answer each
    cfg = cfg or KTORunConfig()
    text = balance_advice(counts["good"], counts["bad"], cfg.desirable_weight, cfg.undesirable_weight)
    return [text] if text else []


def validate(cfg: KTORunConfig) -> list[tuple[str, str]]:
    problems = []
    if cfg.loss_type == "kto" and cfg.per_device_train_batch_size < 2:
        # TRL raises this only once the model is loaded; say it before.
        problems.append(("per_device_train_batch_size",
                         "KTO needs a batch size of at least 2: it estimates its KL term from the answers of the "
                         "other rows in the batch"))
    if "lm_head" in [t.strip() for t in cfg.lora_target_modules.split(",")]:
        problems.append(("lora_target_modules", "LoRA target modules: KTO cannot train an adapter on lm_head; "
                                                "remove it from the list"))
    return problems


def order_rows(labels: list[bool], seed: int) -> list[int]:
    """Row order for TRL's sequential sampler: each class shuffled, then the two spread evenly
    through the run, so every batch holds good and bad answers in the data's proportion and a
    row's neighbour (whose answer the KL estimate borrows) is a random other row."""
    import random

    rng = random.Random(seed)
    good = [i for i, g in enumerate(labels) if g]
    bad = [i for i, g in enumerate(labels) if not g]
    rng.shuffle(good)
    rng.shuffle(bad)
    keyed = [((k + 0.5) / len(good), 0, i) for k, i in enumerate(good)]
    keyed += [((k + 0.5) / len(bad), 1, i) for k, i in enumerate(bad)]
    return [i for *_key, i in sorted(keyed)]


def build_args(cfg: KTORunConfig, args: dict):
    from trl import KTOConfig

    return KTOConfig(**args, **trl_cli_keys(cfg))


def build(ctx: BuildContext):
    """No ``ref_model``: with a PEFT model TRL uses the policy with its adapter disabled as the
    reference. The rows are put in ``order_rows`` order, which TRL's sequential sampler keeps."""
    from trl import KTOTrainer

    cfg, train = ctx.cfg, ctx.train_dataset
    labels = train["label"]
    advice = balance_advice(sum(labels), len(labels) - sum(labels), cfg.desirable_weight, cfg.undesirable_weight)
    if advice:
        print(f"Data: {advice}", flush=True)
    ctx.train_dataset = train.select(order_rows(labels, cfg.seed)).flatten_indices()
    return KTOTrainer(ref_model=None, **ctx.trainer_kwargs())


def trl_cli_keys(cfg: KTORunConfig) -> dict:
    return dict(beta=cfg.beta, desirable_weight=cfg.desirable_weight, undesirable_weight=cfg.undesirable_weight,
                loss_type=cfg.loss_type, precompute_ref_log_probs=cfg.precompute_ref_log_probs)


SPEC = MethodSpec(
    key="kto",
    label="KTO",
    title="KTO (Kahneman-Tversky optimisation)",
    group="Offline preference",
    summary="Learns from single answers marked good or bad (thumbs up/down), no pairs needed; pairs are split.",
    config=KTORunConfig,
    data=DataNeed(
        accepts=frozenset({"unpaired", "pairs"}),
        convert={"pairs": "unpair"},
        convert_notes={"pairs": "{name} trains on each pair as a good and a bad answer."},
        needs="answers labelled good or bad: prompt/completion/label, or a conversation (messages or "
              "ShareGPT) with a label or kto_tag judging its last reply; pairs are split",
        refusals={
            "single": ("{name} needs answers labelled good or bad; this file has demonstrations only ({format}). "
                       "Add a label column (true/false, good/bad, thumbs up/down) or use a supervised method."),
            "prompts": ("{name} needs an answer labelled good or bad for each prompt; this file has prompts only "
                        "({format}). Use a method that samples its own answers and grades them."),
        },
    ),
    build_args=build_args,
    build=build,
    metrics=(
        # Estimated on mismatched answers of the batch; the title is shared with every method logging "kl".
        Metric("kl", "kl", "KL to the reference", "KL", role="kl", order=15),
        Metric("rewards/margins", "margins", "Reward margin (good − bad)", "margin", role="margin", order=20),
        # TRL names the good side "chosen" and the bad side "rejected", as for pairs.
        *(Metric(f"{family}/{side}", family, f"{title}: good vs bad answers", word, role=side, order=order)
          for family, title, order in (("rewards", "Rewards", 30), ("logps", "Log-probs", 50),
                                       ("logits", "Mean logits", 80))
          for side, word in (("chosen", "good"), ("rejected", "bad"))),
        Metric("entropy", "entropy", "Entropy of the answers", "entropy", order=90),
    ),
    # As KTOTrainer 1.16 logs them (margins only for a step whose batch held both labels).
    expected_keys=("loss", "kl", "rewards/margins", "rewards/chosen", "rewards/rejected", "logps/chosen",
                   "logps/rejected", "logits/chosen", "logits/rejected", "entropy", "num_tokens", "learning_rate",
                   "grad_norm"),
    headline=("loss", "kl", "rewards/margins", "rewards/chosen", "rewards/rejected"),
    summary_metrics=(("loss", "loss"), ("rewards/margins", "margin"), ("kl", "KL")),
    diagnostics=("non_finite_loss", "both_pushed_down", "margins_flat"),
    # The answer and a mismatched one (the KL batch), each through the policy and the reference.
    memory=MemoryTraits(sequences_per_example=2, reference_pass=True,
                        reference_skip_setting="precompute_ref_log_probs", adapter_half_when_quantized=True),
    implicit_reward=True,
    validate=validate,
    data_advice=data_advice,
    trl_cli="kto",
    trl_cli_keys=trl_cli_keys,
)
