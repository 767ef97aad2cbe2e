"""A run's settings as a config file that ``trl <method> --config FILE`` reads as it is.

TRL's command line (``trl <method>``, for the methods TRL has a command for) parses one flat YAML
into its ScriptArguments, the method's config, ModelConfig and the dataset
mixture. Which methods those are, and their own keys, each method's spec says (``trl_cli``).
The data goes as the normalised JSON Lines the studio trains on, so TRL reads
the same rows whatever format the original file had.

A run saved with ``speed_options: auto`` had some settings chosen by the studio when it
started (its ``speed_options.json``); the file carries the values it trained with, each
marked with the studio's reason, since TRL's command line would otherwise train with
config.yaml's defaults. Torch-free.
"""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path
from typing import Any

import yaml

from backend.methods import all_methods, get_method
from backend.runs.config import BaseRunConfig
from backend.training.tracking import resolved_trackers


def trl_cli_methods() -> dict[str, str]:
    """The studio's methods that TRL's command line has, under TRL's name for them."""
    return {spec.key: spec.trl_cli for spec in all_methods() if spec.trl_cli}


def trl_cli_config(cfg: BaseRunConfig, model_path: str, data_file: str | Path, output_dir: str | Path,
                   on_gpu: bool = True) -> dict[str, Any]:
    """Flat keys for ``trl <method> --config``. ``on_gpu`` picks bf16; else the CPU in fp32."""
    commands = trl_cli_methods()
    if cfg.method not in commands:
        raise ValueError(f"TRL's command line has no {cfg.method} command (it has "
                         f"{', '.join(commands.values())} of the studio's methods)")
    targets = cfg.lora_target_modules.strip()
    keys: dict[str, Any] = {
        # ModelConfig
        "model_name_or_path": str(model_path),
        "use_peft": True,
        "lora_r": cfg.lora_r,
        "lora_alpha": cfg.lora_alpha,
        "lora_dropout": cfg.lora_dropout,
        "lora_target_modules": targets if targets == "all-linear" else [t.strip() for t in targets.split(",")],
        "load_in_4bit": cfg.quantization == "4bit",
        "load_in_8bit": cfg.quantization == "8bit",
        "bnb_4bit_quant_type": "nf4",
        "use_bnb_nested_quant": cfg.quantization == "4bit",
        # DatasetMixtureConfig / ScriptArguments
        "datasets": [{"path": "json", "data_files": str(data_file), "split": "train"}],
        "dataset_train_split": "train",
        # The method's config (TrainingArguments and TRL's own keys)
        "output_dir": str(output_dir),
        "trust_remote_code": cfg.trust_remote_code,
        "per_device_train_batch_size": cfg.per_device_train_batch_size,
        "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
        "learning_rate": cfg.learning_rate,
        "num_train_epochs": cfg.num_train_epochs,
        "max_steps": cfg.max_steps if cfg.max_steps > 0 else -1,
        "warmup_steps": cfg.warmup_ratio,
        "lr_scheduler_type": cfg.lr_scheduler_type,
        "weight_decay": cfg.weight_decay,
        "max_grad_norm": cfg.max_grad_norm,
        "seed": cfg.seed,
        "gradient_checkpointing": cfg.gradient_checkpointing,
        "logging_steps": cfg.logging_steps,
        "save_strategy": "steps" if cfg.save_steps > 0 else "no",
        "save_steps": cfg.save_steps if cfg.save_steps > 0 else 500,
        "save_total_limit": cfg.save_total_limit,
        "max_length": cfg.max_length,
        "report_to": resolved_trackers(cfg.report_to) or "none",
        "bf16": on_gpu,
        "use_cpu": not on_gpu,
    }
    keys.update(_speed_keys(cfg))
    spec = get_method(cfg.method)
    if spec.trl_cli_keys is not None:
        keys.update(spec.trl_cli_keys(cfg))
    return keys


