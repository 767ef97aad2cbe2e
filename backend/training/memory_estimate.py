"""Will a LoRA/QLoRA run fit in memory? A peak-memory estimate made before loading anything.

The window calls this in its own process on every settings change, so it must
stay pure arithmetic over a model's shape: it never imports torch or
transformers. The shape comes from a model folder's ``config.json``, from a
``.gguf`` header, or from the Hugging Face cache.

What the estimate models, and why each part is there (TRL 1.16, peft 0.21,
bitsandbytes 0.50, as built by ``backend.training.trainer_builders``):

* Base weights. bitsandbytes quantizes only the linear layers of the decoder;
  embeddings, norms and an untied LM head stay in the compute dtype the model is
  loaded in. NF4 with double quantization stores 0.5 byte per weight plus one
  8-bit absmax per 64 weights and one fp32 per 256 absmax blocks.
* LoRA adapter, its gradients and AdamW's two moments, all in the adapter's own
  dtype: some TRL trainers cast the adapter of a quantized model to bf16
  (``MemoryTraits.adapter_half_when_quantized``); the others, and unquantized
  models, keep peft's fp32 adapter. The Trainer keeps no fp32
  master copy of trainable weights (no mixed-precision master weights), so there
  is none to count.
* Activations saved for the backward pass, per token and layer, for a decoder
  with SDPA attention (no seq x seq score matrix is stored), counting only what
  autograd keeps around frozen weights (see ``_layer_activation_elems``).
  Gradient checkpointing keeps only each layer's input and recomputes one layer
  at a time. Pairwise methods run chosen and rejected together
  (``MemoryTraits.sequences_per_example``).
* The LM head. Most TRL 1.16 trainers score tokens through a fused, tiled head
  and never build the (tokens x vocab) logits: the cost is a few tiles of up to
  4096 tokens x 32768 vocabulary entries. A method whose trainer still builds
  the full logits (``MemoryTraits.full_logits``) pays for them, the
  cross-entropy's log-softmax copy and their gradients; with a 262k vocabulary
  that is the largest single item. A tiled head that scores only the trained
  positions (always on a GPU with Triton; on the CPU with ``score_trained_tokens_only``,
  which ``speed_options: auto`` turns on there) projects only the answers' tokens
  when their length is known (``answer_tokens``): with long prompts and short
  answers that head is a small fraction of a full tile.
* A reference pass (``MemoryTraits.reference_pass``): with a PEFT model the reference is the policy with its
  adapter disabled, so no second copy of the weights exists. The no-grad forward
  runs before the policy's forward and frees its buffers, so it adds to the peak
  only where its transient buffers outgrow the policy's own.
* Runtime overhead: the CUDA context and allocator slack on a GPU. On the CPU
  the resident size of a Python process with torch, transformers, TRL, peft and
  datasets imported, what the heap keeps of the loader's conversion buffers,
  the tokenizer (large for big vocabularies) and, while loading, the
  memory-mapped checkpoint.

The CPU constants are calibrated against measured peak RSS of real runs by
``bench/bench_memory_estimate.py``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backend.core.atomic_files import write_json_atomic

MB = 2**20

# ---------------------------------------------------------------------------
# Constants. The CPU ones come from bench/bench_memory_estimate.py on a 2-core
# x86 machine (torch 2.13 CPU, transformers 5.23, TRL 1.16); the GPU ones are
# the usual figures for a CUDA context and PyTorch's caching allocator.
# ---------------------------------------------------------------------------
CUDA_CONTEXT_MB = 500.0
# The caching allocator rounds blocks up and keeps freed ones for reuse.
CUDA_ALLOCATOR_SLACK = 0.08
# Resident size of the worker once torch, transformers, trl, peft and datasets
# are imported (measured 510 MB) plus the Trainer's own bookkeeping.
CPU_PROCESS_BASELINE_MB = 560.0
# A loaded fast tokenizer, per vocabulary entry: Gemma's 262k vocabulary took
# 321 MB of RSS. Host memory only, so it counts on the CPU and not on a GPU.
TOKENIZER_BYTES_PER_TOKEN = 1250.0
# Activations are modelled per token and layer; glibc keeps freed blocks around
# and PyTorch rounds allocations, so the CPU pays somewhat more than the tensors.
CPU_ALLOCATOR_SLACK = 0.10
# Loading converts every checkpoint tensor (bf16 -> fp32, or -> NF4) on several
# threads; glibc keeps part of those freed buffers in its arenas for the rest of
# the process. Measured after loading Gemma 3 270M: 30-290 MB above the weights.
CPU_HEAP_RETAINED = 0.25

# TRL's fused LM head (trl.kernels.chunked_logprob): tile shape and how many
# tile-sized buffers are alive at once in its backward. On CUDA, Triton kernels
# work in place on one compute-dtype tile (plus the weight chunk cast to it);
# elsewhere it runs as plain torch ops, each allocating a new fp32 tile.
FUSED_HEAD_TOKEN_CHUNK = 4096
FUSED_HEAD_VOCAB_CHUNK = 32768
FUSED_HEAD_FP32_TILES_TORCH = 8.0
FUSED_HEAD_TILES_TRITON = 1.5
# The full-logits path (MemoryTraits.full_logits): logits, the chosen half made contiguous, its
# log-softmax, and the logits' gradient, in units of the full logits tensor.
FULL_LOGITS_COPIES = 3.5
# Evaluation keeps no gradient: the logits, the chosen half's copy and its log-softmax.
EVAL_FULL_LOGITS_COPIES = 2.0

FIT_FRACTION = 0.9  # leave room for everything the estimate does not see

NF4_BYTES_PER_PARAM = 0.5 + 1 / 64 + 4 / (64 * 256)  # 4-bit codes + double-quantized absmax
INT8_BYTES_PER_PARAM = 1.0 + 4 / 4096  # int8 codes + a per-row fp32 scale (rows are thousands wide)

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}

PART_LABELS = {
    "weights": "Base weights",
    "lora": "LoRA adapter",
    "gradients": "LoRA gradients",
    "optimizer": "AdamW state",
    "activations": "Activations",
    "logits": "LM head / logits",
    "reference": "Reference pass",
    "evaluation": "Evaluation batches",
    "sampling": "Sampling (KV cache, completion log-probs)",
    "tokenizer": "Tokenizer",
    "overhead": "Runtime overhead",
    "loading": "Checkpoint mapped while loading",
}

_NON_GATED_MLP = {"gpt2", "gpt_neox", "gptj", "opt", "bloom", "falcon", "phi", "starcoder2", "gpt_bigcode",
                  "codegen", "mpt", "gpt_neo"}
# Families whose config class ties the LM head to the embedding unless told otherwise.
_TIED_BY_DEFAULT = {"gemma", "gemma2", "gemma3", "gemma3_text", "gpt2", "gpt_neo", "gptj", "opt", "bloom",
                    "t5", "qwen3", "smollm3", "phi3"}
# Families with extra norms around attention and MLP (Gemma 2/3: pre/post for both).
_FOUR_NORMS = {"gemma2", "gemma3", "gemma3_text", "olmo2"}
_QK_NORM = {"gemma3", "gemma3_text", "qwen3", "qwen3_moe", "olmo2", "olmoe"}


# ---------------------------------------------------------------------------
# Model shape
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelShape:
    """The numbers of a decoder-only transformer that memory depends on."""

    hidden_size: int
    num_layers: int
    intermediate_size: int
    vocab_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    tie_word_embeddings: bool
    model_type: str = ""
    gated_mlp: bool = True
    num_experts: int = 0  # routed experts per layer; 0 for a dense MLP
    experts_per_token: int = 0
    norms_per_layer: int = 2
    qk_norm: bool = False
    checkpoint_dtype: str = "bfloat16"  # what the weights on disk are stored as
    source: str = ""  # where these numbers were read from

    @property
    def q_dim(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim

    def layer_linears(self) -> list[tuple[str, int, int]]:
        """(module name, in features, out features) of one decoder layer's linear layers
        that peft's ``all-linear`` targets. Routed experts are left out: peft does not
        wrap their fused 3-D weights."""
        h, q, kv, i = self.hidden_size, self.q_dim, self.kv_dim, self.intermediate_size
        attn = [("q_proj", h, q), ("k_proj", h, kv), ("v_proj", h, kv), ("o_proj", q, h)]
        if self.num_experts:
            return attn
        if self.gated_mlp:
            return attn + [("gate_proj", h, i), ("up_proj", h, i), ("down_proj", i, h)]
        return attn + [("up_proj", h, i), ("down_proj", i, h)]

    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def attention_params(self) -> int:
        h, q, kv = self.hidden_size, self.q_dim, self.kv_dim
        return self.num_layers * (h * q + 2 * h * kv + q * h)

    @property
    def mlp_params(self) -> int:
        h, i = self.hidden_size, self.intermediate_size
        per_mlp = (3 if self.gated_mlp else 2) * h * i
        if self.num_experts:
            return self.num_layers * (self.num_experts * per_mlp + h * self.num_experts)
        return self.num_layers * per_mlp

    @property
    def norm_params(self) -> int:
        per_layer = self.norms_per_layer * self.hidden_size
        if self.qk_norm:
            per_layer += 2 * self.head_dim
        return self.num_layers * per_layer + self.hidden_size

    @property
    def lm_head_params(self) -> int:
        return 0 if self.tie_word_embeddings else self.vocab_size * self.hidden_size

    @property
    def linear_params(self) -> int:
        """Weights bitsandbytes quantizes: the decoder's linear layers."""
        return self.attention_params + self.mlp_params

    @property
    def total_params(self) -> int:
        return self.embedding_params + self.linear_params + self.norm_params + self.lm_head_params

    def params_by_kind(self) -> dict[str, int]:
        return {
            "embedding": self.embedding_params,
            "attention": self.attention_params,
            "mlp": self.mlp_params,
            "norms": self.norm_params,
            "lm_head": self.lm_head_params,
        }

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["params"] = self.params_by_kind()
        data["total_params"] = self.total_params
        return data


