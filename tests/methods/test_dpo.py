"""DPO's own checks: the loss settings it refuses before a model is loaded, and its TRL config."""

import pytest

from backend.memory_estimate import GEMMA3_270M, estimate_memory
from backend.run_config import default_config, validate


def test_losses_that_need_label_smoothing_say_so():
    for loss in ("robust", "exo_pair"):
        problems = dict(validate(default_config("dpo", loss_type=loss)))
        assert "label smoothing above 0" in problems["label_smoothing"], loss
    assert validate(default_config("dpo", loss_type="robust", label_smoothing=0.1)) == []


def test_lm_head_adapter_is_refused_once():
    problems = validate(default_config("dpo", lora_target_modules="q_proj,lm_head"))
    assert problems == [("lora_target_modules", "LoRA target modules: DPO cannot train an adapter on lm_head; "
                                                "remove it from the list")]
    assert validate(default_config("sft", lora_target_modules="q_proj,lm_head")) == []


def test_precomputing_the_reference_drops_its_memory_part():
    device = {"kind": "cuda", "memory_mb": 80_000, "bf16": True}
    live = estimate_memory(default_config("dpo", max_length=2048), device, GEMMA3_270M)
    pre = estimate_memory(default_config("dpo", max_length=2048, precompute_ref_log_probs=True), device,
                          GEMMA3_270M)
    assert live.parts.get("reference", 0) > 0 and "reference" not in pre.parts


@pytest.mark.slow
def test_trl_config_gets_beta_loss_and_smoothing(tmp_path):
    from backend.trainer_builders import Precision, build_trl_args

    cfg = default_config("dpo", beta=0.3, loss_type="ipo", label_smoothing=0.0)
    args = build_trl_args(cfg, Precision("cpu", None, bf16=False, fp16=False), str(tmp_path), has_eval=False)
    assert type(args).__name__ == "DPOConfig"
    assert args.beta == 0.3 and list(args.loss_type) == ["ipo"]
