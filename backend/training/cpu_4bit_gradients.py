"""Keep gradients flowing through 4-bit layers on CPUs that have AVX512-BF16.

bitsandbytes 0.50 repacks a ``Linear4bit`` weight into a CPU inference layout the first time
the layer runs in eval mode without gradients (an evaluation, TRL's precomputed reference
log-probs, a sample generated mid-run), and keeps it that way. From then on every forward goes through
``gemv_4bit``, which has no autograd kernel: training still runs, with a warning in the log
("an autograd kernel was not registered"), but no gradient passes back through the frozen
4-bit layers, so every LoRA matrix below them learns from a wrong gradient. Measured on the
tiny model (4-bit LoRA, one preference-pair batch): the gradient norm fell from 0.61 to 0.33 after a
single eval-mode forward, and the precomputed reference, which makes that forward before the
first step, ended 20 steps at eval loss 0.17 against 0.04 on the same seeds.

A training model therefore never takes that inference path; generation outside training
(the Compare tab, the generation engine) keeps it.
"""

from __future__ import annotations

# The switch bitsandbytes reads in Linear4bit.forward before it repacks a weight for the CPU.
REPACK_SWITCH = "support_avx512bf16_for_cpu"


def keep_4bit_layers_differentiable(model) -> int:
    """Stop bitsandbytes from repacking ``model``'s 4-bit weights for CPU inference, and
    undo a repacking already done. Returns how many layers could have been repacked."""
    guarded = 0
    for module in model.modules():
        if not getattr(module, REPACK_SWITCH, False):
            continue
        setattr(module, REPACK_SWITCH, False)
        guarded += 1
        state = getattr(module.weight, "quant_state", None)
        if getattr(state, "packing_format_for_cpu", False):
            from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse

            module.weight.data, module.weight.quant_state = _convert_weight_packed_for_cpu_inverse(
                module.weight.data, state)
    return guarded
