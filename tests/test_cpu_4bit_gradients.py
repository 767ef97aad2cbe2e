"""A 4-bit training model keeps its gradients after running in eval mode (an evaluation, a
precomputed reference): bitsandbytes' CPU inference repacking is kept away from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from backend.training.cpu_4bit_gradients import keep_4bit_layers_differentiable


def _lora_model(model_dir: Path, guard: bool):
    from peft import get_peft_model

    from backend.runs.config import check
    from backend.training.trainer_builders import build_lora_config, build_model, choose_precision
    from tests.conftest import tiny_run_config

    cfg = check(tiny_run_config("dpo", model_dir, Path("unused.jsonl"), quantization="4bit", lora_dropout=0.0))
    model = build_model(str(model_dir), cfg, choose_precision())
    if guard:
        keep_4bit_layers_differentiable(model)
    return get_peft_model(model, build_lora_config(cfg))


def _batch(model_dir: Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    return tokenizer(["Please answer politely and helpfully.", "Thank you for asking!"], padding=True,
                     return_tensors="pt")


def _gradients(model, batch) -> dict:
    import torch

    torch.manual_seed(0)
    model.train()
    model.zero_grad()
    model(**batch, labels=batch["input_ids"]).loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def _eval_forward(model, batch) -> None:
    import torch

    model.eval()
    with torch.no_grad():
        model(**batch)


def _repacked(model) -> int:
    return sum(bool(getattr(getattr(m.weight, "quant_state", None), "packing_format_for_cpu", False))
               for m in model.modules() if hasattr(m, "support_avx512bf16_for_cpu"))


def _assert_same(got: dict, expected: dict, rel: float) -> None:
    assert got.keys() == expected.keys()
    for name, grad in expected.items():
        gap = float((got[name] - grad).norm() / (grad.norm() + 1e-12))
        assert gap < rel, f"{name}: gradient off by {gap:.1%}"


@pytest.mark.slow
def test_an_evaluation_leaves_the_gradients_of_a_4bit_training_model_as_they_were(tiny_model_dir):
    model, batch = _lora_model(tiny_model_dir, guard=True), _batch(tiny_model_dir)
    before = _gradients(model, batch)
    _eval_forward(model, batch)
    assert _repacked(model) == 0
    _assert_same(_gradients(model, batch), before, rel=1e-5)


@pytest.mark.slow
def test_weights_repacked_before_training_are_restored(tiny_model_dir):
    batch = _batch(tiny_model_dir)
    expected = _gradients(_lora_model(tiny_model_dir, guard=True), batch)
    model = _lora_model(tiny_model_dir, guard=False)
    _eval_forward(model, batch)
    if _repacked(model) == 0:
        pytest.skip("bitsandbytes repacks 4-bit weights only on CPUs with AVX512-BF16; this one has none")
    assert keep_4bit_layers_differentiable(model) > 0 and _repacked(model) == 0
    # The unpacking re-quantizes the nested absmax (bitsandbytes calls it best effort): close, not exact.
    _assert_same(_gradients(model, batch), expected, rel=0.05)
