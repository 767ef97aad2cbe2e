"""ORPO's own traits: pairs only, and the full logits the memory estimate must count."""

from backend.data.formats import DataFormat, supported_methods
from backend.training.memory_estimate import GEMMA3_270M, estimate_memory
from backend.runs.config import default_config


def test_trains_on_pairs_only():
    assert "orpo" in supported_methods(DataFormat.PREFERENCE)
    assert "orpo" not in supported_methods(DataFormat.ALPACA)


def test_full_logits_cost_more_than_the_tiled_head_and_no_reference_pass():
    device = {"kind": "cuda", "memory_mb": 80_000, "bf16": True}
    orpo = estimate_memory(default_config("orpo", max_length=2048), device, GEMMA3_270M)
    dpo = estimate_memory(default_config("dpo", max_length=2048), device, GEMMA3_270M)
    assert orpo.parts["logits"] > 4 * dpo.parts["logits"]
    assert "reference" not in orpo.parts
