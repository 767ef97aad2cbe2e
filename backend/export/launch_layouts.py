"""Accelerate configs for training in several processes: DDP, FSDP, DeepSpeed ZeRO-2/3.

The same settings as TRL's own ``trl/accelerate_configs`` (multi_gpu, fsdp2,
zero2, zero3), with two changes: the number of processes is the user's, and
``mixed_precision`` is 'no' because the worker chooses bf16/fp16/fp32 from the
device itself (a bf16 launch on a card without bf16 would fail before step 1).
Torch-free.
"""

from __future__ import annotations

from pathlib import Path

import yaml

LAYOUTS = ("ddp", "fsdp", "zero2", "zero3")
LAYOUT_LABELS = {
    "ddp": "DDP: a full copy of the model on every GPU (fastest when the model fits on one)",
    "fsdp": "FSDP: the model sharded across the GPUs (for models that do not fit on one)",
    "zero2": "DeepSpeed ZeRO-2: optimizer state and gradients sharded",
    "zero3": "DeepSpeed ZeRO-3: parameters sharded too (the largest models)",
}

_COMMON = {
    "compute_environment": "LOCAL_MACHINE",
    "debug": False,
    "downcast_bf16": "no",
    "machine_rank": 0,
    "main_training_function": "main",
    "mixed_precision": "no",
    "num_machines": 1,
    "rdzv_backend": "static",
    "same_network": True,
    "use_cpu": False,
}

_LAYOUT_SETTINGS = {
    "ddp": {"distributed_type": "MULTI_GPU", "gpu_ids": "all"},
    "fsdp": {"distributed_type": "FSDP", "fsdp_config": {
        "fsdp_version": 2,
        "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
        "fsdp_cpu_ram_efficient_loading": True,
        "fsdp_offload_params": False,
        "fsdp_reshard_after_forward": True,
        # A full state dict on rank 0 is what PEFT saves as an ordinary adapter.
        "fsdp_state_dict_type": "FULL_STATE_DICT",
        "fsdp_activation_checkpointing": False,
    }},
    "zero2": {"distributed_type": "DEEPSPEED", "deepspeed_config": {
        "deepspeed_multinode_launcher": "standard", "offload_optimizer_device": "none",
        "offload_param_device": "none", "zero3_init_flag": False, "zero_stage": 2}},
    "zero3": {"distributed_type": "DEEPSPEED", "deepspeed_config": {
        "deepspeed_multinode_launcher": "standard", "offload_optimizer_device": "none",
        "offload_param_device": "none", "zero3_init_flag": True, "zero3_save_16bit_model": True,
        "zero_stage": 3}},
}


def accelerate_config(layout: str, num_processes: int = 2, port: int | None = None) -> dict:
    """The accelerate config for ``layout`` with ``num_processes`` processes on one machine."""
    if layout not in LAYOUTS:
        raise ValueError(f"Unknown layout {layout!r}: choose one of {', '.join(LAYOUTS)}")
    if num_processes < 1:
        raise ValueError(f"The number of processes must be at least 1; got {num_processes}")
    config = dict(_COMMON, num_processes=int(num_processes))
    config.update(_LAYOUT_SETTINGS[layout])
    if port is not None:
        config["main_process_port"] = int(port)
    return config


def write_accelerate_config(path: str | Path, layout: str, num_processes: int = 2, port: int | None = None) -> Path:
    path = Path(path)
    path.write_text(f"# accelerate config, layout {layout}: {LAYOUT_LABELS[layout]}\n"
                    + yaml.safe_dump(accelerate_config(layout, num_processes, port), sort_keys=False),
                    encoding="utf-8")
    return path
