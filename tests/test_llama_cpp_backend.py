"""The llama.cpp generation backend: its refusals, the fallback to transformers, and agreement with transformers.

The fallback runs everywhere: the worker is started with a ``llama_cpp`` package
that cannot be imported and must generate with transformers and say why. The
agreement tests need llama-cpp-python (compiled, so CI does not install it) and
llama.cpp's converters; they convert a tiny Llama-shaped model to f16 and a
random LoRA adapter to a GGUF LoRA, and hold llama.cpp's greedy answers, with
the adapter on and off, to transformers' on the same weights.
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path

import pytest

from backend.generation.llama_cpp_backend import (LlamaCppRefused, adapter_refusal, base_gguf, llama_cpp_missing,
                                                  lora_converter_dir, lora_scale)
from backend.generation.protocol import ProtocolError, SamplingSettings

HAVE_LLAMA_CPP = importlib.util.find_spec("llama_cpp") is not None
needs_llama_cpp = pytest.mark.skipif(
    not HAVE_LLAMA_CPP,
    reason="llama-cpp-python is not installed (it compiles for minutes, so CI leaves it out; "
           "bash installer/install.sh --with-llama-cpp or pip install '.[llamacpp]' installs it)")


def _converters_installed() -> bool:
    from backend.export.plan import converter_installed

    return converter_installed() and (lora_converter_dir() / "convert_lora_to_gguf.py").is_file()


needs_converters = pytest.mark.skipif(
    not _converters_installed(),
    reason="llama.cpp's converters are not installed (bash installer/install_llama_converter.sh --lora)")
PROMPTS = ["The quick brown fox", "Thank you for the clear answer, please", "Question: can you help me?"]


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    # Converted GGUF files of throw-away tiny models stay out of the user's cache.
    monkeypatch.setenv("ALIGNSTUDIO_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def tiny_llama_with_adapter(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny Llama-shaped model (its tokenizer converts to GGUF) and a random, non-zero LoRA adapter."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from backend.testing.tiny_llama_style_model import build_llama_style_model

    root = tmp_path_factory.mktemp("tiny-llama")
    model_dir = build_llama_style_model(root / "model")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    torch.manual_seed(0)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                                  init_lora_weights=False, task_type="CAUSAL_LM"))
    peft_model.save_pretrained(root / "adapter")
    return model_dir, root / "adapter"


# ---------------------------------------------------------------- no llama.cpp needed


def test_adapters_a_gguf_lora_cannot_carry_are_refused_with_the_reason():
    assert adapter_refusal({"peft_type": "LORA", "r": 8, "lora_alpha": 16}) == ""
    assert "DoRA" in adapter_refusal({"peft_type": "LORA", "use_dora": True})
    assert "score" in adapter_refusal({"peft_type": "LORA", "modules_to_save": ["score"]})
    assert "bias" in adapter_refusal({"peft_type": "LORA", "bias": "lora_only"})
    assert "per-layer" in adapter_refusal({"peft_type": "LORA", "rank_pattern": {"q_proj": 4}})
    assert "IA3" in adapter_refusal({"peft_type": "IA3"})
    # llama.cpp scales by alpha/r; rsLoRA means alpha/sqrt(r), so the scale makes up the difference.
    assert lora_scale({"r": 16, "use_rslora": False}) == 1.0
    assert lora_scale({"r": 16, "use_rslora": True}) == 4.0


def test_auto_does_not_write_a_gguf_copy_of_a_model_folder(tiny_llama_with_adapter):
    model_dir, _ = tiny_llama_with_adapter
    with pytest.raises(LlamaCppRefused, match="no GGUF copy yet.*choose the llama.cpp backend") as refused:
        base_gguf(str(model_dir), str(model_dir), convert=False, log=lambda m: None)
    # A tiny model's copy is named in MB, not "0.0 GB"; the folder's name is quoted.
    assert " MB besides" in str(refused.value) and f"'{model_dir.name}'" in str(refused.value)


def test_the_backend_is_a_sampling_setting_checked_like_the_others():
    assert SamplingSettings().backend == "auto"
    assert SamplingSettings.from_dict({"backend": "llama.cpp"}).backend == "llama.cpp"
    with pytest.raises(ProtocolError, match="Backend must be one of auto, transformers, llama.cpp; got 'vllm'"):
        SamplingSettings.from_dict({"backend": "vllm"})


def test_compare_sampling_form_offers_the_backend_and_shows_what_generates(qtbot):
    from app.compare.sampling import SamplingPanel

    panel = SamplingPanel()
    qtbot.addWidget(panel)
    assert panel.settings()["backend"] == "auto"
    panel.set_values({"backend": "llama.cpp"})
    assert panel.settings()["backend"] == "llama.cpp"
    assert panel.backend_status.isHidden()
    note = "Generating with transformers, not llama.cpp: llama-cpp-python is not installed."
    panel.set_backend_status("transformers", note)
    assert not panel.backend_status.isHidden() and panel.backend_status.text() == note
    panel.set_backend_status("llama.cpp")
    assert panel.backend_status.text() == "Generating with llama.cpp."


def test_worker_without_llama_cpp_generates_with_transformers_and_says_why(tiny_llama_with_adapter, tmp_path):
    """The real worker, with a llama_cpp package that fails to import, asked for llama.cpp."""
    from backend.generation.client import GenerationSession
    from backend.generation.protocol import GenerationDone, WorkerStatus

    model_dir, adapter = tiny_llama_with_adapter
    blocker = tmp_path / "blocked" / "llama_cpp"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('libllama.so: cannot open shared object file')\n")
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("PYTHONPATH", str(blocker.parent))
    try:
        session = GenerationSession.start(adapter_dir=adapter, model=str(model_dir), quantization="none",
                                          log_path=tmp_path / "worker.log")
    finally:
        monkeypatch.undo()
    with session:
        ready = session.wait_ready(timeout=300)
        assert ready.generation_backend == "transformers"
        assert "llama-cpp-python is installed but cannot be imported" in ready.backend_note
        assert "libllama.so" in ready.backend_note
        answers = {}
        for backend in ("llama.cpp", "transformers"):
            events = session.collect(session.generate(
                PROMPTS[0], side="both", score=False,
                sampling={"greedy": True, "max_new_tokens": 8, "backend": backend}), timeout=300)
            done = [e for e in events if isinstance(e, GenerationDone)]
            assert {e.backend for e in done} == {"transformers"}, backend
            answers[backend] = {e.side: e.text for e in done}
        # Same answers: the fallback is the transformers path itself.
        assert answers["llama.cpp"] == answers["transformers"]
    assert "Generating with transformers, not llama.cpp: llama-cpp-python is installed but cannot be imported" \
        in (tmp_path / "worker.log").read_text()


# ---------------------------------------------------------------- with llama.cpp


def _engine(model_dir: Path, adapter: Path):
    from backend.generation.engine import GenerationEngine
    from backend.models.adapter_loading import load_model, resolve_load_spec
    from backend.models.inference_precision import apply_decode_precision

    loaded = load_model(resolve_load_spec(adapter_dir=adapter, model=str(model_dir), quantization="none"),
                        log=lambda m: None)
    apply_decode_precision(loaded, "fp32")
    return GenerationEngine(loaded)


def _answers(engine, backend: str, **sampling) -> list[dict]:
    settings = SamplingSettings.from_dict({"greedy": True, "max_new_tokens": 12, "stop_strings": [],
                                           "backend": backend, **sampling})
    out = engine.generate(PROMPTS, "both", settings, threading.Event())
    return [{side: (a.backend, a.ids, a.text, a.finish_reason) for side, a in row.items()} for row in out]


def _agreeing_rows(engine, expected: list[dict], got: list[dict]) -> int:
    """Each answer must be transformers' token for token, or part from it only where
    transformers itself scores the two tokens within 0.01 of each other (a tie that
    the f16 rounding of llama.cpp's activations may break either way on random weights).
    Returns how many answers agree in full (ids, text and finish reason)."""
    import torch

    from backend.data.prompt_rendering import prompt_token_ids

    agreeing = 0
    for prompt, want_row, have_row in zip(PROMPTS, expected, got):
        for side in ("base", "aligned"):
            want, have = want_row[side], have_row[side]
            assert want[0] == "transformers" and have[0] == "llama.cpp"
            if have[1:] == want[1:]:
                agreeing += 1
                continue
            k = next(i for i, (a, b) in enumerate(zip(want[1], have[1])) if a != b)
            ids = torch.tensor([prompt_token_ids(engine.tokenizer, prompt) + want[1][:k]])
            with engine.adapter_state(side):
                logits = engine.forward(input_ids=ids, use_cache=False).logits[0, -1].float()
            margin = float(logits[want[1][k]] - logits[have[1][k]])
            assert 0 <= margin < 0.01, (side, prompt, k, margin)
    return agreeing


@needs_converters
@needs_llama_cpp
def test_llama_cpp_greedy_answers_agree_with_transformers_with_the_adapter_on_and_off(tiny_llama_with_adapter):
    assert llama_cpp_missing() == ""
    model_dir, adapter = tiny_llama_with_adapter
    engine = _engine(model_dir, adapter)
    notes = []
    engine.on_backend_note = notes.append
    try:
        # "auto" leaves a model folder to transformers: converting it is the explicit choice's job.
        assert engine.generation_backend("auto") == "transformers"
        assert "no GGUF copy yet" in engine.backend_note
        assert engine.generation_backend("llama.cpp") == "llama.cpp", engine.backend_note
        assert any("llama.cpp serves generation" in n for n in notes)
        expected, got = _answers(engine, "transformers"), _answers(engine, "llama.cpp")
        assert _agreeing_rows(engine, expected, got) >= 5  # of 6: ties are rare
        # The adapter really is on for the aligned side and off for the base side.
        assert any(row["base"][1] != row["aligned"][1] for row in got)
        # Now converted, "auto" takes llama.cpp too.
        assert engine.generation_backend("auto") == "llama.cpp"
    finally:
        engine.close()


@needs_converters
@needs_llama_cpp
def test_llama_cpp_cuts_at_the_same_stop_string_and_honours_the_minimum_length(tiny_llama_with_adapter):
    model_dir, adapter = tiny_llama_with_adapter
    engine = _engine(model_dir, adapter)
    try:
        assert engine.generation_backend("llama.cpp") == "llama.cpp", engine.backend_note
        text = _answers(engine, "transformers")[0]["base"][2]
        words = text.split()
        assert len(words) >= 3, text
        stop = words[2]  # a word in the middle of the answer
        for sampling in ({"stop_strings": [stop]}, {"min_new_tokens": 12}):
            expected, got = _answers(engine, "transformers", **sampling), _answers(engine, "llama.cpp", **sampling)
            assert _agreeing_rows(engine, expected, got) >= 5
        cut = _answers(engine, "llama.cpp", stop_strings=[stop])[0]["base"]
        assert cut[3] == "stop" and stop not in cut[2] and text.startswith(cut[2])
    finally:
        engine.close()
