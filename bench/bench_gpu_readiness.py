"""GPU readiness without downloads: QLoRA preference training at real model sizes.

Builds random-weight Llama-shaped models at real sizes (1B and 8B, the shapes of
Llama 3.2 1B and Llama 3.1 8B), stores them in bf16 like a published checkpoint, and
trains a few DPO steps on each through the studio's own worker (4-bit NF4 base, LoRA,
bf16 compute), exactly as a run from the window would. Prints, per size, the measured
peak GPU memory against the studio's estimate for the same settings (the worker's
``memory.json``), the training throughput in tokens/s, and whether the 8B run fits a
16 GB card.

    python bench/bench_gpu_readiness.py                    # 1b and 8b, on the first GPU
    python bench/bench_gpu_readiness.py --sizes 1b --steps 4
    python bench/bench_gpu_readiness.py --sizes tiny --allow-cpu   # checks the script itself on a CPU

Random weights make the loss meaningless, but memory and speed depend on the shapes
only. The models are written under --work (default: a temporary folder; the 8B one
takes 16 GB of disk and about 16 GB of host memory while it is built).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Real shapes: Llama 3.2 1B and Llama 3.1 8B (grouped-query attention, 128k vocabulary).
SHAPES = {
    "tiny": dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=4096, tie_word_embeddings=True),
    "1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
               num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True),
    "8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False),
}
CARD_MB = 16 * 1024  # the consumer card the 8B run must fit


def build_random_llama(folder: Path, shape: dict) -> Path:
    """Random bf16 weights written shard by shard, with the tiny tokenizer (its ids fit any vocabulary).

    Initialised on the meta device and then filled in place in bf16: the default fp32 init
    of an 8B model would need 32 GB of host memory and several minutes."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from backend.models.chat_templates import ensure_chat_template
    from backend.testing.tiny_model import build_tiny_tokenizer

    if (folder / "config.json").is_file():
        return folder
    tokenizer = build_tiny_tokenizer()
    ensure_chat_template(tokenizer)
    config = LlamaConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, max_position_embeddings=4096, **shape)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # meta tensors in bf16, so to_empty allocates 2 bytes a weight
    try:
        with torch.device("meta"):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    model = model.to_empty(device="cpu")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.fill_(1.0)
            else:
                param.normal_(0.0, 0.02, generator=generator)
    # The rotary buffers were left empty too, but they are not saved: loading computes them afresh.
    model.save_pretrained(folder, safe_serialization=True, max_shard_size="2GB")
    tokenizer.save_pretrained(folder)
    return folder


def preference_rows(n: int, words: int) -> list[dict]:
    """Pairs about ``words`` words long per answer: long enough that activations count."""
    filler = ("the quick brown fox jumps over the lazy dog and keeps running " * (words // 12 + 1)).split()
    return [{"prompt": f"Question {i}: " + " ".join(filler[: words // 2]),
             "chosen": " " + " ".join(filler[:words]), "rejected": " " + " ".join(reversed(filler[:words]))}
            for i in range(n)]


def run_size(size: str, work: Path, steps: int, max_length: int, batch: int) -> dict:
    from backend.core.events import RunFailed, RunFinished, TrainLog
    from backend.runs.config import default_config
    from backend.training.client import run_to_completion

    started = time.perf_counter()
    model_dir = build_random_llama(work / f"llama-{size}", SHAPES[size])
    built_s = time.perf_counter() - started
    data = work / f"pairs-{size}.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in preference_rows(16 * batch, max_length // 3)),
                    encoding="utf-8")
    cfg = default_config("dpo", model=str(model_dir), data_path=str(data), quantization="4bit",
                         max_steps=steps, per_device_train_batch_size=batch, gradient_accumulation_steps=1,
                         max_length=max_length, eval_fraction=0.0, save_steps=0, logging_steps=1,
                         gradient_checkpointing=True, lora_r=16, lora_target_modules="all-linear")
    run, events = run_to_completion(cfg, runs_root=work / "runs", timeout=3600)
    last = events[-1]
    result = {"size": size, "build_s": round(built_s, 1), "finished": isinstance(last, RunFinished)}
    if isinstance(last, RunFailed):
        result["error"] = f"{last.kind}: {last.message}"
    logs = [e for e in events if isinstance(e, TrainLog)]
    speeds = [e.tokens_per_second for e in logs[1:] if e.tokens_per_second]  # the first step warms up
    step_times = [e.seconds_per_step for e in logs if e.seconds_per_step]
    if speeds:
        result["tokens_per_s"] = round(statistics.median(speeds), 1)
    if step_times:
        result["s_per_step"] = round(step_times[-1], 2)  # the worker's running average
    record = run.run_dir / "memory.json"
    if record.is_file():
        memory = json.loads(record.read_text(encoding="utf-8"))
        result.update(memory_kind=memory.get("memory_kind"), peak_mb=memory.get("measured_peak_mb"),
                      estimate_mb=memory.get("estimated_mb"),
                      measured_to_estimated=memory.get("ratio_measured_to_estimated"))
    if size == "8b" and result.get("peak_mb"):
        result["fits_16gb"] = result["peak_mb"] <= CARD_MB
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1b,8b", help="comma-separated: " + ", ".join(SHAPES))
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--work", default="", help="folder for the models and runs (kept); default temporary")
    parser.add_argument("--allow-cpu", action="store_true", help="run without a GPU (to check the script)")
    parser.add_argument("--json", default="", help="also write the results here")
    args = parser.parse_args(argv)

    import torch

    if not torch.cuda.is_available() and not args.allow_cpu:
        print("No NVIDIA GPU is visible (torch.cuda.is_available() is False); this benchmark measures GPU "
              "memory. Use --allow-cpu --sizes tiny to check the script itself.", file=sys.stderr)
        return 2
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        print(f"GPU: {props.name}, {props.total_memory / 2**30:.0f} GiB, bf16 {torch.cuda.is_bf16_supported()}")
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="alignstudio-gpu-ready-"))
    work.mkdir(parents=True, exist_ok=True)
    results = []
    for size in [s.strip() for s in args.sizes.split(",") if s.strip()]:
        if size not in SHAPES:
            parser.error(f"unknown size {size!r}; choose from {', '.join(SHAPES)}")
        result = run_size(size, work, args.steps, args.max_length, args.batch)
        results.append(result)
        print(json.dumps(result), flush=True)
    print("\nsize  peak MB  estimate MB  measured/estimate  tokens/s  s/step  fits 16 GB")
    for r in results:
        print(f"{r['size']:<5} {r.get('peak_mb', '?'):>8} {r.get('estimate_mb', '?'):>12} "
              f"{r.get('measured_to_estimated', '?'):>18} {r.get('tokens_per_s', '?'):>9} "
              f"{r.get('s_per_step', '?'):>7}  {r.get('fits_16gb', '-')}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0 if all(r["finished"] for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