def _speed_keys(cfg: BaseRunConfig) -> dict[str, Any]:
    """The speed settings (backend.training.speed_options) a method carries, in TRL's words."""
    keys: dict[str, Any] = {}
    if hasattr(cfg, "use_liger_kernel"):
        keys["use_liger_kernel"] = bool(cfg.use_liger_kernel)
    # transformers' length-grouped sampler reads each row's input_ids: the rows of a trainer that
    # can flatten its batches (padding_free) have them, pair rows do not (the studio adds a length
    # column for those; TRL's command cannot).
    rows_have_input_ids = hasattr(cfg, "padding_free")
    if hasattr(cfg, "group_by_length") and (rows_have_input_ids or not cfg.group_by_length):
        keys["train_sampling_strategy"] = "group_by_length" if cfg.group_by_length else "random"
    if hasattr(cfg, "padding_free"):
        keys["padding_free"] = bool(cfg.padding_free)
        if cfg.padding_free and not getattr(cfg, "packing", False):
            keys["max_length"] = None  # TRL refuses a max_length it cannot enforce on a flattened batch
    return keys


# The TRL keys that carry each setting the speed options choose; a setting missing here or
# whose keys a method's file lacks is named in the file's header instead.
SPEED_SETTING_KEYS = {
    "per_device_train_batch_size": ("per_device_train_batch_size",),
    "gradient_accumulation_steps": ("gradient_accumulation_steps",),
    "gradient_checkpointing": ("gradient_checkpointing",),
    "padding_free": ("padding_free",),
    "group_by_length": ("train_sampling_strategy",),
    "precompute_ref_log_probs": ("precompute_ref_log_probs",),
    "use_liger_kernel": ("use_liger_kernel",),
}


class RecordedSpeedError(ValueError):
    """speed_options.json holds a value the run's config cannot take; the message names it."""


@dataclasses.dataclass
class StudioChoice:
    setting: str
    label: str
    value: Any
    reason: str


def as_trained(cfg: BaseRunConfig, recorded: dict | None) -> tuple[BaseRunConfig, list[StudioChoice]]:
    """``cfg`` with the values the studio chose when the run started (``recorded``: its
    speed_options.json as ``read_recorded`` returns it), and those choices."""
    from backend.runs.config import apply_values, validate

    if not isinstance(recorded, dict) or not isinstance(recorded.get("choices"), list):
        return cfg, []
    choices = [StudioChoice(str(c.get("setting")), str(c.get("label") or c.get("setting")), c.get("value"),
                            str(c.get("reason") or "")) for c in recorded["choices"] if isinstance(c, dict)]
    choices = [c for c in choices if hasattr(cfg, c.setting)]  # a setting this method no longer has
    trained, problems = apply_values(cfg, {c.setting: c.value for c in choices})
    problems += [(name, message) for name, message in validate(trained)
                 if name in {c.setting for c in choices} and name not in {n for n, _m in problems}]
    if problems:
        raise RecordedSpeedError("speed_options.json: " + "; ".join(message for _name, message in problems))
    return trained, choices


def trl_cli_yaml(keys: dict[str, Any], command: str, file_name: str, choices: list[StudioChoice]) -> str:
    """The file ``trl <command> --config FILE`` reads: ``keys``, with each one the studio chose
    commented with its reason, and the choices TRL has no key for named in the header."""
    carried = {key: choice for choice in choices for key in SPEED_SETTING_KEYS.get(choice.setting, ())
               if key in keys}
    left = [c for c in choices if not any(k in keys for k in SPEED_SETTING_KEYS.get(c.setting, ()))]
    header = [f"# `trl {command} --config {file_name}`: the run's settings for TRL's own command line."]
    if choices:
        header.append("# Keys marked 'chosen by the studio' hold what the run trained with: speed_options: auto "
                      "chose them when it started (the run's speed_options.json), not config.yaml.")
    if left:
        header.append("# Also chosen by the studio for the run, not settings of this file: "
                      + "; ".join(f"{c.label}: {_shown(c.value)} ({c.reason})" for c in left) + ".")
    lines = []
    for key, value in keys.items():
        text = yaml.safe_dump({key: value}, sort_keys=False, width=10_000).rstrip("\n")
        if key in carried and "\n" not in text:
            choice = carried[key]
            text += f"  # chosen by the studio: {choice.label} {_shown(choice.value)}, {choice.reason}"
        lines.append(text)
    wrapped = [part for line in header for part in textwrap.wrap(line, 110, subsequent_indent="#   ")]
    return "\n".join(wrapped + lines) + "\n"


def _shown(value: Any) -> str:
    return {True: "on", False: "off"}[value] if isinstance(value, bool) else str(value)
