"""Calibrate ``backend.training.memory_estimate`` against the peak memory of real short runs.

Each case runs in its own process (a fresh process is the only honest baseline
for peak RSS: allocator pools and the mmap'd checkpoint survive inside one), trains
a few steps with TRL + peft LoRA on a 4-bit bitsandbytes model on the CPU, and
reports the process's peak RSS next to the estimate for the same settings.

    python bench/bench_memory_estimate.py                 # tiny and Gemma, SFT and DPO
    python bench/bench_memory_estimate.py --all           # also ORPO, precompute, no checkpointing, medium
    python bench/bench_memory_estimate.py gemma-dpo tiny-sft --json out.json
    python bench/bench_memory_estimate.py --sweep           # long prompts, lengths 64..2048, ORPO/DPO/SFT
    BENCH_PROFILE=1 python bench/bench_memory_estimate.py --child gemma-sft   # one case, torch profile on stderr

Batch 2, max length 128, LoRA r=16 all-linear, 4-bit NF4, 2 optimizer steps. On
a 2-core machine a Gemma case takes 1.5-6 minutes: 4-bit Gemma training on the
CPU measured 8-60 s per step here, the slow end while other processes shared
the cores.

``--sweep`` measures the estimate across sequence lengths on long-prompt data
(``backend.testing.synthetic_long_prompts``, cut to fit by the worker's own long-prompt
policy, so every sequence reaches Max length, as the estimate assumes) with a
"wide" model: few thin layers and a 64k vocabulary (Gemma ties a 262k one), so
the LM head and logits dominate at long lengths as they do for Gemma, while
lengths up to 2,048 still fit this machine. Each sweep case also evaluates on
held-out rows with the evaluation batch size (twice the training batch), which
the estimate includes.

DPO and SFT cases score only the trained positions, as the worker's speed options
(``speed_options: auto``) set it off GPUs, and the estimate is given the batch's
longest answer, as the window gives it the data report's. Measured on this 2-core
machine, November 2026 (batch 1, r=16, 4-bit; peak RSS MB and estimate / measured;
the estimate counts the tokenizer really loaded):

    length      64          256         1024        2048
    ORPO    800  1.00   1177  1.06   2916  1.05   5351  1.02
    DPO     752  0.95    738  1.01    857  1.00   1130  0.90
    SFT     686  0.99    669  1.04    742  1.02    838  0.99

Every case within -10%..+6%. Without the answer length the estimate counts TRL's
whole tile, which is right for a run that scores every position (``speed_options:
as set``; measured earlier the same way):

    length      64          256         1024        2048
    ORPO    829  0.96   1234  1.01   2851  1.07   5265  1.03
    DPO     885  0.90   1269  0.98   3065  1.00   5183  1.05
    SFT     761  0.95    961  0.99   1870  0.99   3003  1.02
    262k vocabulary, length 512: ORPO 5047 1.08, DPO 2065 1.01

but 3.3 times the peak of a run that scores only its short answers (SFT at 2,048:
3,054 MB estimated, 919 measured). The evaluation pass (two examples per batch) set
the peak in 10 of the 12 sweep cases (all but ORPO at 64 and DPO at 2,048). The
estimate's evaluation part matters for ORPO, whose logits double with the
batch: without it ORPO at 2,048 read 0.93.

The issue's run, ``gemma-orpo-long512`` (Gemma 3 270M, ORPO, batch 1, max length
512, long prompts, evaluation on): measured 6,982 MB (training 6,469, evaluation
6,981), estimate 6,492 MB (0.93); before the evaluation part 5,983 MB (0.86).
The 14.3 GB reported with it did not reproduce here.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

STEPS = 2
SWEEP_STEPS = 1  # the LoRA optimizer state is a few MB here: one step shows the peak
BATCH = 2
MAX_LENGTH = 128

# name -> (model, method, overrides of the run config)
CASES: dict[str, tuple[str, str, dict]] = {
    "tiny-sft": ("tiny", "sft", {}),
    "tiny-dpo": ("tiny", "dpo", {}),
    "gemma-sft": ("gemma", "sft", {}),
    "gemma-dpo": ("gemma", "dpo", {}),
    "gemma-dpo-precompute": ("gemma", "dpo", {"precompute_ref_log_probs": True}),
    "gemma-dpo-no-checkpointing": ("gemma", "dpo", {"gradient_checkpointing": False}),
    "gemma-orpo": ("gemma", "orpo", {}),
    # A different balance: most weights quantized, a small (32k) vocabulary.
    "medium-sft": ("medium", "sft", {}),
    "medium-dpo": ("medium", "dpo", {}),
}
DEFAULT_CASES = ["tiny-sft", "tiny-dpo", "gemma-sft", "gemma-dpo"]
SWEEP_LENGTHS = (64, 256, 1024, 2048)
SWEEP_METHODS = ("orpo", "dpo", "sft")
SWEEP_BATCH = 1
WIDE_VOCAB = 65536
GEMMA_VOCAB = 262144
for _method in SWEEP_METHODS:
    for _length in SWEEP_LENGTHS:
        CASES[f"wide-{_method}-{_length}"] = ("wide", _method, {"max_length": _length,
                                                                 "per_device_train_batch_size": SWEEP_BATCH})
# Gemma's 262k vocabulary on the thin model: the logits term at 4x the sweep's vocabulary.
for _method in ("orpo", "dpo"):
    CASES[f"wide262k-{_method}-512"] = ("wide262k", _method, {"max_length": 512,
                                                              "per_device_train_batch_size": SWEEP_BATCH})
# The run: ORPO on Gemma, batch 1, max length 512, long prompts.
CASES["gemma-orpo-long512"] = ("gemma", "orpo", {"max_length": 512, "per_device_train_batch_size": 1})


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


class _PeakSampler:
    """Polls RSS in a thread: ru_maxrss covers the whole process life (load spikes
    included), this gives the peak of one phase."""

    def __init__(self, interval: float = 0.005):
        self.interval = interval
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_mb())
            time.sleep(self.interval)

    def __enter__(self):
        self.peak = _rss_mb()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mb())


def _texts(n: int) -> list[dict]:
    """Rows long enough that every sequence is cut at MAX_LENGTH: the estimate
    assumes full-length sequences, so the measurement must too."""
    filler = (
        "The river runs past the old mill, turns west at the bridge and reaches the sea after "
        "many quiet miles through fields, forests and small villages. "
    )
    rows = []
    for i in range(n):
        # Short prompts: DPO drops rows whose prompt alone reaches max_length.
        prompt = f"Question {i}: describe the river."
        rows.append(
            {
                "prompt": prompt,
                "chosen": " Gladly. " + filler * 6,
                "rejected": " No. " + filler[::-1] * 6,
                "completion": " Gladly. " + filler * 6,
            }
        )
    return rows


def _build_random_llama(folder: Path, **shape) -> Path:
    """A random Llama of ``shape`` stored in bf16 like published checkpoints. Its tokenizer
    is the tiny one: its ids fit any vocabulary."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from backend.models.chat_templates import ensure_chat_template
    from backend.testing.tiny_model import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    ensure_chat_template(tokenizer)
    config = LlamaConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, **shape)
    torch.manual_seed(0)
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def _build_medium_model(folder: Path) -> Path:
    """8 layers, hidden 768, an untied 32k vocabulary: most weights quantized."""
    return _build_random_llama(folder, vocab_size=32000, hidden_size=768, intermediate_size=3072,
                               num_hidden_layers=8, num_attention_heads=12, num_key_value_heads=4,
                               max_position_embeddings=1024, tie_word_embeddings=False)


