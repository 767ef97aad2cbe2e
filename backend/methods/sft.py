"""Supervised fine-tuning: imitate demonstrations (or the chosen side of preference pairs)."""

from __future__ import annotations

from dataclasses import dataclass, field

from backend.methods.spec import BuildContext, DataNeed, MemoryTraits, Metric, MethodSpec
from backend.runs.config import BaseRunConfig, setting
from backend.training.speed_options import SpeedSettings


@dataclass
class SFTRunConfig(SpeedSettings, BaseRunConfig):
    """Supervised fine-tuning on demonstrations (or the chosen side of preference pairs)."""

    method: str = field(default="sft", metadata={"help": "Training method", "internal": True})
    max_length: int = setting(
        1024, "Longest example in tokens; longer examples are truncated.",
        label="Max length (tokens)", minimum=16, maximum=131072, group="Data",
    )
    learning_rate: float = setting(
        2e-4, "Peak learning rate. 1e-4 to 3e-4 is typical for LoRA SFT.",
        label="Learning rate", minimum=1e-9, maximum=1e-1,
    )
    completion_only_loss: bool = setting(
        True, "Train only on the responses, not on the prompts.", label="Loss on responses only", advanced=True
    )
    packing: bool = setting(
        False, "Pack several short examples into one sequence: faster on short data.", label="Packing",
        advanced=True,
    )
    padding_free: bool = setting(
        False, "Put the examples of a batch end to end instead of padding them to the longest: no compute "
        "spent on padding. Examples longer than Max length are not truncated this way.",
        label="Padding-free batches", advanced=True,
    )


def build_args(cfg: SFTRunConfig, args: dict):
    from trl import SFTConfig

    if cfg.padding_free and not cfg.packing:
        # TRL refuses a max_length it cannot enforce on a flattened batch; the speed options turn
        # padding-free on only when every example already fits.
        args = {**args, "max_length": None}
    return SFTConfig(**args, completion_only_loss=cfg.completion_only_loss, packing=cfg.packing,
                     padding_free=cfg.padding_free)


def build(ctx: BuildContext):
    from trl import SFTTrainer

    return SFTTrainer(**ctx.trainer_kwargs())


def trl_cli_keys(cfg: SFTRunConfig) -> dict:
    return {"completion_only_loss": cfg.completion_only_loss, "packing": cfg.packing}


SPEC = MethodSpec(
    key="sft",
    label="SFT",
    title="SFT (supervised fine-tuning)",
    group="Supervised",
    summary="Imitates good answers: demonstrations, chat logs, or the chosen side of pairs. Start here.",
    config=SFTRunConfig,
    data=DataNeed(
        accepts=frozenset({"single", "pairs", "unpaired"}),
        # Thumbs up/down data keeps its good answers: imitating the bad ones would teach what the labels
        # say to avoid, and dropping them is the usual filtered fine-tuning.
        convert={"pairs": "chosen_as_completion", "unpaired": "desirable_only"},
        convert_notes={"pairs": "{name} trains on the chosen answers only.",
                       "unpaired": "{name} trains on the answers labelled good only; the bad ones are left out."},
        needs="demonstrations (prompt/completion, chat messages, Alpaca, ShareGPT, text); pairs train on "
              "their chosen answers, good/bad labelled answers on the good ones",
        refusals={"prompts": "{name} needs an answer to imitate for each prompt; this file has prompts only "
                             "({format}). Add a completion column, or use a method that grades sampled answers."},
    ),
    build_args=build_args,
    build=build,
    metrics=(
        Metric("mean_token_accuracy", "token_accuracy", "Token accuracy", "accuracy", role="accuracy", order=70),
    ),
    expected_keys=("loss", "mean_token_accuracy", "learning_rate", "grad_norm"),
    headline=("loss", "mean_token_accuracy", "grad_norm"),
    summary_metrics=(("loss", "loss"), ("mean_token_accuracy", "token accuracy")),
    diagnostics=("non_finite_loss",),
    memory=MemoryTraits(sequences_per_example=1, adapter_half_when_quantized=True),
    trl_cli="sft",
    trl_cli_keys=trl_cli_keys,
)