# Used when the embedded model has not been converted yet (first start).
GEMMA3_270M = ModelShape(
    hidden_size=640, num_layers=18, intermediate_size=2048, vocab_size=262144, num_heads=4,
    num_kv_heads=1, head_dim=256, tie_word_embeddings=True, model_type="gemma3_text",
    norms_per_layer=4, qk_norm=True, checkpoint_dtype="bfloat16",
    source="Gemma 3 270M (built-in shape)",
)


def _first(cfg: dict, *keys: str, default: Any = None) -> Any:
    for key in keys:
        value = cfg.get(key)
        if value is not None:
            return value
    return default


def shape_from_config(cfg: dict, source: str = "") -> ModelShape | None:
    """A ModelShape from a ``config.json`` mapping, or None if it lacks the basics.

    Multimodal configs (Gemma 3 4B+, Llava, ...) nest the language model under
    ``text_config``; its values win and the outer config fills the gaps.
    """
    text = cfg.get("text_config")
    merged = {**cfg, **text} if isinstance(text, dict) else dict(cfg)
    model_type = str(merged.get("model_type") or cfg.get("model_type") or "")
    hidden = _first(merged, "hidden_size", "n_embd", "d_model", "dim")
    layers = _first(merged, "num_hidden_layers", "n_layer", "num_layers", "n_layers")
    heads = _first(merged, "num_attention_heads", "n_head", "num_heads", "n_heads")
    vocab = _first(merged, "vocab_size", "padded_vocab_size")
    if not all(isinstance(v, int) and v > 0 for v in (hidden, layers, heads, vocab)):
        return None
    kv_heads = _first(merged, "num_key_value_heads", "num_kv_heads", "n_head_kv", "multi_query_group_num")
    if kv_heads is None:
        kv_heads = 1 if merged.get("multi_query") else heads
    intermediate = _first(merged, "intermediate_size", "n_inner", "ffn_dim", "ffn_hidden_size",
                          default=4 * hidden)
    head_dim = _first(merged, "head_dim", default=hidden // heads)
    num_experts = _first(merged, "num_local_experts", "num_experts", "n_routed_experts", default=0) or 0
    experts_per_token = _first(merged, "num_experts_per_tok", "moe_topk", default=0) or 0
    if num_experts and experts_per_token:
        intermediate = _first(merged, "moe_intermediate_size", "expert_intermediate_size",
                              default=intermediate)
    else:
        num_experts = experts_per_token = 0
    tie = _first(merged, "tie_word_embeddings")
    if tie is None:
        # An absent key means "the class default", which differs per family.
        # Untied is the safe guess: it counts an LM head that may not exist.
        tie = model_type in _TIED_BY_DEFAULT
    dtype = str(_first(merged, "dtype", "torch_dtype", default="bfloat16")).replace("torch.", "")
    return ModelShape(
        hidden_size=int(hidden),
        num_layers=int(layers),
        intermediate_size=int(intermediate),
        vocab_size=int(vocab),
        num_heads=int(heads),
        num_kv_heads=int(kv_heads),
        head_dim=int(head_dim),
        tie_word_embeddings=bool(tie),
        model_type=model_type,
        gated_mlp=model_type not in _NON_GATED_MLP,
        num_experts=int(num_experts),
        experts_per_token=int(experts_per_token),
        norms_per_layer=4 if model_type in _FOUR_NORMS else 2,
        qk_norm=model_type in _QK_NORM,
        checkpoint_dtype=dtype if dtype in DTYPE_BYTES else "bfloat16",
        source=source,
    )


def _shape_from_config_file(path: Path) -> ModelShape | None:
    try:
        cfg = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(cfg, dict):
        return None
    return shape_from_config(cfg, source=str(path))


# --- GGUF ------------------------------------------------------------------
# gguf.GGUFReader decodes every metadata array element by element: for a 262k
# vocabulary that took over a minute on this machine. Only counts and a few
# scalars are needed, so this reads the header directly and steps over arrays.
_GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q",
                 12: "<d"}