def _build_wide_model(folder: Path, vocab_size: int = WIDE_VOCAB) -> Path:
    """4 thin layers and a large tied vocabulary (like Gemma's): the LM head outweighs the
    decoder, so the logits term is what is measured."""
    return _build_random_llama(folder, vocab_size=vocab_size, hidden_size=256, intermediate_size=1024,
                               num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                               max_position_embeddings=4096, tie_word_embeddings=True)


def _long_prompt_data(method: str, max_length: int, tokenizer, rows_needed: int):
    """Long-prompt rows cut to fit by the worker's policy; only rows that then fill
    ``max_length`` are kept, so every batch is as long as the estimate assumes."""
    from datasets import Dataset

    from backend.data.long_prompts import fit_dataset, row_lengths
    from backend.testing.synthetic_long_prompts import long_prompt_rows

    words = max(8, max_length)  # at least a token a word: every tail prompt outgrows max_length
    rows = long_prompt_rows(max(8 * rows_needed, 48), median_words=words, tail_words=words, tail_share=0.5)
    full = [r for r in rows if sum(row_lengths(tokenizer, r["prompt"], [r["chosen"], r["rejected"]])) >= max_length]
    full = (full * rows_needed)[:rows_needed]
    keys = ("prompt", "completion") if method == "sft" else ("prompt", "chosen", "rejected")
    data = Dataset.from_list([{k: r["chosen"] if k == "completion" else r[k] for k in keys} for r in full])
    return fit_dataset(data, tokenizer, max_length, "truncate_left")[0]


