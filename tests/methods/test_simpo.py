"""SimPO's own checks: no reference pass at all (the memory estimate shows none), the target
margin set as a fraction of beta, and margins that rise on an easy set."""

from __future__ import annotations

import pytest

from backend.training.memory_estimate import GEMMA3_270M, estimate_memory
from backend.methods import get_method
from backend.runs.config import default_config
from tests.methods.in_process_training import easy_pairs, logged_steps, train_in_process

CUDA = {"kind": "cuda", "memory_mb": 80_000, "bf16": True}


def test_no_reference_pass_and_the_estimate_shows_no_reference_part():
    traits = get_method("simpo").memory
    assert not traits.reference_pass and not traits.reference_skip_setting
    simpo = estimate_memory(default_config("simpo", max_length=2048), CUDA, GEMMA3_270M)
    dpo = estimate_memory(default_config("dpo", max_length=2048), CUDA, GEMMA3_270M)
    assert "reference" not in simpo.parts and dpo.parts["reference"] > 0
    assert not get_method("simpo").implicit_reward  # no reference: Compare has no log-ratio to score with


@pytest.mark.slow
def test_trl_gets_the_simpo_loss_without_nll_and_gamma_from_the_ratio(tmp_path):
    from backend.training.trainer_builders import Precision, build_trl_args

    cfg = default_config("simpo", beta=2.5, gamma_beta_ratio=0.4)
    args = build_trl_args(cfg, Precision("cpu", None, bf16=False, fp16=False), str(tmp_path), has_eval=False)
    assert type(args).__name__ == "CPOConfig"
    assert (args.loss_type, args.cpo_alpha, args.beta, args.alpha) == ("simpo", 0.0, 2.5, 0.0)
    assert args.simpo_gamma == pytest.approx(1.0)  # gamma = 0.4 x 2.5


@pytest.mark.slow
def test_margins_rise_on_easy_pairs(tiny_model_dir, tmp_path):
    trainer = train_in_process("simpo", tiny_model_dir, easy_pairs(16), tmp_path, steps=10, learning_rate=5e-3)
    logs = logged_steps(trainer)
    first, last = logs[0], logs[-1]
    assert last["rewards/margins"] > first["rewards/margins"] + 0.5, [round(h["rewards/margins"], 3) for h in logs]
    assert last["loss"] < first["loss"] and last["rewards/accuracies"] == 1.0
    assert all(h["nll_loss"] == 0.0 for h in logs)  # SimPO proper: no NLL term