_GGUF_STRING, _GGUF_ARRAY = 8, 9


class _GGUFHeader:
    def __init__(self, data: bytes | memoryview):
        self.data = data
        self.pos = 0

    def _unpack(self, fmt: str):
        value = struct.unpack_from(fmt, self.data, self.pos)[0]
        self.pos += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        n = self._unpack("<Q")
        raw = bytes(self.data[self.pos:self.pos + n])
        self.pos += n
        return raw.decode("utf-8", errors="replace")

    def value(self, vtype: int):
        """Scalars and strings as values; arrays as ("array", count), their elements skipped."""
        if vtype in _GGUF_SCALARS:
            return self._unpack(_GGUF_SCALARS[vtype])
        if vtype == _GGUF_STRING:
            return self.string()
        if vtype == _GGUF_ARRAY:
            etype, count = self._unpack("<I"), self._unpack("<Q")
            if etype in _GGUF_SCALARS:
                self.pos += struct.calcsize(_GGUF_SCALARS[etype]) * count
            elif etype == _GGUF_STRING:
                for _ in range(count):
                    n = self._unpack("<Q")  # read first: `pos += unpack()` would use the stale pos
                    self.pos += n
            else:
                for _ in range(count):
                    self.value(etype)
            return ("array", count)
        raise ValueError(f"unknown GGUF value type {vtype}")


def _read_gguf_header(path: Path) -> tuple[dict, set[str]]:
    import mmap

    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        view = memoryview(mm)
        try:
            r = _GGUFHeader(view)
            if bytes(view[:4]) != b"GGUF":
                raise ValueError("not a GGUF file")
            r.pos = 4
            version = r._unpack("<I")
            if version < 2:
                raise ValueError(f"GGUF version {version} is too old")
            n_tensors, n_kv = r._unpack("<Q"), r._unpack("<Q")
            meta = {}
            for _ in range(n_kv):
                key = r.string()
                meta[key] = r.value(r._unpack("<I"))
            names = set()
            for _ in range(n_tensors):
                names.add(r.string())
                n_dims = r._unpack("<I")
                r.pos += 8 * n_dims + 4 + 8  # dims, type, offset
            return meta, names
        finally:
            view.release()


