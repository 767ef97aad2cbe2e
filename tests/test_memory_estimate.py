"""The peak-memory estimate: shape parsing, how it responds to each setting, suggestions, the record file.

All arithmetic, no training: bench/bench_memory_estimate.py checks the numbers
against real runs.
"""

from __future__ import annotations

import dataclasses
import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from backend.training.memory_estimate import (
    GEMMA3_270M,
    MemoryEstimate,
    ModelShape,
    estimate_memory,
    model_shape,
    record_measured_peak,
    shape_from_gguf,
)
from backend.runs.config import default_config

ROOT = Path(__file__).resolve().parent.parent

LLAMA_8B = {
    "model_type": "llama",
    "hidden_size": 4096,
    "num_hidden_layers": 32,
    "intermediate_size": 14336,
    "vocab_size": 128256,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
}
GPU_24GB = {"kind": "cuda", "name": "Test GPU", "memory_mb": 24576.0, "free_mb": 24000.0, "bf16": True}
GPU_80GB = {"kind": "cuda", "name": "Big GPU", "memory_mb": 81920.0, "free_mb": 81000.0, "bf16": True}
CPU_16GB = {"kind": "cpu", "name": "Test CPU", "memory_mb": 16384.0, "free_mb": 12000.0, "bf16": False}

LLAMA_SHAPE = ModelShape(hidden_size=4096, num_layers=32, intermediate_size=14336, vocab_size=128256,
                         num_heads=32, num_kv_heads=8, head_dim=128, tie_word_embeddings=False,
                         model_type="llama")


def write_config(folder: Path, cfg: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
    (folder / "model.safetensors").write_bytes(b"")
    return folder


def total(method="sft", device=GPU_24GB, shape=LLAMA_SHAPE, **values) -> float:
    return estimate_memory(default_config(method, **values), device, shape).total_mb


# --- shapes ---------------------------------------------------------------------------------------

def test_shape_from_config_json(tmp_path):
    shape = model_shape(str(write_config(tmp_path / "llama", LLAMA_8B)))
    assert shape.hidden_size == 4096 and shape.num_layers == 32 and shape.intermediate_size == 14336
    assert shape.num_kv_heads == 8 and shape.head_dim == 128 and not shape.tie_word_embeddings
    kinds = shape.params_by_kind()
    assert kinds["embedding"] == kinds["lm_head"] == 128256 * 4096
    assert kinds["attention"] == 32 * (4096 * 4096 * 2 + 2 * 4096 * 1024)
    assert kinds["mlp"] == 32 * 3 * 4096 * 14336
    # Llama 3 8B has 8.03 B parameters.
    assert 8.0e9 < shape.total_params < 8.1e9


def test_shape_from_nested_text_config(tmp_path):
    cfg = {
        "model_type": "gemma3",
        "architectures": ["Gemma3ForConditionalGeneration"],
        "tie_word_embeddings": True,
        "text_config": {"model_type": "gemma3_text", "hidden_size": 2560, "num_hidden_layers": 34,
                        "intermediate_size": 10240, "vocab_size": 262208, "num_attention_heads": 8,
                        "num_key_value_heads": 4, "head_dim": 256},
        "vision_config": {"hidden_size": 1152, "num_hidden_layers": 27},
    }
    shape = model_shape(str(write_config(tmp_path / "gemma4b", cfg)))
    assert (shape.hidden_size, shape.num_layers, shape.vocab_size) == (2560, 34, 262208)
    assert shape.head_dim == 256 and shape.num_kv_heads == 4
    assert shape.tie_word_embeddings and shape.lm_head_params == 0
    assert shape.qk_norm and shape.norms_per_layer == 4


def test_embedded_model_shape_is_gemma_270m():
    shape = model_shape("")
    for name in ("hidden_size", "num_layers", "intermediate_size", "vocab_size", "num_heads",
                 "num_kv_heads", "head_dim", "tie_word_embeddings"):
        assert getattr(shape, name) == getattr(GEMMA3_270M, name)
    # FACTS: 268 M parameters, ~168 M of them the embedding.
    assert 267e6 < shape.total_params < 269e6
    assert 167e6 < shape.embedding_params < 169e6


def test_embedded_shape_falls_back_before_conversion(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNSTUDIO_CACHE", str(tmp_path / "empty-cache"))
    assert model_shape("") == GEMMA3_270M


def _gguf_string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def test_shape_from_gguf_header(tmp_path):
    """A minimal GGUF v3 file: metadata, a string array (the vocabulary) and tensor infos."""
    kv = [
        ("general.architecture", 8, _gguf_string("llama")),
        ("llama.embedding_length", 4, struct.pack("<I", 64)),
        ("llama.block_count", 4, struct.pack("<I", 2)),
        ("llama.feed_forward_length", 4, struct.pack("<I", 128)),
        ("llama.attention.head_count", 4, struct.pack("<I", 4)),
        ("llama.attention.head_count_kv", 4, struct.pack("<I", 2)),
        ("tokenizer.ggml.tokens", 9, struct.pack("<IQ", 8, 300) + b"".join(_gguf_string(f"t{i}") for i in range(300))),
        ("tokenizer.ggml.scores", 9, struct.pack("<IQ", 6, 300) + b"\0" * 1200),
    ]
    tensors = ["token_embd.weight", "output.weight", "blk.0.ffn_gate.weight"]
    data = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kv))
    for key, vtype, value in kv:
        data += _gguf_string(key) + struct.pack("<I", vtype) + value
    for name in tensors:
        data += _gguf_string(name) + struct.pack("<I", 2) + struct.pack("<QQ", 64, 300) + struct.pack("<IQ", 0, 0)
    path = tmp_path / "tiny.gguf"
    path.write_bytes(data)
    shape = shape_from_gguf(path)
    assert (shape.hidden_size, shape.num_layers, shape.intermediate_size, shape.vocab_size) == (64, 2, 128, 300)
    assert (shape.num_heads, shape.num_kv_heads, shape.head_dim) == (4, 2, 16)
    assert not shape.tie_word_embeddings and shape.gated_mlp
    assert model_shape(str(path)) == shape
    (tmp_path / "broken.gguf").write_bytes(b"GGUF\x03\0\0\0" + b"\xff" * 20)
    assert shape_from_gguf(tmp_path / "broken.gguf") is None


