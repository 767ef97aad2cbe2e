"""The generation engine's fast paths: the decode precision and batched, left-padded decoding.

The choice of dtype is checked without a model; the rest runs the real engine
and the real worker service on the tiny model, against plain ``generate``.
"""

from __future__ import annotations

import threading

import pytest

from backend.models.inference_precision import (DTYPE_ENV, PrecisionChoiceError, cpu_has_native_bf16, decode_dtype_name,
                                         requested_dtype)

X86_WITH = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_tile\n"
X86_WITHOUT = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f\n"
ARM_WITH = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n"
PROMPTS = ["Question 3: can you help me with task 3?", "The quick", "Thank you for the clear answer, please"]


def test_native_bf16_is_read_from_the_cpu_flags():
    assert cpu_has_native_bf16(X86_WITH) and cpu_has_native_bf16(ARM_WITH)
    assert not cpu_has_native_bf16(X86_WITHOUT)
    assert not cpu_has_native_bf16("")


def test_auto_casts_only_unquantized_weights_on_a_cpu_with_bf16(monkeypatch):
    assert decode_dtype_name("auto", "cpu", "none", native_bf16=True) == "bf16"
    assert decode_dtype_name("auto", "cpu", "none", native_bf16=False) is None  # emulated bf16 is slower
    assert decode_dtype_name("auto", "cpu", "4bit", native_bf16=True) is None  # what QLoRA trained against
    assert decode_dtype_name("auto", "cuda", "none", native_bf16=True) is None  # the loader chose already
    assert decode_dtype_name("fp32", "cpu", "none", native_bf16=True) == "fp32"
    monkeypatch.delenv(DTYPE_ENV, raising=False)
    assert requested_dtype(None) == "auto"
    monkeypatch.setenv(DTYPE_ENV, "FP32")
    assert requested_dtype(None) == "fp32" and requested_dtype("bf16") == "bf16"
    with pytest.raises(PrecisionChoiceError, match=f"{DTYPE_ENV} is 'fp16'; it must be one of auto, fp32, bf16"):
        monkeypatch.setenv(DTYPE_ENV, "fp16")
        requested_dtype(None)


def _loaded(model_dir, adapter: bool = False):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from backend.models.adapter_loading import LoadedModel, LoadSpec
    from backend.training.trainer_builders import Precision

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    name = ""
    if adapter:
        from peft import LoraConfig, get_peft_model

        torch.manual_seed(0)
        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                                 init_lora_weights=False, task_type="CAUSAL_LM")).eval()
        name = "default"
    spec = LoadSpec(model=str(model_dir), adapter_dir="x" if adapter else "", run_dir="", method="dpo", beta=0.1,
                    quantization="none")
    return LoadedModel(model=model, tokenizer=tokenizer, precision=Precision("cpu", torch.float32, False, False),
                       spec=spec, model_path=str(model_dir), model_label="tiny", chat_template_added=False,
                       adapter_name=name)


def _plain_greedy(loaded, prompt: str, n: int) -> list[int]:
    import torch

    tokenizer, model = loaded.tokenizer, loaded.model
    inputs = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, do_sample=False, max_new_tokens=n, min_new_tokens=n,
                             pad_token_id=tokenizer.pad_token_id)
    return out[0, inputs["input_ids"].shape[1]:].tolist()


def _engine_greedy(loaded, prompts, n: int, side: str = "base") -> list[list[int]]:
    from backend.generation.engine import GenerationEngine
    from backend.generation.protocol import SamplingSettings

    engine = GenerationEngine(loaded)
    sampling = SamplingSettings.from_dict({"greedy": True, "max_new_tokens": n, "min_new_tokens": n,
                                           "stop_strings": []})
    answers = engine.generate(list(prompts), side, sampling, threading.Event())
    return [a[side].ids for a in answers]


@pytest.mark.slow
def test_fp32_keeps_the_weights_and_a_left_padded_batch_decodes_as_plain_generate(tiny_model_dir):
    from backend.models.inference_precision import apply_decode_precision

    loaded = _loaded(tiny_model_dir)
    assert apply_decode_precision(loaded, "fp32") == "fp32"
    assert {p.dtype for p in loaded.model.parameters()} == {__import__("torch").float32}
    batched = _engine_greedy(loaded, PROMPTS, 20)  # three prompt lengths in one left-padded batch
    assert batched == [_plain_greedy(loaded, p, 20) for p in PROMPTS]
    assert batched == [_engine_greedy(loaded, [p], 20)[0] for p in PROMPTS]


@pytest.mark.slow
def test_bf16_casts_base_and_adapter_and_still_decodes_as_generate_in_bf16(tiny_model_dir):
    import torch

    from backend.models.inference_precision import apply_decode_precision

    loaded = _loaded(tiny_model_dir, adapter=True)
    assert apply_decode_precision(loaded, "bf16") == "bf16"
    assert loaded.precision.bf16 and loaded.precision.compute_dtype == torch.bfloat16
    lora = {n: p.dtype for n, p in loaded.model.named_parameters() if "lora_" in n}
    assert lora and set(lora.values()) == {torch.bfloat16}
    assert {p.dtype for p in loaded.model.parameters()} == {torch.bfloat16}
    (aligned,) = _engine_greedy(loaded, PROMPTS[:1], 16, side="aligned")
    assert aligned == _plain_greedy(loaded, PROMPTS[0], 16)  # the PEFT model with its adapter on


@pytest.mark.slow
def test_worker_load_reports_the_decode_dtype_and_refuses_an_unknown_one(tiny_model_dir):
    from backend.generation.protocol import GenerationError, LoadRequest, ModelReady
    from backend.generation.worker import GenerationService

    events = []
    service = GenerationService(events.append, log=lambda message: None)
    service.handle(LoadRequest(id="a", model=str(tiny_model_dir), quantization="none", dtype="bf16"),
                   threading.Event())
    (ready,) = [e for e in events if isinstance(e, ModelReady)]
    assert ready.device["precision"] == "bf16"
    assert str(next(service.engine.model.parameters()).dtype) == "torch.bfloat16"

    events.clear()
    service.handle(LoadRequest(id="b", model=str(tiny_model_dir), quantization="none", dtype="fp16"),
                   threading.Event())
    (error,) = [e for e in events if isinstance(e, GenerationError)]
    assert error.kind == "bad_request" and "'fp16'" in error.message and not error.fatal
    assert service.engine is not None  # the bf16 model still serves

    events.clear()
    service.handle(LoadRequest(id="c", model=str(tiny_model_dir), quantization="none", dtype="fp32"),
                   threading.Event())
    (ready,) = [e for e in events if isinstance(e, ModelReady)]
    assert ready.device["precision"] == "fp32" and not ready.reused_base
    assert str(next(service.engine.model.parameters()).dtype) == "torch.float32"