def shape_from_gguf(path: str | Path) -> ModelShape | None:
    path = Path(path)
    try:
        meta, tensors = _read_gguf_header(path)
    except (OSError, ValueError, struct.error):
        return None
    arch = meta.get("general.architecture")
    if not isinstance(arch, str):
        return None

    def get(key, default=None):
        value = meta.get(f"{arch}.{key}", default)
        return None if isinstance(value, tuple) else value  # per-layer arrays: unsupported

    tokens = meta.get("tokenizer.ggml.tokens")
    vocab = tokens[1] if isinstance(tokens, tuple) else get("vocab_size")
    hidden, layers, heads = get("embedding_length"), get("block_count"), get("attention.head_count")
    if not all(isinstance(v, int) and v > 0 for v in (hidden, layers, heads, vocab)):
        return None
    experts = get("expert_count", 0) or 0
    model_type = {"gemma3": "gemma3_text"}.get(arch, arch)
    return ModelShape(
        hidden_size=hidden,
        num_layers=layers,
        intermediate_size=(get("expert_feed_forward_length") if experts else None)
        or get("feed_forward_length") or 4 * hidden,
        vocab_size=vocab,
        num_heads=heads,
        num_kv_heads=get("attention.head_count_kv") or heads,
        head_dim=get("attention.key_length") or hidden // heads,
        # GGUF leaves out output.weight when the head reuses the embedding.
        tie_word_embeddings="output.weight" not in tensors,
        model_type=model_type,
        gated_mlp=any(name.endswith("ffn_gate.weight") for name in tensors) or bool(experts),
        num_experts=experts,
        experts_per_token=get("expert_used_count", 0) or 0,
        norms_per_layer=4 if model_type in _FOUR_NORMS else 2,
        qk_norm=any(name.endswith("attn_q_norm.weight") for name in tensors),
        # The GGUF is converted to a bf16 safetensors folder before training.
        checkpoint_dtype="bfloat16",
        source=str(path),
    )


def model_shape(model_source: str) -> ModelShape | None:
    """The shape of the model a run would train, or None when it cannot be known
    without downloading (a hub id that is not in the local cache)."""
    from backend.models.embedded_model import EMBEDDED_MODEL_ID, embedded_model_folder

    text = (model_source or "").strip()
    if text in ("", EMBEDDED_MODEL_ID, "embedded"):
        folder = embedded_model_folder()
        shape = _shape_from_config_file(folder / "config.json") if (folder / "config.json").exists() else None
        return shape or GEMMA3_270M
    path = Path(text).expanduser()
    if path.is_dir():
        return _shape_from_config_file(path / "config.json")
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            return None
        try:
            from backend.models.source import gguf_cache_folder

            converted = gguf_cache_folder(path) / "config.json"
            if converted.exists():
                return _shape_from_config_file(converted)
        except OSError:  # an unreadable cache: read the shape from the .gguf itself
            pass
        return shape_from_gguf(path)
    if text.startswith(("/", "./", "../", "~")) or text.endswith(".gguf") or text.count("/") > 1:
        return None
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(text, "config.json")
    except Exception:  # noqa: BLE001 - a malformed id raises a validation error; either way, unknown
        return None
    if isinstance(cached, str) and os.path.exists(cached):
        return _shape_from_config_file(Path(cached))
    return None


# ---------------------------------------------------------------------------
# The estimate
# ---------------------------------------------------------------------------
@dataclass
class MemoryEstimate:
    """Peak memory of a run in MB, broken into parts, and what to change if it does not fit.

    ``parts`` maps a short key (see ``PART_LABELS``) to MB, in order; the parts
    add up to ``total_mb``. ``total_mb`` is None when the model's shape is unknown.
    ``fits`` compares against ``FIT_FRACTION`` of ``device_mb`` and is None when
    either is unknown.
    """

    total_mb: float | None
    device_mb: float | None
    fits: bool | None
    parts: dict[str, float] = field(default_factory=dict)
    suggestions: list[str] = field(default_factory=list)
    savings: list[dict] = field(default_factory=list)
    device_kind: str = "cpu"
    compute_dtype: str = "float32"
    model: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def usable_mb(self) -> float | None:
        return None if self.device_mb is None else self.device_mb * FIT_FRACTION

    @property
    def part_labels(self) -> dict[str, str]:
        return {key: PART_LABELS.get(key, key) for key in self.parts}

    def to_dict(self) -> dict:
        return {
            "total_mb": _round(self.total_mb),
            "device_mb": _round(self.device_mb),
            "usable_mb": _round(self.usable_mb),
            "fits": self.fits,
            "parts": {k: _round(v) for k, v in self.parts.items()},
            "part_labels": self.part_labels,
            "suggestions": list(self.suggestions),
            "savings": [dict(s) for s in self.savings],
            "device_kind": self.device_kind,
            "compute_dtype": self.compute_dtype,
            "model": self.model,
            "notes": list(self.notes),
        }

    def summary_text(self) -> str:
        if self.total_mb is None:
            return "Peak memory: unknown. " + " ".join(self.notes)
        lines = [f"Peak memory ≈ {_fmt(self.total_mb)}"
                 + (f" of {_fmt(self.device_mb)} ({self.device_kind})" if self.device_mb else "")]
        if self.fits is True:
            lines[0] += ": fits."
        elif self.fits is False:
            lines[0] += f": does not fit (keep it under {_fmt(self.usable_mb)})."
        for key, mb in self.parts.items():
            lines.append(f"  {PART_LABELS.get(key, key)}: {_fmt(mb)}")
        if self.suggestions:
            lines.append("To make it fit:")
            lines.extend(f"  - {s}" for s in self.suggestions)
        lines.extend(self.notes)
        return "\n".join(lines)


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 1)


def _fmt(mb: float | None) -> str:
    if mb is None:
        return "?"
    return f"{mb / 1024:.1f} GB" if mb >= 1024 else f"{mb:.0f} MB"


@dataclass(frozen=True)
class _Device:
    kind: str
    memory_mb: float | None
    free_mb: float | None
    compute_dtype: str

    @property
    def is_cuda(self) -> bool:
        return self.kind == "cuda"


