"""Generation speed: the studio's engine against plain ``generate`` and bare llama.cpp, then the Compare worker's timings.

First, in this one process and interleaved round by round (the machine may be
shared, so only side-by-side figures mean anything), on the same loaded
weights: tokens/s of the studio's engine for one stream and for a batch of 8
prompts, plain transformers ``generate`` for the same, and the memory-bandwidth
limit (the bytes of weights one decoding step reads against the machine's
measured copy speed). Where llama-cpp-python is installed, the same for the
engine's llama.cpp backend against bare llama.cpp on the same GGUF file: its
high-level ``Llama.generate`` for one stream, and for 8 streams the plainest
batched loop of its low-level API (one context, 8 sequences, argmax in numpy).
Then the worker driven through GenerationSession exactly as the window drives
it: load, streaming both sides, scoring, batch, cancel, close.

    python bench/bench_generation.py                      # embedded Gemma 3 270M, best precision
    python bench/bench_generation.py --speed-only         # only the side-by-side table
    python bench/bench_generation.py --dtype fp32         # the training precision on a CPU
    python bench/bench_generation.py --model tiny         # seconds, for a smoke check
    python bench/bench_generation.py --run-dir RUN        # a real run's adapter
    python bench/bench_generation.py --backend transformers   # the worker without llama.cpp
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PROMPTS = [
    "Question: What is the capital of France?\nAnswer:",
    "Question: Why is the sky blue?\nAnswer:",
    "Question: How do I boil an egg?\nAnswer:",
    "Question: What is a prime number?\nAnswer:",
    "Question: Name three colours.\nAnswer:",
    "Question: What does a bee make?\nAnswer:",
    "Question: How many legs has a spider?\nAnswer:",
    "Question: What is water made of?\nAnswer:",
]


def copy_bandwidth_bytes_per_s(device) -> float:
    """Best of five copies of 256 MB: each reads and writes every byte once."""
    import torch

    src = torch.ones(64 * 2**20, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(5):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        dst.copy_(src)
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * src.numel() * src.element_size() / best


def weight_bytes(model) -> int:
    """Bytes one decoding step reads: every parameter once (a tied embedding is the
    output layer and is counted once; packed 4-bit weights count as their bytes)."""
    return sum(p.numel() * p.element_size() for p in model.parameters())


def speed_table(model: str, quantization: str, dtype: str, tokens: int, rounds: int, llama_only: bool = False) -> dict:
    import torch

    from backend.models.adapter_loading import load_model, resolve_load_spec
    from backend.generation.engine import GenerationEngine
    from backend.generation.protocol import SamplingSettings
    from backend.data.prompt_rendering import prompt_token_ids
    from backend.models.inference_precision import apply_decode_precision

    loaded = load_model(resolve_load_spec(model=model, quantization=quantization), log=lambda m: None)
    label = apply_decode_precision(loaded, dtype)
    model, tokenizer = loaded.model, loaded.tokenizer
    engine = GenerationEngine(loaded)
    engine.on_backend_note = lambda m: None
    forced = {"greedy": True, "max_new_tokens": tokens, "min_new_tokens": tokens, "stop_strings": []}
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def ours(backend):
        sampling = SamplingSettings.from_dict({**forced, "backend": backend})

        def run(prompts):
            start = time.perf_counter()
            answers = engine.generate(prompts, "base", sampling, threading.Event(), on_token=lambda a, t: None)
            assert all(a["base"].backend == backend for a in answers)
            return sum(len(a["base"].ids) for a in answers) / (time.perf_counter() - start)
        return run

    def plain(prompts):
        tokenizer.padding_side = "left"
        inputs = tokenizer(prompts, return_tensors="pt", padding=True).to(model.device)
        start = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(**inputs, do_sample=False, max_new_tokens=tokens, min_new_tokens=tokens,
                                 pad_token_id=pad)
        return (out.shape[1] - inputs["input_ids"].shape[1]) * len(prompts) / (time.perf_counter() - start)

    cases = {"engine_1": (ours("transformers"), PROMPTS[:1]), "plain_1": (plain, PROMPTS[:1]),
             "engine_8": (ours("transformers"), PROMPTS), "plain_8": (plain, PROMPTS)}
    extra: dict[str, float | str] = {}
    if engine.generation_backend("llama.cpp") == "llama.cpp":
        runtime = engine._llama
        bare = BareLlamaCpp(runtime.model_path, runtime.n_threads, tokens,
                            {p: prompt_token_ids(tokenizer, p) for p in PROMPTS})
        extra["llama_gguf"] = runtime.model_path.name
        cases.update({"llama_engine_1": (ours("llama.cpp"), PROMPTS[:1]), "llama_bare_1": (bare.one, PROMPTS[:1]),
                      "llama_engine_8": (ours("llama.cpp"), PROMPTS), "llama_bare_8": (bare.batch, PROMPTS)})
    else:
        extra["llama_cpp_not_measured"] = engine.backend_note
    if llama_only:
        cases = {name: case for name, case in cases.items() if name.startswith("llama_")}
    for run, prompts in cases.values():  # warm-up: first calls pay for allocations and kernel picks
        run(prompts[:1])
    rates: dict[str, list[float]] = {name: [] for name in cases}
    for i in range(rounds):
        for name, (run, prompts) in cases.items():
            rates[name].append(run(prompts if i % 2 == 0 else prompts[::-1]))
            print(f"round {i + 1}/{rounds} {name}: {rates[name][-1]:.1f} tok/s", file=sys.stderr, flush=True)
    r = {name: statistics.median(values) for name, values in rates.items()}
    bandwidth = copy_bandwidth_bytes_per_s(engine.device)
    per_token = weight_bytes(model)
    limit = bandwidth / per_token
    results = {} if llama_only else {
        "speed_precision": f"{loaded.precision.device} {label} quantization={quantization}",
        "engine_1_stream_tok_s": r["engine_1"], "plain_generate_1_stream_tok_s": r["plain_1"],
        "engine_batch8_tok_s": r["engine_8"], "plain_generate_batch8_tok_s": r["plain_8"],
        "weights_read_per_token_MB": per_token / 1e6, "copy_bandwidth_GB_s": bandwidth / 1e9,
        "bandwidth_limit_1_stream_tok_s": limit,
        "ratio_engine_vs_plain_1_stream": r["engine_1"] / r["plain_1"],
        "ratio_engine_vs_plain_batch8": r["engine_8"] / r["plain_8"],
        "ratio_engine_batch8_vs_1_stream": r["engine_8"] / r["engine_1"],
        "ratio_engine_1_stream_vs_bandwidth_limit": r["engine_1"] / limit,
    }
    results.update(extra)
    if "llama_engine_1" in r:
        gguf_bytes = engine._llama.model_path.stat().st_size
        results.update({
            "llama_engine_1_stream_tok_s": r["llama_engine_1"], "llama_bare_1_stream_tok_s": r["llama_bare_1"],
            "llama_engine_batch8_tok_s": r["llama_engine_8"], "llama_bare_batch8_tok_s": r["llama_bare_8"],
            "llama_gguf_MB": gguf_bytes / 1e6,
            "llama_bandwidth_limit_1_stream_tok_s": bandwidth / gguf_bytes,
            "ratio_llama_engine_vs_bare_1_stream": r["llama_engine_1"] / r["llama_bare_1"],
            "ratio_llama_engine_vs_bare_batch8": r["llama_engine_8"] / r["llama_bare_8"],
            "ratio_llama_engine_batch8_vs_1_stream": r["llama_engine_8"] / r["llama_engine_1"],
        })
        if "engine_1" in r:
            results["ratio_llama_engine_vs_transformers_engine_1_stream"] = r["llama_engine_1"] / r["engine_1"]
        bare.close()
    engine.close()
    return results


class BareLlamaCpp:
    """llama.cpp as a user would drive it by hand on the same GGUF file and prompt tokens."""

    def __init__(self, model_path, n_threads: int, tokens: int, prompt_ids: dict[str, list[int]]):
        from llama_cpp import Llama

        self.tokens, self.n_threads = tokens, n_threads
        self.prompt_ids = prompt_ids
        self.llm = Llama(model_path=str(model_path), n_ctx=512, n_threads=n_threads, n_threads_batch=n_threads,
                         verbose=False)
        self._batch_ctx = None

    def one(self, prompts: list[str]) -> float:
        ids = self.prompt_ids[prompts[0]]
        start = time.perf_counter()
        n = 0
        self.llm.reset()
        for _ in self.llm.generate(ids, top_k=1, temp=0.0, reset=True):
            n += 1
            if n >= self.tokens:
                break
        return n / (time.perf_counter() - start)

    def batch(self, prompts: list[str]) -> float:
        import ctypes

        import llama_cpp
        import numpy as np

        rows = [self.prompt_ids[p] for p in prompts]
        n_ctx = sum(len(r) for r in rows) + len(rows) * (self.tokens + 1)
        if self._batch_ctx is None or self._batch_ctx[1] < n_ctx or self._batch_ctx[2] < len(rows):
            params = llama_cpp.llama_context_default_params()
            params.n_ctx = params.n_batch = n_ctx
            params.n_seq_max = params.n_outputs_max = len(rows)
            params.kv_unified = True
            params.n_threads = params.n_threads_batch = self.n_threads
            self._batch_ctx = (llama_cpp.llama_init_from_model(self.llm.model, params), n_ctx, len(rows))
        ctx = self._batch_ctx[0]
        start = time.perf_counter()
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
        batch = llama_cpp.llama_batch_init(n_ctx, 0, 1)
        vocab = self.llm.n_vocab()
        pending, pos, made = [list(r) for r in rows], [0] * len(rows), 0
        for _ in range(self.tokens):
            n, last = 0, []
            for s, toks in enumerate(pending):
                for k, t in enumerate(toks):
                    batch.token[n], batch.pos[n], batch.n_seq_id[n] = t, pos[s] + k, 1
                    batch.seq_id[n][0], batch.logits[n] = s, k == len(toks) - 1
                    n += 1
                pos[s] += len(toks)
                last.append(n - 1)
            batch.n_tokens = n
            llama_cpp.llama_decode(ctx, batch)
            for s, i in enumerate(last):
                row = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, i), shape=(vocab,))
                pending[s] = [int(row.argmax())]
                made += 1
        llama_cpp.llama_batch_free(batch)
        return made / (time.perf_counter() - start)

    def close(self) -> None:
        import llama_cpp

        if self._batch_ctx is not None:
            llama_cpp.llama_free(self._batch_ctx[0])
        self.llm.close()


def live(session, request_id: str, timeout: float = 600.0):
    """The request's events as they arrive (collect() returns them only at the end)."""
    from backend.generation.protocol import RequestFinished, WorkerExited

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        event = session.read_event(1.0)
        if event is None or (event.request_id != request_id and not isinstance(event, WorkerExited)):
            continue
        yield event
        if isinstance(event, (RequestFinished, WorkerExited)):
            return
    raise TimeoutError(request_id)


