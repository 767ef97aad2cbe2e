"""CPO's own checks: no reference model (and none in the memory estimate), its settings reaching
TRL's CPOConfig, label smoothing refused where CPO ignores it, and the NLL weight in the loss."""

from __future__ import annotations

import pytest

from backend.training.memory_estimate import GEMMA3_270M, estimate_memory
from backend.methods import get_method
from backend.runs.config import default_config, validate
from tests.methods.in_process_training import easy_pairs, logged_steps, train_in_process

CUDA = {"kind": "cuda", "memory_mb": 80_000, "bf16": True}


def test_listed_with_the_offline_preference_methods_after_orpo():
    from backend.methods import method_keys

    keys = method_keys()
    assert keys.index("cpo") == keys.index("orpo") + 1
    assert get_method("cpo").group == "Offline preference"


def test_no_reference_pass_in_the_memory_estimate():
    cpo = estimate_memory(default_config("cpo", max_length=2048), CUDA, GEMMA3_270M)
    dpo = estimate_memory(default_config("dpo", max_length=2048), CUDA, GEMMA3_270M)
    assert "reference" not in cpo.parts and dpo.parts["reference"] > 0
    assert cpo.parts["logits"] > 4 * dpo.parts["logits"]  # CPOTrainer builds the whole logits, as ORPO does


def test_label_smoothing_is_refused_where_the_loss_ignores_it():
    for loss in ("hinge", "ipo"):
        problems = dict(validate(default_config("cpo", loss_type=loss, label_smoothing=0.1)))
        assert problems["label_smoothing"] == f"the {loss} loss ignores label smoothing; set it to 0 or use the " \
                                              "sigmoid loss"
    assert validate(default_config("cpo", loss_type="sigmoid", label_smoothing=0.1)) == []


@pytest.mark.slow
def test_settings_reach_trls_cpo_config(tmp_path):
    from backend.training.trainer_builders import Precision, build_trl_args

    cfg = default_config("cpo", beta=0.2, loss_type="hinge", cpo_alpha=0.5)
    args = build_trl_args(cfg, Precision("cpu", None, bf16=False, fp16=False), str(tmp_path), has_eval=False)
    assert type(args).__name__ == "CPOConfig"
    assert (args.beta, args.loss_type, args.cpo_alpha, args.label_smoothing) == (0.2, "hinge", 0.5, 0.0)


@pytest.mark.slow
def test_the_nll_weight_adds_the_logged_nll_to_the_loss(tiny_model_dir, tmp_path):
    data = easy_pairs()
    with_nll = logged_steps(train_in_process("cpo", tiny_model_dir, data, tmp_path / "a", cpo_alpha=1.0))[0]
    without = logged_steps(train_in_process("cpo", tiny_model_dir, data, tmp_path / "b", cpo_alpha=0.0))[0]
    assert with_nll["nll_loss"] > 0 and without["nll_loss"] == 0.0
    # Same seeded first batch, same untrained weights: the only difference is 1 x the NLL.
    assert with_nll["loss"] - without["loss"] == pytest.approx(with_nll["nll_loss"], rel=1e-3)
    assert with_nll["rewards/margins"] == pytest.approx(without["rewards/margins"], rel=1e-4)