def _device(device: dict | None) -> _Device:
    device = device or {}
    kind = str(device.get("kind") or "cpu")
    if kind == "cuda":
        # backend.training.trainer_builders.choose_precision: bf16 where supported, else fp16.
        dtype = "bfloat16" if device.get("bf16") else "float16"
    else:
        # The worker trains in fp32 everywhere but CUDA (MPS included: it runs on the CPU).
        dtype = "float32"
    memory = device.get("memory_mb")
    free = device.get("free_mb")
    return _Device(kind, float(memory) if memory else None, float(free) if free else None, dtype)


def _lora_targets(shape: ModelShape, targets: str) -> list[tuple[str, int, int]]:
    linears = shape.layer_linears()
    text = (targets or "").strip()
    if text in ("", "all-linear"):
        return linears
    wanted = {t.strip() for t in text.split(",") if t.strip()}
    aliases = {"fc1": "up_proj", "fc2": "down_proj", "c_fc": "up_proj", "c_proj": "down_proj",
               "w1": "gate_proj", "w3": "up_proj", "w2": "down_proj", "wq": "q_proj", "wk": "k_proj",
               "wv": "v_proj", "wo": "o_proj", "dense": "o_proj"}
    wanted |= {aliases[w] for w in wanted if w in aliases}
    return [lin for lin in linears if lin[0] in wanted]


def _traits(method: str):
    from backend.methods import MemoryTraits, find_method

    spec = find_method(method)
    return spec.memory if spec else MemoryTraits()


def _score_head(cfg) -> bool:
    from backend.methods import find_method

    spec = find_method(getattr(cfg, "method", ""))
    return spec is not None and spec.model_head == "score"


def _layer_activation_elems(shape: ModelShape, targets: list[tuple[str, int, int]], lora_dropout: float,
                            dtype_bytes: int, quant: str) -> float:
    """Elements (of the compute dtype) saved for backward per token in one decoder layer.

    Counted tensor by tensor for a Llama-style layer with SDPA attention, keeping
    in mind that autograd saves only what a gradient needs and the base weights
    are frozen: a frozen linear (plain or 4-bit) keeps nothing, rotary keeps only
    cos/sin, and each RMSNorm keeps its fp32 input. SDPA keeps q, k, v and its
    output; a gated MLP keeps the gate, its activation and the up projection.
    Each LoRA adapter keeps its (dropped) input and, with dropout, a bool mask.
    bitsandbytes' 8-bit matmul, unlike the 4-bit one, keeps its input.
    """
    h, q, kv = shape.hidden_size, shape.q_dim, shape.kv_dim
    i = shape.intermediate_size * max(1, shape.experts_per_token)
    fp32 = 4 / dtype_bytes  # RMSNorm works in fp32 whatever the compute dtype
    elems = shape.norms_per_layer * h * fp32 + 2 * q + 2 * kv + (3 if shape.gated_mlp else 1) * i
    if shape.qk_norm:
        elems += (q + kv) * fp32
    # The tensors the linear layers read: the normed input of q/k/v, the attention
    # output (reshaped, a copy), the normed input of the MLP and the MLP product.
    inputs = {"q_proj": ("attn_in", h), "k_proj": ("attn_in", h), "v_proj": ("attn_in", h),
              "o_proj": ("attn_out", q), "gate_proj": ("mlp_in", h), "up_proj": ("mlp_in", h),
              "down_proj": ("mlp_mid", i)}
    kept: dict[str, int] = {}
    if quant == "8bit":
        kept.update(inputs.values())
    for name, fan_in, _fan_out in targets:
        if lora_dropout > 0:
            elems += fan_in * (1 + 1 / dtype_bytes)  # its own dropped copy and the mask
        else:
            key, size = inputs.get(name, (name, fan_in))
            kept[key] = size  # shared inputs are saved once
    return elems + sum(kept.values())


def _scores_trained_positions_only(cfg, dev: _Device) -> bool:
    """Whether TRL's tiled head projects only the positions the loss trains on. On a CPU that is
    ``score_trained_tokens_only`` (backend.training.trained_token_scoring), which ``speed_options:
    auto`` turns on there when left at its default. The GPU's Triton path does it too, but the
    GPU constants here were not measured with answer lengths, so it keeps the full tile."""
    if dev.is_cuda or not hasattr(cfg, "score_trained_tokens_only"):
        return False
    return bool(cfg.score_trained_tokens_only) or getattr(cfg, "speed_options", "as set") == "auto"


