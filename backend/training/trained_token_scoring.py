"""Project through the vocabulary only at the positions the loss uses, on every device.

TRL 1.16 gives every trainer a fused LM head (``trl.trainer.utils.add_fused_lm_head``) that
scores only the positions whose label is not -100, but only on devices where Triton runs
(CUDA, XPU). Elsewhere it projects every position, prompt and padding included, and throws
those results away: it keeps tile shapes fixed for compiled backends (Neuron recompiles on
each new shape). Nothing is compiled on a CPU, so there that work is pure waste, and on a
model with a large vocabulary it is most of a step: Gemma 3's head (262,144 x 640) is about
60 % of a token's forward FLOPs. Measured on the embedded Gemma 3 270M, 4-bit LoRA, the demo
data, 6 steps of batch 8: 13.5 s against 21.5-23.8 s padding-free, 16.6 s against 26.0 s
padded, with the same losses to four decimals.

TRL has no switch for it: the choice is its module-level ``_use_triton(device)`` call inside
the fused forward. This module rebinds that one name in ``trl.trainer.utils`` (the Triton
kernels keep their own binding, so a CPU still runs TRL's torch tiles) and checks first that
the installed TRL still decides there; if it does not, nothing is changed and the reason is
returned for the run's log.
"""

from __future__ import annotations

import inspect

# Devices that run eagerly: a new number of scored positions costs nothing there.
EAGER_DEVICE_TYPES = frozenset({"cpu", "cuda", "mps", "xpu"})
_DECISION = "compact = _use_triton(hidden_states.device)"


def why_not_available() -> str:
    """Empty when the installed TRL can be told to score only labelled positions, else why not."""
    import trl.trainer.utils as trl_utils

    decide = getattr(trl_utils, "_use_triton", None)
    fused = getattr(trl_utils, "add_fused_lm_head", None)
    if decide is None or fused is None:
        return "this TRL version has no fused LM head to configure"
    try:
        source = inspect.getsource(fused)
    except (OSError, TypeError) as exc:
        return f"the fused LM head's source could not be read ({exc})"
    if _DECISION not in source:
        return "this TRL version decides differently which positions its fused LM head scores"
    return ""


def set_enabled(on: bool) -> str:
    """Make TRL's fused LM head score only labelled positions on eager devices (``on``), or
    restore TRL's own choice, for this process. Returns an empty string when done, else the
    reason it was not (only turning it on can be refused)."""
    import trl.trainer.utils as trl_utils

    current = trl_utils._use_triton
    original = getattr(current, "_alignstudio_original", None)
    if not on:
        if original is not None:
            trl_utils._use_triton = original
        return ""
    if original is not None:
        return ""
    reason = why_not_available()
    if reason:
        return reason

    def compact_where_eager(device) -> bool:
        return device.type in EAGER_DEVICE_TYPES or current(device)

    compact_where_eager._alignstudio_original = current
    trl_utils._use_triton = compact_where_eager
    return ""