def _model_folder(which: str, work: Path) -> Path:
    if which == "wide":
        return _build_wide_model(work / "wide")
    if which == "wide262k":
        return _build_wide_model(work / "wide", vocab_size=GEMMA_VOCAB)
    if which == "tiny":
        from backend.testing.tiny_model import build_tiny_model

        return build_tiny_model(work / "tiny")
    if which == "medium":
        return _build_medium_model(work / "medium")
    from backend.models.embedded_model import ensure_embedded_model

    return ensure_embedded_model(log=lambda *_: None)


def run_case(name: str) -> dict:
    """Train one case in this process and return its memory figures.

    It builds the run with ``backend.training.trainer_builders``, the functions the training
    worker uses, so the measurement follows whatever the app really does.
    """
    which, method, overrides = CASES[name]
    long_prompts = which.startswith("wide") or name.endswith("-long512")
    t0 = time.time()
    baseline = _rss_mb()
    from datasets import Dataset

    from backend.training import trainer_builders as tb
    from backend.runs.config import default_config

    steps = SWEEP_STEPS if which.startswith("wide") else STEPS
    settings = dict(per_device_train_batch_size=BATCH, max_length=MAX_LENGTH)
    settings.update(overrides)
    cfg = default_config(
        method,
        gradient_accumulation_steps=1,
        max_steps=steps,
        quantization="4bit",
        save_steps=0,
        eval_fraction=0.05 if long_prompts else 0.0,
        **settings,
    )
    if getattr(cfg, "speed_options", "as set") == "auto" and hasattr(cfg, "score_trained_tokens_only"):
        # The worker's speed options turn this on off GPUs (backend.training.speed_options._trained_tokens),
        # and it decides how much of the head's tile is built; the other options stay as set, so each
        # case measures the settings it names.
        from backend.core.device_info import describe_device

        cfg = dataclasses.replace(cfg, score_trained_tokens_only=describe_device().get("kind") != "cuda")
    precision = tb.choose_precision()
    before_torch = _rss_mb()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        folder = _model_folder(which, work)
        tokenizer = tb.build_tokenizer(str(folder), cfg)
        with _PeakSampler() as load_peak:
            model = tb.build_model(str(folder), cfg, precision)
        after_load = _rss_mb()
        eval_data = None
        if long_prompts:
            batch = cfg.per_device_train_batch_size
            data = _long_prompt_data(method, cfg.max_length, tokenizer, batch * steps)
            eval_data = _long_prompt_data(method, cfg.max_length, tokenizer, tb.eval_batch_size(cfg))
        else:
            rows = _texts(BATCH * STEPS)
            keys = ("prompt", "completion") if method == "sft" else ("prompt", "chosen", "rejected")
            data = Dataset.from_list([{k: r[k] for k in keys} for r in rows])
        args = tb.build_trl_args(cfg, precision, str(work / "out"), has_eval=False)
        trainer = tb.build_trainer(cfg, model, tokenizer, args, data, eval_data, callbacks=[])
        after_init = _rss_mb()
        with _PeakSampler() as train_peak:
            t_train = time.time()
            if os.environ.get("BENCH_PROFILE"):
                import torch

                with torch.profiler.profile() as prof:
                    trainer.train()
                print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20), file=sys.stderr)
            else:
                trainer.train()
            train_s = time.time() - t_train
        eval_peak = None
        if eval_data is not None:
            with _PeakSampler() as eval_sampler:
                trainer.evaluate()
            eval_peak = eval_sampler.peak
        batch = next(iter(trainer.get_train_dataloader()))
        shapes = {k: list(v.shape) for k, v in batch.items() if hasattr(v, "shape")}
        # The longest answer of a batch: what a head that scores only trained positions projects.
        trained = batch.get("completion_mask")
        if trained is None and "labels" in batch:
            trained = batch["labels"] != -100
        answer_tokens = int(trained.sum(dim=1).max()) if trained is not None else None
        model_config = json.loads((folder / "config.json").read_text())
    return {
        "case": name,
        "model": which,
        "model_config": model_config,
        "method": method,
        "config": cfg.__dict__,
        "rss_start_mb": baseline,
        "rss_before_torch_mb": before_torch,
        "load_peak_mb": load_peak.peak,
        "rss_after_load_mb": after_load,
        "rss_after_trainer_init_mb": after_init,
        "train_peak_mb": train_peak.peak,
        "eval_peak_mb": eval_peak,
        "process_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "train_s_per_step": train_s / steps,
        "wall_s": time.time() - t0,
        "batch_shapes": shapes,
        "tokenizer_vocab": len(tokenizer),
        "answer_tokens": answer_tokens,
    }


