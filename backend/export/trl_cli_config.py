"""A run's settings as a config file that ``trl <method> --config FILE`` reads as it is.

TRL's command line (``trl <method>``, for the methods TRL has a command for) parses one flat YAML
into its ScriptArguments, the method's config, ModelConfig and the dataset
mixture. Which methods those are, and their own keys, each method's spec says (``trl_cli``).
The data goes as the normalised JSON Lines the studio trains on, so TRL reads
the same rows whatever format the original file had. Torch-free.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
    spec = get_method(cfg.method)
    if spec.trl_cli_keys is not None:
        keys.update(spec.trl_cli_keys(cfg))
    return keys