def _parts(cfg, shape: ModelShape, dev: _Device,
           answer_tokens: int | None = None) -> tuple[dict[str, float], list[str]]:
    notes: list[str] = []
    cb = DTYPE_BYTES[dev.compute_dtype]
    traits = _traits(getattr(cfg, "method", ""))
    quant = getattr(cfg, "quantization", "4bit")
    batch = max(1, int(cfg.per_device_train_batch_size))
    length = max(1, int(cfg.max_length))
    checkpointing = bool(getattr(cfg, "gradient_checkpointing", True))
    skip = traits.reference_skip_setting
    reference_pass = traits.reference_pass and not (skip and bool(getattr(cfg, skip, False)))
    lora_dropout = float(getattr(cfg, "lora_dropout", 0.0) or 0.0)
    r = max(1, int(cfg.lora_r))

    # --- base weights --------------------------------------------------------
    unquantized = shape.embedding_params + shape.norm_params + shape.lm_head_params
    if quant == "4bit":
        weights = shape.linear_params * NF4_BYTES_PER_PARAM + unquantized * cb
    elif quant == "8bit":
        weights = shape.linear_params * INT8_BYTES_PER_PARAM + unquantized * cb
    else:
        weights = shape.total_params * cb

    # --- LoRA ----------------------------------------------------------------
    targets = _lora_targets(shape, cfg.lora_target_modules)
    if not targets:
        notes.append("None of the LoRA target modules matched this model's layer names; "
                     "the estimate assumes all-linear.")
        targets = shape.layer_linears()
    lora_params = shape.num_layers * sum(r * (fan_in + fan_out) for _n, fan_in, fan_out in targets)
    # Some TRL trainers cast a quantized model's adapter to bf16; otherwise peft keeps adapters in fp32.
    lora_bytes = 2 if quant in ("4bit", "8bit") and traits.adapter_half_when_quantized else 4

    # --- activations -----------------------------------------------------------
    tokens = batch * traits.sequences_per_example * length
    per_token = _layer_activation_elems(shape, targets, lora_dropout, cb, quant) + 2 * r * len(targets)
    layer = per_token * cb * tokens
    residual = shape.hidden_size * cb * tokens
    if checkpointing:
        # Each layer's input is kept; backward recomputes one layer and holds its
        # gradients next to it.
        saved = shape.num_layers * residual + 2 * layer
    else:
        saved = shape.num_layers * layer + layer
    # Embedding output, final norm and their gradients; bitsandbytes dequantizes
    # one weight at a time (forward and backward) into the compute dtype.
    saved += 4 * residual
    if quant in ("4bit", "8bit"):
        biggest = max(fan_in * fan_out for _n, fan_in, fan_out in shape.layer_linears())
        saved += 2 * biggest * cb

    # --- LM head ---------------------------------------------------------------
    # The head's positions: every token, or only the answers' where the head skips the rest.
    trained_only = bool(answer_tokens) and not traits.full_logits and _scores_trained_positions_only(cfg, dev)
    per_sequence = min(length, int(answer_tokens)) if trained_only else length
    scored = batch * traits.sequences_per_example * per_sequence
    logits = _head_bytes(traits.full_logits, tokens, shape, cb, dev, training=True, scored_tokens=scored)
    if _score_head(cfg):
        logits = tokens * shape.hidden_size * 4  # one output per sequence: no (tokens x vocabulary) logits

    # --- reference pass ----------------------------------------------------------
    reference = 0.0
    if reference_pass:
        # No-grad forward over the same 2 x batch sequences before the policy's:
        # one layer's buffers and the head's forward tiles at a time. It only
        # raises the peak where that outgrows the policy's transient buffers.
        ref_transient = layer + (logits * 0.6)
        policy_transient = (2 * layer if checkpointing else layer) + logits
        reference = max(0.0, ref_transient - policy_transient)
        reference += tokens * 4 * 2  # the reference log-probs kept for the loss

    # --- evaluation ------------------------------------------------------------
    # Held-out batches are twice the training batch unless set (trainer_builders.
    # eval_batch_size): no activations are kept for a backward pass, but full
    # logits grow with the batch and can outgrow the training step's peak. Only the
    # excess over the training step's transient memory is counted.
    evaluation = 0.0
    if float(getattr(cfg, "eval_fraction", 0.0) or 0.0) > 0:
        eval_batch = int(getattr(cfg, "eval_batch_size", 0) or 0) or 2 * batch
        eval_tokens = eval_batch * traits.sequences_per_example * length
        eval_scored = eval_batch * traits.sequences_per_example * per_sequence
        eval_peak = ((per_token + 3 * shape.hidden_size) * cb * eval_tokens
                     + _head_bytes(traits.full_logits, eval_tokens, shape, cb, dev, training=False,
                                   scored_tokens=eval_scored))
        evaluation = max(0.0, eval_peak - (saved + logits + reference))
        if not dev.is_cuda:
            evaluation *= 1 + CPU_ALLOCATOR_SLACK

    parts: dict[str, float] = {
        "weights": weights / MB,
        "lora": lora_params * lora_bytes / MB,
        "gradients": lora_params * lora_bytes / MB,
        "optimizer": 2 * lora_params * lora_bytes / MB,
        "activations": saved / MB,
        "logits": logits / MB,
    }
    if traits.reference_pass:
        parts["reference"] = reference / MB
    parts["evaluation"] = evaluation / MB
    if traits.generated_tokens_setting:
        parts["sampling"] = _sampling_bytes(cfg, traits, shape, cb) / MB
    dynamic = sum(parts.values())
    if dev.is_cuda:
        parts["overhead"] = CUDA_CONTEXT_MB + CUDA_ALLOCATOR_SLACK * dynamic
    else:
        slack = CPU_ALLOCATOR_SLACK * (parts["activations"] + parts["logits"])
        retained = CPU_HEAP_RETAINED * parts["weights"]
        parts["tokenizer"] = shape.vocab_size * TOKENIZER_BYTES_PER_TOKEN / MB
        parts["overhead"] = CPU_PROCESS_BASELINE_MB + retained + slack
        # While loading, the safetensors file is memory-mapped and its pages count
        # as resident next to the converted weights; when that is the higher peak,
        # the difference is shown as its own part.
        mapped = shape.total_params * DTYPE_BYTES.get(shape.checkpoint_dtype, 2) / MB
        loaded = parts["weights"] + parts["tokenizer"] + CPU_PROCESS_BASELINE_MB + retained
        training = sum(parts.values())
        parts["loading"] = max(0.0, loaded + mapped - training)
    return parts, notes