def _estimate_for(result: dict, device: dict) -> dict:
    from backend.training.memory_estimate import TOKENIZER_BYTES_PER_TOKEN, estimate_memory, shape_from_config
    from backend.runs.config import from_dict

    # The child's model folder is gone; its config.json came back with the result.
    shape = shape_from_config(result["model_config"], source=result["model"])
    estimate = estimate_memory(from_dict(result["config"]), device, shape,
                               answer_tokens=result.get("answer_tokens")).to_dict()
    # The random models carry the tiny 300-token tokenizer, not one as large as their
    # vocabulary: count the tokenizer that was really loaded.
    parts = estimate["parts"]
    if "tokenizer" in parts and result.get("tokenizer_vocab"):
        loaded = result["tokenizer_vocab"] * TOKENIZER_BYTES_PER_TOKEN / 2**20
        estimate["total_mb"] -= parts["tokenizer"] - loaded
        parts["tokenizer"] = loaded
    return estimate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="*", help=f"cases to run (default: {' '.join(DEFAULT_CASES)})")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--all", action="store_true", help="run every case")
    parser.add_argument("--sweep", action="store_true",
                        help=f"long prompts at lengths {', '.join(map(str, SWEEP_LENGTHS))} for "
                             f"{', '.join(SWEEP_METHODS)} (the wide model)")
    parser.add_argument("--json", help="write every result to this file")
    opts = parser.parse_args(argv)

    if opts.child:
        print("RESULT " + json.dumps(run_case(opts.child)), flush=True)
        return 0

    from backend.core.device_info import describe_device

    device = describe_device()
    sweep = [name for name in CASES if name.startswith("wide")]
    names = list(CASES) if opts.all else (opts.cases or (sweep if opts.sweep else DEFAULT_CASES))
    unknown = [n for n in names if n not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {unknown}; known: {', '.join(CASES)}")
    print(f"device: {device['name']}, {device['memory_mb']:.0f} MB, torch {device['torch_version']}", flush=True)
    results = []
    for name in names:
        proc = subprocess.run([sys.executable, __file__, "--child", name], capture_output=True, text=True,
                              cwd=ROOT, check=False)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            print(f"{name}: failed (exit {proc.returncode})\n{proc.stderr[-3000:]}", file=sys.stderr)
            continue
        result = json.loads(lines[-1][len("RESULT "):])
        result["estimate"] = _estimate_for(result, device)
        results.append(result)
        _print_row(result)
    if results:
        ratios = [r["estimate"]["total_mb"] / r["process_peak_mb"] for r in results]
        print(f"estimate / measured: min {min(ratios):.2f}, max {max(ratios):.2f}", flush=True)
        worst = max(ratios, key=lambda x: abs(x - 1))
        print(f"largest error {100 * (worst - 1):+.0f}% "
              f"({'within' if abs(worst - 1) <= 0.15 else 'OUTSIDE'} ±15%)", flush=True)
    if opts.json:
        Path(opts.json).write_text(json.dumps(results, indent=2))
    return 0


def _print_row(r: dict) -> None:
    est = r.get("estimate")
    measured = r["process_peak_mb"]
    line = (
        f"{r['case']:<22} measured peak {measured:5.0f} MB (loading {r['load_peak_mb']:.0f}, "
        f"training {r['train_peak_mb']:.0f}"
        + (f", evaluation {r['eval_peak_mb']:.0f}" if r.get("eval_peak_mb") else "")
        + f"), {r['train_s_per_step']:.1f} s/step"
    )
    if est:
        line += f" | estimate {est['total_mb']:5.0f} MB, estimate/measured {est['total_mb'] / measured:.2f}"
    print(line, flush=True)
    if est:
        print("    " + ", ".join(f"{k} {v:.0f}" for k, v in est["parts"].items()), flush=True)


if __name__ == "__main__":
    sys.exit(main())
