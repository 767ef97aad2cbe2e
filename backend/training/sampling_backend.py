"""Which engine samples the completions of the methods that generate while they train.

TRL's RL trainers sample with the training model's own ``generate`` unless ``use_vllm`` is
set, and then with vLLM: on a GPU that is several times faster, and sampling is most of such
a step. The studio chooses for the user (``auto``): vLLM when it is installed and a CUDA GPU
is there, in TRL's ``colocate`` mode (vLLM shares the one GPU with training, which is what a
single-GPU desktop has); else the model's own ``generate``. The choice and its reason go to
the run's log. Torch-free: the window's form and validation read it.
"""

from __future__ import annotations

import importlib.util

from backend.runs.config import ConfigError, setting

BACKENDS = ("auto", "transformers", "vllm")
# vLLM's share of the GPU in colocate mode; TRL's default leaves the rest to training.
COLOCATE_GPU_SHARE = 0.3


def sampling_backend_setting():
    return setting(
        "auto", "What samples the completions while training. auto: vLLM on a CUDA GPU when the vllm package "
        "is installed (several times faster; it shares the GPU with training), else the model's own generate. "
        "vllm: always vLLM (a CUDA GPU and the vllm package are needed). transformers: always the model's own "
        "generate.", label="Sampling engine", choices=BACKENDS, group="Sampling", advanced=True,
    )


def vllm_installed() -> bool:
    return importlib.util.find_spec("vllm") is not None


def problem(choice: str, device_kind: str, installed: bool, quantization: str) -> str:
    """Why ``choice`` cannot run here ('' when it can): said before anything loads."""
    if choice != "vllm":
        return ""
    if device_kind != "cuda":
        return "vLLM needs a CUDA GPU; this machine has none. Choose auto or transformers."
    if not installed:
        return "the vllm package is not installed (pip install vllm), or choose auto or transformers."
    if quantization == "8bit":
        return "vLLM cannot load 8-bit weights; choose 4-bit or no quantization, or the transformers engine."
    return ""


def choose(choice: str, device_kind: str, installed: bool, quantization: str) -> tuple[bool, str]:
    """Whether TRL samples with vLLM, and the reason a user reads in the log."""
    if choice == "transformers":
        return False, "the model's own generate, as set"
    if choice == "vllm":
        return True, "vLLM, as set"
    if device_kind != "cuda":
        return False, "the model's own generate: vLLM needs a CUDA GPU"
    if not installed:
        return False, "the model's own generate: the vllm package is not installed (pip install vllm)"
    if quantization == "8bit":
        return False, "the model's own generate: vLLM cannot load 8-bit weights"
    return True, "vLLM (installed, CUDA GPU): several times faster sampling, sharing the GPU with training"


def trl_keys(cfg, args: dict) -> dict:
    """The TRL config keys for ``cfg``'s sampling engine; ``args`` are the shared Trainer
    arguments (``use_cpu`` says the device). Prints the choice to the worker log."""
    device_kind = "cpu" if args.get("use_cpu") else "cuda"
    choice, installed, quantization = getattr(cfg, "sampling_backend", "auto"), vllm_installed(), cfg.quantization
    refused = problem(choice, device_kind, installed, quantization)
    if refused:
        raise ConfigError([("sampling_backend", f"Sampling engine: {refused}")])
    use_vllm, reason = choose(choice, device_kind, installed, quantization)
    print(f"Sampling engine: {reason}.", flush=True)
    if not use_vllm:
        return {"use_vllm": False}
    return {"use_vllm": True, "vllm_mode": "colocate", "vllm_gpu_memory_utilization": COLOCATE_GPU_SHARE}