def _sampling_bytes(cfg, traits, shape: ModelShape, cb: int) -> float:
    """What sampling adds for a method that generates while it trains: the KV cache of one
    generation batch (the training batch times the accumulation steps, at least one whole
    group of completions per prompt) over prompt plus completion, the sampling step's
    logits, and the fp32 log-probs over the vocabulary of each micro-batch's completion
    tokens (the policy's, and the reference's or the old policy's when they are kept)."""
    group = max(1, int(getattr(cfg, traits.group_size_setting, 1) or 1)) if traits.group_size_setting else 1
    completion = max(1, int(getattr(cfg, traits.generated_tokens_setting, 1) or 1))
    batch = max(1, int(cfg.per_device_train_batch_size))
    generation_batch = max(batch * max(1, int(getattr(cfg, "gradient_accumulation_steps", 1) or 1)), group)
    length = max(1, int(cfg.max_length))  # prompt plus completion; validation keeps them within it
    kv_cache = generation_batch * length * shape.num_layers * 2 * shape.kv_dim * cb
    sampling_logits = generation_batch * shape.vocab_size * 4 * 2
    log_prob_passes = 1 + (float(getattr(cfg, "beta", 0.0) or 0.0) > 0) + (int(getattr(cfg, "num_iterations", 1)
                                                                                or 1) > 1)
    completion_logits = batch * completion * shape.vocab_size * 4 * min(2, log_prob_passes)
    return kv_cache + sampling_logits + completion_logits


def _head_bytes(full_logits: bool, tokens: int, shape: ModelShape, cb: int, dev: _Device,
                training: bool, scored_tokens: int | None = None) -> float:
    """The LM head's transient memory for ``tokens`` scored tokens. A method with
    ``full_logits`` builds the whole (tokens x vocabulary) logits, so this term grows with
    length times vocabulary and is the largest one for Gemma's 262k vocabulary at long
    lengths; the others score through TRL's tiled head, whose cost stops growing at one tile,
    over ``scored_tokens`` (fewer than ``tokens`` when only the trained positions are projected)."""
    if full_logits:
        # Training: the logits, the chosen half made contiguous, its log-softmax and the
        # logits' gradient; evaluation: the forward copies only.
        return tokens * shape.vocab_size * cb * (FULL_LOGITS_COPIES if training else EVAL_FULL_LOGITS_COPIES)
    scored = tokens if scored_tokens is None else scored_tokens
    tile = min(scored, FUSED_HEAD_TOKEN_CHUNK) * min(shape.vocab_size, FUSED_HEAD_VOCAB_CHUNK)
    if dev.is_cuda:
        head = tile * cb * (FUSED_HEAD_TILES_TRITON if training else 1.0)
    else:
        head = tile * 4 * (FUSED_HEAD_FP32_TILES_TORCH if training else FUSED_HEAD_FP32_TILES_TORCH / 2)
    if training:
        head += tokens * shape.hidden_size * 4  # the fp32 gradient of the hidden states
    return head


# Data a method that can train on whole sequences (``completion_only_loss``) trains on end to end:
# no prompt is set apart, so every token is a trained position.
WHOLE_SEQUENCE_FORMATS = frozenset({"messages", "sharegpt", "text"})


def trained_answer_tokens(cfg, report) -> int | None:
    """The longest answer the loss of ``cfg`` trains on, from a data report
    (``backend.data.report.DataReport``) that measured its rows; None when unknown or when
    every token is trained (whole conversations or plain text, packing, loss on everything)."""
    lengths = getattr(report, "example_lengths", None)
    if not lengths:
        return None
    whole = getattr(report, "format", "") in WHOLE_SEQUENCE_FORMATS
    return _answer_if_trained_alone(cfg, max(answer for _prompt, answer in lengths), whole)


def trained_answer_tokens_of_rows(cfg, columns, longest_answer: int) -> int | None:
    """The same for the worker's normalised rows (their ``columns``) and the longest answer the
    long-prompt step measured with the model's tokenizer: rows without a ``prompt`` column
    (conversations, plain text) are trained whole by a method that can."""
    return _answer_if_trained_alone(cfg, longest_answer, "prompt" not in set(columns))


def _answer_if_trained_alone(cfg, longest_answer: int, whole_sequences: bool) -> int | None:
    if longest_answer <= 0:
        return None
    if hasattr(cfg, "completion_only_loss") and (
            not cfg.completion_only_loss or getattr(cfg, "packing", False) or whole_sequences):
        return None
    return longest_answer


def estimate_memory(config, device: dict | None = None, shape: ModelShape | None = None, *,
                    answer_tokens: int | None = None) -> MemoryEstimate:
    """Estimate the peak memory of training ``config`` (a ``backend.runs.config``
    dataclass) on ``device`` (a ``backend.core.device_info.describe_device()`` dict).

    ``shape`` defaults to the shape of ``config.model`` (see :func:`model_shape`).
    ``answer_tokens``: the longest answer (completion, chosen or rejected) in tokens, when the
    data is known; a head that projects only trained positions then counts those, otherwise
    every position up to Max length.
    """
    return _estimate(config, device, shape, with_suggestions=True, answer_tokens=answer_tokens)


def _estimate(config, device, shape, with_suggestions: bool, answer_tokens: int | None = None) -> MemoryEstimate:
    dev = _device(device)
    if shape is None:
        shape = model_shape(getattr(config, "model", ""))
    if shape is None:
        return MemoryEstimate(
            total_mb=None, device_mb=dev.memory_mb, fits=None, device_kind=dev.kind,
            compute_dtype=dev.compute_dtype, model=getattr(config, "model", ""),
            notes=[("The model's size is unknown until it is downloaded or its config.json is in the "
                    "local Hugging Face cache.")],
        )
    parts, notes = _parts(config, shape, dev, answer_tokens)
    parts = {k: v for k, v in parts.items() if v > 0 or k in ("weights", "activations")}
    total = sum(parts.values())
    fits = None if dev.memory_mb is None else total <= dev.memory_mb * FIT_FRACTION
    if device is None:
        notes.append("Device unknown: assumed fp32 training on the CPU.")
    elif fits and dev.free_mb is not None and dev.free_mb < total:
        notes.append(f"Only {_fmt(dev.free_mb)} is free right now; close other programs first.")
    est = MemoryEstimate(
        total_mb=total, device_mb=dev.memory_mb, fits=fits, parts=parts, device_kind=dev.kind,
        compute_dtype=dev.compute_dtype, model=shape.source or getattr(config, "model", ""), notes=notes,
    )
    if with_suggestions and fits is False:
        est.savings = _suggestions(config, device, shape, total, dev.memory_mb * FIT_FRACTION, answer_tokens)
        est.suggestions = [s["text"] for s in est.savings]
    return est


