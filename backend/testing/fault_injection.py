"""Deliberate faults for tests and the soak bench: ``ALIGNSTUDIO_FAULTS``.

A CPU-only machine cannot run out of GPU memory on demand, and a tiny model
never diverges by itself, yet the worker's answers to those faults are what a
user depends on most. The variable lists faults, comma-separated; each
triggers inside the real worker at the named point, so everything after it
(classification, saved adapters, the run folder, the window) is the
production path:

- ``nan@N``: after step N the LoRA weights become NaN, so the loss of the
  next step is NaN, as when training diverges.
- ``oom@N`` / ``host_oom@N``: step N fails with torch's ``OutOfMemoryError``
  (what CUDA raises) or with CPU allocator's "can't allocate memory".
- ``segv@N``: the worker dies of SIGSEGV at step N, as a crashing kernel does.
- ``hang@N``: step N never ends and ignores stop requests (a stuck kernel),
  so only the supervisor's deadline can end it.
- ``slow_step=S``: every optimizer step takes S more seconds.
- ``slow_eval=S``: every evaluation batch takes S more seconds.
- ``slow_phase=NAME:S``: the phase NAME (``loading_model``, ``preparing_data``,
  ``saving``) takes S more seconds in a call that does not look at stop
  requests, like a long library call.

Unset (always, outside tests), nothing here runs.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field

ENV_VAR = "ALIGNSTUDIO_FAULTS"


@dataclass
class FaultPlan:
    at_step: dict[str, int] = field(default_factory=dict)  # nan/oom/host_oom/segv/hang -> step
    slow_step: float = 0.0
    slow_eval: float = 0.0
    slow_phase: dict[str, float] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.at_step or self.slow_step or self.slow_eval or self.slow_phase)


STEP_FAULTS = ("nan", "oom", "host_oom", "segv", "hang")


def parse_faults(text: str | None) -> FaultPlan:
    plan = FaultPlan()
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        if "@" in item:
            name, step = item.split("@", 1)
            if name not in STEP_FAULTS:
                raise ValueError(f"{ENV_VAR}: unknown fault '{name}' (known: {', '.join(STEP_FAULTS)})")
            plan.at_step[name] = int(step)
        elif item.startswith("slow_phase="):
            phase, seconds = item.split("=", 1)[1].split(":", 1)
            plan.slow_phase[phase] = float(seconds)
        elif item.startswith("slow_step="):
            plan.slow_step = float(item.split("=", 1)[1])
        elif item.startswith("slow_eval="):
            plan.slow_eval = float(item.split("=", 1)[1])
        else:
            raise ValueError(f"{ENV_VAR}: cannot read '{item}'")
    return plan


def planned_faults() -> FaultPlan:
    return parse_faults(os.environ.get(ENV_VAR))


def hold_phase(plan: FaultPlan, phase: str) -> None:
    seconds = plan.slow_phase.get(phase, 0.0)
    if seconds:
        print(f"[fault injection] phase {phase} takes {seconds:g} s more", flush=True)
        time.sleep(seconds)


def fault_callback(plan: FaultPlan):
    """A TrainerCallback that injects the step and evaluation faults of ``plan``."""
    from transformers import TrainerCallback

    class FaultCallback(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            step = state.global_step + 1  # the step about to run
            if plan.slow_step:
                time.sleep(plan.slow_step)
            if plan.at_step.get("oom") == step:
                import torch

                raise torch.OutOfMemoryError(
                    "CUDA out of memory. Tried to allocate 2.00 GiB (injected by " + ENV_VAR + ")")
            if plan.at_step.get("host_oom") == step:
                raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate "
                                   "memory: you tried to allocate 4294967296 bytes (injected by " + ENV_VAR + ")")
            if plan.at_step.get("segv") == step:
                os.kill(os.getpid(), signal.SIGSEGV)
            if plan.at_step.get("hang") == step:
                # Blocks the main thread the way a stuck kernel does; SIGTERM's handler
                # only runs between bytecodes, so sleep in short slices.
                while True:
                    time.sleep(0.1)

        def on_step_end(self, args, state, control, model=None, **kwargs):
            if plan.at_step.get("nan") == state.global_step and model is not None:
                import torch

                with torch.no_grad():
                    for name, param in model.named_parameters():
                        if "lora_" in name:
                            param.fill_(float("nan"))

        def on_prediction_step(self, args, state, control, **kwargs):
            if plan.slow_eval:
                time.sleep(plan.slow_eval)

    return FaultCallback()