def test_hub_id_read_from_the_local_cache(tmp_path, monkeypatch):
    hub = tmp_path / "hub"
    snapshot = hub / "models--meta-llama--Llama-3.1-8B" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps(LLAMA_8B))
    (hub / "models--meta-llama--Llama-3.1-8B" / "refs").mkdir()
    (hub / "models--meta-llama--Llama-3.1-8B" / "refs" / "main").write_text("abc123")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(hub))
    shape = model_shape("meta-llama/Llama-3.1-8B")
    assert shape is not None and shape.num_layers == 32 and shape.vocab_size == 128256
    assert estimate_memory(default_config("sft", model="meta-llama/Llama-3.1-8B"), GPU_24GB).total_mb > 5000


def test_unknown_hub_model_has_unknown_estimate(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    assert model_shape("someone/not-a-cached-model") is None
    est = estimate_memory(default_config("sft", model="someone/not-a-cached-model"), GPU_24GB)
    assert est.total_mb is None and est.fits is None and est.notes
    assert "unknown" in est.summary_text().lower()


# --- how the estimate responds to settings ---------------------------------------------------------

def test_grows_with_batch_and_length():
    base = total(per_device_train_batch_size=2, max_length=512)
    assert total(per_device_train_batch_size=8, max_length=512) > base
    assert total(per_device_train_batch_size=2, max_length=2048) > base


LENGTHS = (64, 256, 512, 1024, 2048)


@pytest.mark.parametrize("method", ["sft", "dpo", "orpo"])
@pytest.mark.parametrize("device", [GPU_24GB, CPU_16GB], ids=["gpu", "cpu"])
def test_every_method_grows_with_length(method, device):
    totals = [total(method, device, GEMMA3_270M, max_length=n, per_device_train_batch_size=1) for n in LENGTHS]
    # On the CPU a short run can peak while loading, which no length changes.
    assert totals == sorted(totals) and totals[-1] > 1.5 * totals[0]


def test_orpo_logits_scale_with_length_times_vocabulary_and_dominate_for_gemma():
    def logits(shape, length):
        return estimate_memory(default_config("orpo", max_length=length, per_device_train_batch_size=1,
                                              eval_fraction=0.0), CPU_16GB, shape).parts["logits"]

    half_vocab = dataclasses.replace(GEMMA3_270M, vocab_size=GEMMA3_270M.vocab_size // 2)
    assert logits(GEMMA3_270M, 1024) == pytest.approx(2 * logits(half_vocab, 1024))
    assert logits(GEMMA3_270M, 2048) == pytest.approx(2 * logits(GEMMA3_270M, 1024))
    parts = estimate_memory(default_config("orpo", max_length=2048, per_device_train_batch_size=1),
                            CPU_16GB, GEMMA3_270M).parts
    assert max(parts, key=parts.get) == "logits"


def test_the_issues_orpo_run_matches_its_measured_peak():
    # bench/bench_memory_estimate.py gemma-orpo-long512: Gemma 3 270M, ORPO, batch 1, max
    # length 512, long prompts, evaluation on, 4-bit on the CPU: 6,982 MB peak RSS.
    est = estimate_memory(default_config("orpo", per_device_train_batch_size=1, max_length=512), CPU_16GB,
                          GEMMA3_270M)
    assert est.total_mb == pytest.approx(6982, rel=0.15)
    assert est.parts["logits"] > est.total_mb / 2 and est.parts["evaluation"] > 0


# bench/bench_memory_estimate.py's wide model: 4 thin layers, a tied 64k vocabulary.
WIDE = ModelShape(hidden_size=256, num_layers=4, intermediate_size=1024, vocab_size=65536, num_heads=4,
                  num_kv_heads=2, head_dim=64, tie_word_embeddings=True, model_type="llama")


def test_a_head_that_scores_only_the_answers_counts_only_their_tokens():
    # The worker's speed options score only trained positions on a CPU (speed_options: auto), and
    # TRL's tiled head then projects only the answers: DPO at 1,024 tokens with ~30-token answers
    # on the wide model measured 883 MB (bench_memory_estimate, long prompts); the full tile read 3.5x that.
    cfg = default_config("dpo", max_length=1024, per_device_train_batch_size=1, eval_fraction=0.05)
    assert cfg.speed_options == "auto"
    est = estimate_memory(cfg, CPU_16GB, WIDE, answer_tokens=30)
    measured_mb = 883 + est.parts["tokenizer"]  # the bench's random model loads a 300-token tokenizer
    assert est.total_mb == pytest.approx(measured_mb, rel=0.15)
    full = estimate_memory(cfg, CPU_16GB, WIDE)  # answers unknown: every position, as before
    assert full.parts["logits"] > 20 * est.parts["logits"]
    # Longer answers, more projected positions, up to the full tile.
    assert est.parts["logits"] < estimate_memory(cfg, CPU_16GB, WIDE, answer_tokens=300).parts["logits"] \
        < full.parts["logits"] == estimate_memory(cfg, CPU_16GB, WIDE, answer_tokens=5000).parts["logits"]


def test_answer_lengths_change_nothing_where_every_position_is_scored():
    as_set = default_config("dpo", max_length=1024, per_device_train_batch_size=1, speed_options="as set")
    orpo = default_config("orpo", max_length=1024, per_device_train_batch_size=1)  # builds full logits
    dpo = default_config("dpo", max_length=1024, per_device_train_batch_size=1)
    for cfg, device in ((as_set, CPU_16GB), (orpo, CPU_16GB), (dpo, GPU_24GB)):
        assert estimate_memory(cfg, device, WIDE, answer_tokens=30).total_mb == \
            pytest.approx(estimate_memory(cfg, device, WIDE).total_mb)
    on = dataclasses.replace(as_set, score_trained_tokens_only=True)  # chosen by hand
    assert estimate_memory(on, CPU_16GB, WIDE, answer_tokens=30).total_mb < estimate_memory(on, CPU_16GB, WIDE).total_mb


def test_the_trained_answer_comes_from_the_report_only_where_prompts_are_set_apart():
    from types import SimpleNamespace

    from backend.training.memory_estimate import trained_answer_tokens

    def report(fmt):
        return SimpleNamespace(format=fmt, example_lengths=[(900, 12), (40, 30), (1500, 7)])

    assert trained_answer_tokens(default_config("dpo"), report("sharegpt_preference")) == 30
    assert trained_answer_tokens(default_config("sft"), report("prompt_completion")) == 30
    assert trained_answer_tokens(default_config("sft"), report("alpaca")) == 30
    # SFT trains every token of a whole conversation or plain text, packed data, or with the loss on everything.
    for fmt in ("messages", "sharegpt", "text"):
        assert trained_answer_tokens(default_config("sft"), report(fmt)) is None
    assert trained_answer_tokens(default_config("sft", packing=True), report("prompt_completion")) is None
    assert trained_answer_tokens(default_config("sft", completion_only_loss=False), report("prompt_completion")) is None
    assert trained_answer_tokens(default_config("dpo"), SimpleNamespace(format="preference", example_lengths=[])) \
        is None
    assert trained_answer_tokens(default_config("dpo"), None) is None


def test_the_workers_rows_give_the_answer_only_where_a_prompt_column_sets_it_apart():
    from backend.training.memory_estimate import trained_answer_tokens_of_rows

    assert trained_answer_tokens_of_rows(default_config("dpo"), ["prompt", "chosen", "rejected"], 40) == 40
    assert trained_answer_tokens_of_rows(default_config("sft"), ["prompt", "completion"], 40) == 40
    assert trained_answer_tokens_of_rows(default_config("sft"), ["messages"], 40) is None
    assert trained_answer_tokens_of_rows(default_config("sft", packing=True), ["prompt", "completion"], 40) is None
    assert trained_answer_tokens_of_rows(default_config("dpo"), ["prompt", "chosen", "rejected"], 0) is None  # unmeasured


def test_evaluation_batches_are_included_when_they_outgrow_the_training_step():
    def parts(**values):
        cfg = default_config("orpo", max_length=1024, per_device_train_batch_size=1, **values)
        return estimate_memory(cfg, CPU_16GB, GEMMA3_270M).parts

    assert "evaluation" not in parts(eval_fraction=0.0)
    default = parts(eval_fraction=0.05)  # evaluation batch: twice the training batch
    bigger = parts(eval_fraction=0.05, eval_batch_size=8)
    assert 0 < default["evaluation"] < bigger["evaluation"]
    assert sum(bigger.values()) > sum(default.values()) > sum(parts(eval_fraction=0.0).values())


def test_weights_4bit_below_8bit_below_none():
    weights = {q: estimate_memory(default_config("sft", quantization=q), GPU_80GB, LLAMA_SHAPE).parts["weights"]
               for q in ("4bit", "8bit", "none")}
    assert weights["4bit"] < weights["8bit"] < weights["none"]
    # bf16 on the GPU: 2 bytes per parameter unquantized.
    assert weights["none"] == pytest.approx(LLAMA_SHAPE.total_params * 2 / 2**20)
    # Embeddings and LM head stay in bf16 under 4-bit: about 1 GB each for Llama 3 8B.
    emb_mb = 2 * LLAMA_SHAPE.embedding_params * 2 / 2**20
    assert weights["4bit"] == pytest.approx(emb_mb + LLAMA_SHAPE.linear_params * 0.516 / 2**20, rel=0.01)


def test_dpo_activations_exceed_sft():
    sft = estimate_memory(default_config("sft", max_length=1024), GPU_24GB, LLAMA_SHAPE)
    dpo = estimate_memory(default_config("dpo", max_length=1024), GPU_24GB, LLAMA_SHAPE)
    assert dpo.parts["activations"] > sft.parts["activations"]
    assert dpo.total_mb > sft.total_mb


def test_orpo_counts_full_logits():
    """ORPO builds the (tokens x vocab) logits; TRL's SFT/DPO score through a tiled head."""
    sft = estimate_memory(default_config("sft", max_length=1024), GPU_24GB, LLAMA_SHAPE)
    orpo = estimate_memory(default_config("orpo", max_length=1024), GPU_24GB, LLAMA_SHAPE)
    full_logits_mb = 4 * 2 * 1024 * 128256 * 2 / 2**20  # batch 4, chosen + rejected, bf16
    assert orpo.parts["logits"] >= 3 * full_logits_mb
    assert sft.parts["logits"] < full_logits_mb / 4


def test_precompute_reference_lowers_dpo():
    on = default_config("dpo", precompute_ref_log_probs=False)
    off = dataclasses.replace(on, precompute_ref_log_probs=True)
    for device in (GPU_24GB, CPU_16GB):
        with_ref = estimate_memory(on, device, LLAMA_SHAPE)
        precomputed = estimate_memory(off, device, LLAMA_SHAPE)
        assert with_ref.parts["reference"] > 0
        assert "reference" not in precomputed.parts
        if device is GPU_24GB:
            assert precomputed.total_mb < with_ref.total_mb
        else:
            # On the CPU this run peaks while loading (the mapped checkpoint), which
            # no training setting changes.
            assert precomputed.total_mb <= with_ref.total_mb


def test_gradient_checkpointing_lowers_activations():
    on = estimate_memory(default_config("dpo", gradient_checkpointing=True), GPU_24GB, LLAMA_SHAPE)
    off = estimate_memory(default_config("dpo", gradient_checkpointing=False), GPU_24GB, LLAMA_SHAPE)
    assert on.parts["activations"] * 4 < off.parts["activations"]


def test_lora_rank_and_targets():
    r8 = estimate_memory(default_config("sft", lora_r=8), GPU_24GB, LLAMA_SHAPE).parts["lora"]
    r64 = estimate_memory(default_config("sft", lora_r=64), GPU_24GB, LLAMA_SHAPE).parts["lora"]
    qv = estimate_memory(default_config("sft", lora_r=64, lora_target_modules="q_proj,v_proj"), GPU_24GB,
                         LLAMA_SHAPE).parts["lora"]
    assert r64 == pytest.approx(8 * r8)
    assert qv < r64 / 4
    # Llama 3 8B, r=64 all-linear: 167.8 M adapter parameters, bf16 under QLoRA.
    assert r64 == pytest.approx(167_772_160 * 2 / 2**20, rel=0.001)


def test_parts_add_up_and_cpu_counts_process_overhead():
    est = estimate_memory(default_config("dpo"), CPU_16GB, GEMMA3_270M)
    assert sum(est.parts.values()) == pytest.approx(est.total_mb)
    assert est.compute_dtype == "float32" and est.parts["overhead"] >= 400
    assert est.parts["tokenizer"] > 100  # a 262k-entry vocabulary lives in host RAM
    gpu = estimate_memory(default_config("dpo"), GPU_24GB, GEMMA3_270M)
    assert gpu.compute_dtype == "bfloat16" and "tokenizer" not in gpu.parts
    assert gpu.parts["overhead"] >= 500  # the CUDA context


# --- fit and suggestions -----------------------------------------------------------------------------

def test_fits_is_none_without_device():
    est = estimate_memory(default_config("sft"), None, GEMMA3_270M)
    assert est.fits is None and est.device_mb is None and est.total_mb > 0
    assert est.suggestions == []
    est = estimate_memory(default_config("sft"), {"kind": "cpu"}, GEMMA3_270M)
    assert est.fits is None


def test_fits_on_a_big_device():
    est = estimate_memory(default_config("sft", per_device_train_batch_size=1, max_length=512), GPU_80GB,
                          LLAMA_SHAPE)
    assert est.fits is True and est.suggestions == []


def test_suggestions_when_memory_is_small():
    cfg = default_config("dpo", per_device_train_batch_size=8, gradient_accumulation_steps=1, max_length=2048,
                         gradient_checkpointing=False, quantization="8bit")
    est = estimate_memory(cfg, GPU_24GB, LLAMA_SHAPE)
    assert est.fits is False
    text = "\n".join(est.suggestions)
    assert "turn on gradient checkpointing" in text
    assert "use 4-bit quantization" in text
    assert "lower batch size from 8 to" in text and "raise gradient accumulation from 1 to" in text
    assert "shorten max length from 2048 to" in text
    for s in est.savings:
        if s["changes"]:
            assert s["saving_mb"] > 0 and "saves" in s["text"]
            # The saving is the difference of two full estimates.
            changed = estimate_memory(dataclasses.replace(cfg, **s["changes"]), GPU_24GB, LLAMA_SHAPE)
            assert s["saving_mb"] == pytest.approx(est.total_mb - changed.total_mb, abs=0.2)
    batch = next(s for s in est.savings if "per_device_train_batch_size" in s["changes"])
    b, acc = batch["changes"]["per_device_train_batch_size"], batch["changes"]["gradient_accumulation_steps"]
    assert b * acc == 8  # same effective batch
    assert est.summary_text().count("\n  - ") == len(est.suggestions)


def test_only_applicable_suggestions():
    cfg = default_config("sft", per_device_train_batch_size=1, max_length=128, quantization="4bit",
                         gradient_checkpointing=True)
    tiny_gpu = dict(GPU_24GB, memory_mb=2048.0)
    est = estimate_memory(cfg, tiny_gpu, LLAMA_SHAPE)
    assert est.fits is False
    text = "\n".join(est.suggestions)
    for absent in ("gradient checkpointing", "4-bit", "batch size", "max length", "reference"):
        assert absent not in text
    assert len(est.suggestions) == 1 and "pick a smaller model" in text


def test_to_dict_is_json():
    est = estimate_memory(default_config("dpo", per_device_train_batch_size=16, max_length=4096), GPU_24GB,
                          LLAMA_SHAPE)
    data = json.loads(json.dumps(est.to_dict()))
    assert data["total_mb"] == pytest.approx(est.total_mb, abs=0.1)
    assert list(data["parts"]) == list(est.parts)
    assert set(data["part_labels"]) == set(data["parts"])
    assert isinstance(est, MemoryEstimate) and data["suggestions"] == est.suggestions


# --- the record of estimate vs reality ---------------------------------------------------------------

def test_record_measured_peak(tmp_path):
    est = estimate_memory(default_config("sft"), CPU_16GB, GEMMA3_270M).to_dict()
    path = record_measured_peak(tmp_path, est, est["total_mb"] * 1.1, "rss")
    data = json.loads(path.read_text())
    assert path.name == "memory.json"
    assert data["measured_peak_mb"] == pytest.approx(est["total_mb"] * 1.1, abs=0.1)
    assert data["ratio_measured_to_estimated"] == pytest.approx(1.1, abs=0.001)
    assert data["estimate"]["parts"] == est["parts"]
    assert [p.name for p in tmp_path.iterdir()] == ["memory.json"]  # no temporary file left behind
    gpu = estimate_memory(default_config("sft"), GPU_24GB, GEMMA3_270M).to_dict()
    data = json.loads(record_measured_peak(tmp_path, gpu, 1000.0, "gpu").read_text())
    # max_memory_reserved does not see the CUDA context.
    assert data["estimated_mb"] == pytest.approx(gpu["total_mb"] - 500, abs=0.1)
    data = json.loads(record_measured_peak(tmp_path, None, None, "rss").read_text())
    assert data["ratio_measured_to_estimated"] is None


def test_import_does_not_pull_in_torch():
    code = ("import sys, backend.training.memory_estimate as m; "
            "m.estimate_memory(__import__('backend.runs.config').runs.config.default_config('dpo'), None); "
            "bad = [k for k in ('torch', 'transformers', 'trl', 'peft', 'bitsandbytes') if k in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