def _suggestions(cfg, device, shape, total: float, usable: float, answer_tokens: int | None = None) -> list[dict]:
    """Each change that lowers the peak, with its saving from re-running the estimate."""
    out: list[dict] = []

    def _total(config, device, shape) -> float:
        return _estimate(config, device, shape, with_suggestions=False, answer_tokens=answer_tokens).total_mb

    def consider(changes: dict, text: str, caveat: str = ""):
        new_total = _total(dataclasses.replace(cfg, **changes), device, shape)
        saving = total - new_total
        if saving >= 1.0:
            out.append({"changes": changes, "saving_mb": round(saving, 1), "total_mb": round(new_total, 1),
                        "text": f"{text} (saves ≈ {_fmt(saving)}{caveat})"})

    if not cfg.gradient_checkpointing:
        consider({"gradient_checkpointing": True}, "turn on gradient checkpointing")
    skip = _traits(getattr(cfg, "method", "")).reference_skip_setting
    if skip and not getattr(cfg, skip, False):
        consider({skip: True}, "precompute reference log-probs")
    batch, accum = int(cfg.per_device_train_batch_size), int(cfg.gradient_accumulation_steps)
    if batch > 1:
        # Divisors keep the effective batch exactly the same.
        divisors = [d for d in range(batch - 1, 0, -1) if batch % d == 0]
        chosen = next((d for d in divisors
                       if _total(dataclasses.replace(cfg, per_device_train_batch_size=d,
                                                     gradient_accumulation_steps=accum * batch // d),
                                 device, shape) <= usable), 1)
        new_accum = accum * batch // chosen
        consider({"per_device_train_batch_size": chosen, "gradient_accumulation_steps": new_accum},
                 f"lower batch size from {batch} to {chosen} and raise gradient accumulation from "
                 f"{accum} to {new_accum} (same effective batch)")
    if cfg.quantization != "4bit":
        consider({"quantization": "4bit"}, "use 4-bit quantization")
    length = int(cfg.max_length)
    if length > 128:
        candidates = []
        new = length
        while new > 128:
            new = max(128, new // 2)
            candidates.append(new)
        chosen = next((c for c in candidates
                       if _total(dataclasses.replace(cfg, max_length=c), device, shape) <= usable),
                      candidates[-1])
        consider({"max_length": chosen}, f"shorten max length from {length} to {chosen}",
                 "; longer examples get truncated")
    out.sort(key=lambda s: -s["saving_mb"])
    combined: dict = {}
    for s in out:
        combined.update(s["changes"])
    floor = _total(dataclasses.replace(cfg, **combined), device, shape)
    if floor > usable:
        lead = f"even with all of these it needs ≈ {_fmt(floor)}" if out else f"it needs ≈ {_fmt(floor)}"
        out.append({"changes": {}, "saving_mb": 0.0, "total_mb": round(floor, 1),
                    "text": f"{lead}: pick a smaller model or a machine with more memory"})
    return out


# ---------------------------------------------------------------------------
# Estimate vs reality
# ---------------------------------------------------------------------------
MEMORY_RECORD_FILE = "memory.json"


def comparable_estimate_mb(estimate_dict: dict, memory_kind: str) -> float | None:
    """The part of an estimate that a measurement of ``memory_kind`` can see.

    ``torch.cuda.max_memory_reserved`` ("gpu") excludes the CUDA context, so it is
    compared with the total less the context.
    """
    total = estimate_dict.get("total_mb")
    if total is None:
        return None
    if memory_kind == "gpu" and estimate_dict.get("device_kind") == "cuda":
        return max(0.0, total - CUDA_CONTEXT_MB)
    return total


def record_measured_peak(run_dir, estimate_dict: dict | None, measured_peak_mb: float | None,
                         memory_kind: str) -> Path:
    """Write ``memory.json`` in the run folder: the estimate, the measured peak and
    their ratio (measured / estimated), so the estimator can be checked against
    real runs. Written atomically: a crash never leaves half a file."""
    run_dir = Path(run_dir)
    estimate_dict = dict(estimate_dict or {})
    comparable = comparable_estimate_mb(estimate_dict, memory_kind) if estimate_dict else None
    ratio = (measured_peak_mb / comparable) if measured_peak_mb and comparable else None
    record = {
        "estimate": estimate_dict,
        "estimated_mb": _round(comparable),
        "measured_peak_mb": _round(measured_peak_mb),
        "memory_kind": memory_kind,  # "gpu": torch.cuda.max_memory_reserved; "rss": peak resident set size
        "ratio_measured_to_estimated": None if ratio is None else round(ratio, 3),
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    target = run_dir / MEMORY_RECORD_FILE
    write_json_atomic(target, record)
    return target


__all__ = [
    "GEMMA3_270M", "PART_LABELS", "MemoryEstimate", "ModelShape", "comparable_estimate_mb", "estimate_memory",
    "model_shape", "record_measured_peak", "shape_from_config", "shape_from_gguf",
]