def make_adapter(model_path: str, folder: Path) -> Path:
    """An adapter with random (not zero) LoRA weights, so the aligned side really differs."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear",
                                                  init_lora_weights=False, task_type="CAUSAL_LM"))
    peft_model.save_pretrained(folder)
    return folder


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="", help="'tiny', a model folder, or empty for the embedded Gemma")
    parser.add_argument("--run-dir", default="", help="compare this run's adapter instead of a random one")
    parser.add_argument("--quantization", default="", choices=("", "4bit", "8bit", "none"),
                        help="default: none on a CPU (bf16 is faster there than 4-bit), 4bit on a GPU")
    parser.add_argument("--dtype", default="auto", choices=("auto", "fp32", "bf16"),
                        help="what unquantized weights decode in (the worker's choice, see inference_precision)")
    parser.add_argument("--tokens", type=int, default=32, help="new tokens per answer")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the side-by-side table")
    parser.add_argument("--speed-only", action="store_true", help="only the side-by-side speed table")
    parser.add_argument("--llama-only", action="store_true",
                        help="with --speed-only: only the llama.cpp rows (the engine on llama.cpp against bare llama.cpp)")
    parser.add_argument("--backend", default="auto", choices=("auto", "transformers", "llama.cpp"),
                        help="what the worker prepares at load and generates with")
    args = parser.parse_args()
    if not args.quantization:
        import torch

        args.quantization = "4bit" if torch.cuda.is_available() else "none"
    os.environ["ALIGNSTUDIO_GENERATION_DTYPE"] = args.dtype  # the worker below inherits it
    os.environ["ALIGNSTUDIO_GENERATION_BACKEND"] = args.backend

    from backend.generation.client import GenerationSession
    from backend.generation.protocol import (BatchSummaryReady, GenerationDone, RequestFinished, ResponsesScored,
                                             TokenStreamed)
    from backend.models.source import local_model_folder, resolve_model_source

    work = Path(tempfile.mkdtemp(prefix="bench-generation-"))
    results: dict[str, float | str] = {}
    if args.run_dir:
        start_kwargs = dict(run_dir=args.run_dir, quantization=args.quantization)
        from backend.models.adapter_loading import resolve_load_spec

        model_path = local_model_folder(resolve_model_source(resolve_load_spec(run_dir=args.run_dir).model))
    else:
        if args.model == "tiny":
            from backend.testing.tiny_model import build_tiny_model

            model_path = str(build_tiny_model(work / "tiny"))
        else:
            model_path = local_model_folder(resolve_model_source(args.model))
    # The model as the user names it: the embedded model's GGUF is what llama.cpp runs.
    speed_model = model_path if args.model == "tiny" or args.run_dir else args.model
    results.update(speed_table(speed_model, args.quantization, args.dtype, args.tokens, args.rounds,
                                args.llama_only and args.speed_only))
    if args.speed_only:
        return show(results)
    if not args.run_dir:
        adapter = make_adapter(model_path, work / "adapter")
        start_kwargs = dict(adapter_dir=str(adapter), model=model_path, quantization=args.quantization)

    t0 = time.perf_counter()
    session = GenerationSession.start(log_path=work / "generation.log", **start_kwargs)
    ready = session.wait_ready(timeout=600)
    results["start_to_ready_s"] = time.perf_counter() - t0
    results["load_s"] = ready.load_seconds
    results["device"] = f"{ready.device.get('kind')} {ready.device.get('name', '')} {ready.device.get('precision')}"
    results["worker_backend"] = ready.generation_backend + (f" ({ready.backend_note})" if ready.backend_note else "")
    forced = {"greedy": True, "max_new_tokens": args.tokens, "min_new_tokens": args.tokens, "backend": args.backend}

    session.collect(session.generate(PROMPTS[0], side="both", score=False,
                                     sampling={"greedy": True, "max_new_tokens": 4}))  # warm-up

    both_rates, first_token = [], []
    for prompt in PROMPTS[:4]:
        sent = time.perf_counter()
        rid = session.generate(prompt, side="both", score=False, sampling=forced)
        first = None
        for event in live(session, rid):
            if isinstance(event, TokenStreamed) and first is None:
                first = time.perf_counter() - sent
            if isinstance(event, GenerationDone):
                both_rates.append(event.n_tokens / event.seconds)
        first_token.append(first)
    results["both_sides_tokens_per_s_per_side"] = statistics.median(both_rates)
    results["first_token_s"] = statistics.median(first_token)

    base_rates = []
    for prompt in PROMPTS[:4]:
        for event in session.collect(session.generate(prompt, side="base", score=False, sampling=forced)):
            if isinstance(event, GenerationDone):
                base_rates.append(event.n_tokens / event.seconds)
    results["base_only_tokens_per_s"] = statistics.median(base_rates)

    sent = time.perf_counter()
    events = session.collect(session.score(PROMPTS[0], [" Paris.", " The capital of France is Paris, a city."]))
    assert any(isinstance(e, ResponsesScored) for e in events)
    results["score_two_responses_s"] = time.perf_counter() - sent

    sent = time.perf_counter()
    events = list(live(session, session.batch_compare(prompts=PROMPTS, sampling={"greedy": True,
                                                                                "max_new_tokens": args.tokens}),
                       timeout=3600))
    results["batch_8_prompts_s"] = time.perf_counter() - sent
    summary = next(e for e in events if isinstance(e, BatchSummaryReady)).summary
    results["batch_rows"] = summary.n_rows

    long = {"greedy": True, "max_new_tokens": 2000, "min_new_tokens": 2000}
    rid = session.generate(PROMPTS[1], side="both", score=False, sampling=long)
    cancel_sent = None
    for event in live(session, rid):
        if isinstance(event, TokenStreamed) and event.index >= 8 and cancel_sent is None:
            session.cancel(rid)
            cancel_sent = time.perf_counter()
        if isinstance(event, RequestFinished):
            results["cancel_to_finished_s"] = time.perf_counter() - cancel_sent

    sent = time.perf_counter()
    session.close()
    results["close_s"] = time.perf_counter() - sent

    same_backend = "llama_engine_1_stream_tok_s" if ready.generation_backend == "llama.cpp" else \
        "engine_1_stream_tok_s"
    if same_backend in results:
        results["worker_base_only_vs_engine_1_stream"] = results["base_only_tokens_per_s"] / results[same_backend]
    return show(results)


def show(results: dict) -> int:
    for key, value in results.items():
        print(f"{key:42s} {value:.3f}" if isinstance(value, float) else f"{key:42s} {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
