"""Studio worker vs a bare TRL script: same DPO configuration, same data, one run.

Each side runs in its own fresh process (the studio side through TrainingRun and
the worker, exactly as the window does; the bare side as a plain TRL script), in
alternating order, and the script prints tokens/s and peak memory of each and
their ratios. Goals: throughput >= 0.98x bare TRL, peak memory <= 1.05x.

    python bench/bench_engine_vs_trl.py                 # embedded Gemma 3 270M, 4-bit
    python bench/bench_engine_vs_trl.py --model tiny    # seconds, for a smoke check
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# How a user of TRL loads the model and tokenizer by hand, shared by the bare scripts of the benches
# (it reads the model folder and "4bit" or "none" from the JSON parameters in argv[1]).
BARE_LOAD = textwrap.dedent(r'''
    p = json.loads(sys.argv[1])
    tok = AutoTokenizer.from_pretrained(p["model"])
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.float32) if p["quantization"] == "4bit" else None
    model = AutoModelForCausalLM.from_pretrained(p["model"], dtype=torch.float32, quantization_config=quant,
                                                 device_map="cpu")
    model.config.use_cache = False
''')

# The bare script is written out in full, as a user of TRL would write it: no studio code.
BARE_SCRIPT = textwrap.dedent(r'''
    import json, resource, sys, time
    import torch
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer

    class Clock(TrainerCallback):
        # The same window the studio side measures: first callback to last log.
        def on_train_begin(self, args, state, control, **kw):
            self.start = time.time()
        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                self.end = time.time()

''') + BARE_LOAD + textwrap.dedent(r'''
    data = load_dataset("json", data_files=p["data"], split="train")
    args = DPOConfig(output_dir=p["out"], per_device_train_batch_size=p["batch"], gradient_accumulation_steps=1,
                     learning_rate=p["lr"], max_steps=p["steps"], warmup_steps=0.1, lr_scheduler_type="cosine",
                     seed=42, data_seed=42, bf16=False, use_cpu=True, gradient_checkpointing=False,
                     logging_steps=1, save_strategy="no", report_to=[], disable_tqdm=True,
                     max_length=p["max_length"], beta=0.1)
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM")
    clock = Clock()
    trainer = DPOTrainer(model=model, args=args, train_dataset=data, processing_class=tok, peft_config=lora,
                         callbacks=[clock])
    trainer.train()
    seconds = clock.end - clock.start
    tokens = max(l.get("num_tokens", 0) for l in trainer.state.log_history)
    print("RESULT " + json.dumps({"tokens": tokens, "seconds": seconds,
                                   "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
''')


def run_bare(params: dict) -> dict:
    out = subprocess.run([sys.executable, "-c", BARE_SCRIPT, json.dumps(params)], capture_output=True, text=True)
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError("bare TRL run failed:\n" + out.stderr[-3000:])


def run_studio(params: dict, runs_root: Path) -> dict:
    from backend.core.events import RunFailed, RunFinished, RunStarted, TrainLog
    from backend.runs.config import default_config
    from backend.training.client import run_to_completion

    cfg = default_config(
        "dpo", model=params["model"], data_path=params["data"], quantization=params["quantization"],
        max_steps=params["steps"], per_device_train_batch_size=params["batch"], gradient_accumulation_steps=1,
        learning_rate=params["lr"], warmup_ratio=0.1, lr_scheduler_type="cosine", seed=42,
        gradient_checkpointing=False, logging_steps=1, save_steps=0, eval_fraction=0.0,
        max_length=params["max_length"], beta=0.1, lora_r=16, lora_alpha=32, lora_dropout=0.05,
        # The same settings on both sides: nothing chosen for the studio (bench_defaults_vs_trl.py measures that).
        speed_options="as set",
    )
    _, events = run_to_completion(cfg, runs_root)
    if not isinstance(events[-1], RunFinished):
        raise RuntimeError(f"studio run failed: {events[-1]}")
    # Same window as the bare script: from the trainer's first callback to the end of train().
    start = next(e for e in events if isinstance(e, RunStarted)).time
    logs = [e for e in events if isinstance(e, TrainLog)]
    end = logs[-1].time
    tokens = max(e.metrics.get("num_tokens", 0) for e in logs)
    return {"tokens": tokens, "seconds": end - start, "peak_mb": events[-1].peak_memory_mb}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="embedded", help="embedded | tiny | a model folder")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--quantization", default="4bit", choices=("4bit", "none"))
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-engine-"))
    if args.model == "tiny":
        from backend.testing.tiny_model import build_tiny_model

        model = str(build_tiny_model(work / "tiny", hidden_size=256, layers=4))
        steps = args.steps or 30
    elif args.model == "embedded":
        from backend.models.embedded_model import ensure_embedded_model

        model = str(ensure_embedded_model())
        steps = args.steps or 6
    else:
        model, steps = args.model, args.steps or 10
    data = ROOT / "resources" / "demo" / "demo_preferences.jsonl"
    params = dict(model=model, data=str(data), steps=steps, batch=2, max_length=128, lr=5e-5,
                  quantization=args.quantization, out=str(work / "bare-out"))
    print(f"DPO, {steps} steps, batch 2, max length 128, {args.quantization}, model {model}")
    results = {"bare": [], "studio": []}
    for rep in range(args.reps):
        # Alternate the order so drift on a shared machine hits both sides alike.
        order = ("bare", "studio") if rep % 2 == 0 else ("studio", "bare")
        for side in order:
            r = run_bare(params) if side == "bare" else run_studio(params, work / "runs")
            r["tps"] = r["tokens"] / r["seconds"]
            results[side].append(r)
            print(f"  rep {rep + 1} {side:6}: {r['tps']:8.1f} tokens/s  peak {r['peak_mb']:7.0f} MB  "
                  f"({r['tokens']:.0f} tokens in {r['seconds']:.1f} s)", flush=True)
    med = {s: {k: statistics.median(r[k] for r in rs) for k in ("tps", "peak_mb")} for s, rs in results.items()}
    # Ratios of the two runs of the same repetition, which ran back to back, cancel most
    # of the drift of a shared machine; their median is the figure to quote.
    tps_ratios = [st["tps"] / b["tps"] for st, b in zip(results["studio"], results["bare"])]
    mem_ratios = [st["peak_mb"] / b["peak_mb"] for st, b in zip(results["studio"], results["bare"])]
    print(f"bare TRL : {med['bare']['tps']:.1f} tokens/s, peak {med['bare']['peak_mb']:.0f} MB (medians)")
    print(f"studio   : {med['studio']['tps']:.1f} tokens/s, peak {med['studio']['peak_mb']:.0f} MB (medians)")
    print("per-repetition throughput ratios: " + ", ".join(f"{r:.3f}" for r in tps_ratios))
    print(f"throughput ratio studio/bare: {statistics.median(tps_ratios):.3f} (goal >= 0.98)")
    print(f"peak memory ratio studio/bare: {statistics.median(mem_ratios):.3f} (goal <= 1.05)")

if __name__ == "__main__":
    main()
