"""Compare worker timings: load, streaming both sides, scoring, batch, cancel, close.

The worker is driven through GenerationSession exactly as the window drives it.
As a yardstick, a plain transformers script (no studio code) generates the same
number of tokens with ``model.generate`` on the same base model in a fresh
process; the worker's base-only tokens/s against it shows what the lockstep
loop and the adapter switching cost.

    python bench/bench_generation.py                      # embedded Gemma 3 270M, 4-bit
    python bench/bench_generation.py --model tiny         # seconds, for a smoke check
    python bench/bench_generation.py --run-dir RUN        # a real run's adapter
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import textwrap
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

# Written out in full as a user of transformers would: no studio code.
PLAIN_SCRIPT = textwrap.dedent(r'''
    import json, sys, time
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
    p = json.loads(sys.argv[1])
    tok = AutoTokenizer.from_pretrained(p["model"])
    dtype = torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else (
        torch.float16 if torch.cuda.is_available() else torch.float32)
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=dtype) if p["quantization"] == "4bit" else None
    model = AutoModelForCausalLM.from_pretrained(p["model"], dtype=dtype, quantization_config=quant,
                                                 device_map={"": 0} if torch.cuda.is_available() else "cpu")
    rates = []
    for prompt in p["prompts"]:
        inputs = tok(prompt, return_tensors="pt").to(model.device)
        start = time.perf_counter()
        out = model.generate(**inputs, do_sample=False, max_new_tokens=p["tokens"], min_new_tokens=p["tokens"],
                             pad_token_id=tok.pad_token_id or tok.eos_token_id)
        rates.append((out.shape[1] - inputs["input_ids"].shape[1]) / (time.perf_counter() - start))
    print(json.dumps({"tokens_per_second": sorted(rates)[len(rates) // 2]}))
''')


def live(session, request_id: str, timeout: float = 600.0):
    """The request's events as they arrive (collect() returns them only at the end)."""
    from backend.generation_protocol import RequestFinished, WorkerExited

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
    parser.add_argument("--quantization", default="4bit", choices=("4bit", "8bit", "none"))
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per answer")
    parser.add_argument("--no-plain", action="store_true", help="skip the plain transformers yardstick")
    args = parser.parse_args()

    from backend.generation_client import GenerationSession
    from backend.generation_protocol import (BatchSummaryReady, GenerationDone, RequestFinished, ResponsesScored,
                                             TokenStreamed)
    from backend.model_source import local_model_folder, resolve_model_source

    work = Path(tempfile.mkdtemp(prefix="bench-generation-"))
    results: dict[str, float | str] = {}
    if args.run_dir:
        start_kwargs = dict(run_dir=args.run_dir, quantization=args.quantization)
        from backend.adapter_loading import resolve_load_spec

        model_path = local_model_folder(resolve_model_source(resolve_load_spec(run_dir=args.run_dir).model))
    else:
        if args.model == "tiny":
            from backend.tiny_model import build_tiny_model

            model_path = str(build_tiny_model(work / "tiny"))
        else:
            model_path = local_model_folder(resolve_model_source(args.model))
        adapter = make_adapter(model_path, work / "adapter")
        start_kwargs = dict(adapter_dir=str(adapter), model=model_path, quantization=args.quantization)

    t0 = time.perf_counter()
    session = GenerationSession.start(log_path=work / "generation.log", **start_kwargs)
    ready = session.wait_ready(timeout=600)
    results["start_to_ready_s"] = time.perf_counter() - t0
    results["load_s"] = ready.load_seconds
    results["device"] = f"{ready.device.get('kind')} {ready.device.get('name', '')} {ready.device.get('precision')}"
    forced = {"greedy": True, "max_new_tokens": args.tokens, "min_new_tokens": args.tokens}

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

    if not args.no_plain:
        out = subprocess.run([sys.executable, "-c", PLAIN_SCRIPT, json.dumps(
            {"model": model_path, "quantization": args.quantization, "tokens": args.tokens, "prompts": PROMPTS[:4]})],
            capture_output=True, text=True, check=True)
        plain = json.loads(out.stdout.strip().splitlines()[-1])["tokens_per_second"]
        results["plain_generate_tokens_per_s"] = plain
        results["base_only_vs_plain"] = results["base_only_tokens_per_s"] / plain

    for key, value in results.items():
        print(f"{key:36s} {value:.3f}" if isinstance(value, float) else f"{key:36s} {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
