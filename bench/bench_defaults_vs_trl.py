"""The studio's defaults (with the speed options it chooses) against a bare TRL script with TRL's defaults.

Both sides train the same model, loaded the same way, with the same LoRA, on the same
training rows, and see the same number of examples; both are evaluated on the same
held-out rows. The bare side is what a user writes with TRL: ``SFTConfig``/``DPOConfig``
left at their defaults (batch 8, gradient checkpointing on, TRL's learning rate and
schedule), with only what a CPU needs (``bf16=False``), no checkpoint saving, and the
length of the run (TRL's default is 3 epochs, the studio's 1). The studio
side runs through TrainingRun and the worker, as the window does, with the method's
defaults and ``speed_options: auto``.

Each side runs in its own process, interleaved (bare, studio, studio, bare, ...) so drift
on a shared machine hits both alike; repetition r uses seed 42 + r on both sides, so the
spread of the eval losses shows the noise they are compared within. Printed per task: the
training time to the same examples seen (median ratio and spread), the whole-process
time, and the final eval loss of each side. ``--each-option`` then times the studio
without each option it chose (the others kept) against the run with all of them.

    python bench/bench_defaults_vs_trl.py --model tiny --threads 1    # quick: a tiny Llama, one epoch
    python bench/bench_defaults_vs_trl.py --model embedded --examples 64 --reps 2 --threads 1
    python bench/bench_defaults_vs_trl.py --model tiny --options-only  # each option alone
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_engine_vs_trl import BARE_LOAD  # noqa: E402 - importable once the root is on the path

DEMO = {"sft": ROOT / "resources" / "demo" / "demo_sft.jsonl",
        "dpo": ROOT / "resources" / "demo" / "demo_preferences.jsonl"}
HELD_OUT = 0.1
# The studio's LoRA defaults, written out by hand on the bare side as a user would.
LORA = dict(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear")

# The bare script in full, as a user of TRL would write it: no studio code.
BARE_SCRIPT = textwrap.dedent(r'''
    import json, sys, time
    import torch
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

''') + BARE_LOAD + textwrap.dedent(r'''
    data = load_dataset("json", data_files={"train": p["train"], "test": p["test"]})
    Config, Trainer = (SFTConfig, SFTTrainer) if p["method"] == "sft" else (DPOConfig, DPOTrainer)
    # TRL's default batch is 8; its default of 3 epochs would see three times the studio's one.
    steps = dict(max_steps=p["examples"] // 8) if p["examples"] else dict(num_train_epochs=1)
    args = Config(output_dir=p["out"], bf16=False, use_cpu=True, save_strategy="no", report_to=[],
                  disable_tqdm=True, seed=p["seed"], **steps)
    trainer = Trainer(model=model, args=args, train_dataset=data["train"], eval_dataset=data["test"],
                      processing_class=tok, peft_config=LoraConfig(task_type="CAUSAL_LM", **p["lora"]))
    start = time.time()
    trainer.train()
    train_seconds = time.time() - start
    eval_loss = trainer.evaluate()["eval_loss"]
    seen = trainer.state.global_step * args.per_device_train_batch_size * args.gradient_accumulation_steps
    seen = seen if p["examples"] else min(seen, len(data["train"]))  # the last batch of an epoch is short
    print("RESULT " + json.dumps({"train_seconds": train_seconds, "eval_loss": eval_loss,
                                   "steps": trainer.state.global_step, "seen": seen}))
''')


def split_demo(method: str, folder: Path, seed: int = 0) -> Path:
    """``train.jsonl`` and ``test.jsonl`` in ``folder``: the studio reads them as its training
    rows and its held-out split, the bare script loads the same two files."""
    rows = DEMO[method].read_text(encoding="utf-8").splitlines()
    random.Random(seed).shuffle(rows)
    n_test = round(len(rows) * HELD_OUT)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "test.jsonl").write_text("\n".join(rows[:n_test]) + "\n", encoding="utf-8")
    (folder / "train.jsonl").write_text("\n".join(rows[n_test:]) + "\n", encoding="utf-8")
    return folder


def run_bare(params: dict) -> dict:
    start = time.time()
    out = subprocess.run([sys.executable, "-c", BARE_SCRIPT, json.dumps(params)], capture_output=True, text=True)
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line[7:])
            result["total_seconds"] = time.time() - start
            return result
    raise RuntimeError("bare TRL run failed:\n" + out.stderr[-3000:])


def run_studio(params: dict, runs_root: Path, pinned: dict | None = None) -> dict:
    """One studio run with its defaults; ``pinned`` settings are used as set, the speed options off."""
    from backend.core.events import RunFinished, RunStarted, TrainLog
    from backend.runs.config import default_config
    from backend.training.client import run_to_completion
    from backend.training.speed_options import read_recorded

    values = dict(model=params["model"], data_path=params["data"], quantization=params["quantization"],
                  seed=params["seed"], report_to="none", lora_r=LORA["r"], lora_alpha=LORA["lora_alpha"],
                  lora_dropout=LORA["lora_dropout"], lora_target_modules=LORA["target_modules"])
    if params["examples"]:
        cfg = default_config(params["method"])
        values["max_steps"] = params["examples"] // (cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps)
    if pinned is not None:
        values.update(pinned, speed_options="as set")
    start = time.time()
    run, events = run_to_completion(default_config(params["method"], **values), runs_root)
    total = time.time() - start
    if not isinstance(events[-1], RunFinished):
        raise RuntimeError(f"studio run failed: {events[-1]}")
    started = next(e for e in events if isinstance(e, RunStarted))
    # Training proper, the same window as the bare side's train(): from the trainer's first
    # callback to its last log line.
    logs = [e for e in events if isinstance(e, TrainLog)]
    cfg = started.config
    seen = events[-1].step * cfg["per_device_train_batch_size"] * cfg["gradient_accumulation_steps"]
    recorded = read_recorded(run.run_dir) or {"choices": []}
    return {"train_seconds": logs[-1].time - started.time, "total_seconds": total,
            "eval_loss": events[-1].summary.get("eval_loss"), "steps": events[-1].step,
            "seen": min(seen, started.train_rows) if not params["examples"] else seen,
            "choices": [f"{c['label']}: {c['value']} ({c['reason']})" for c in recorded["choices"]],
            "chosen": {c["setting"]: c["value"] for c in recorded["choices"]}}


def spread(values: list[float]) -> str:
    return f"{min(values):.3f}-{max(values):.3f}" if len(values) > 1 else f"{values[0]:.3f}"


def bench_method(method: str, model: str, work: Path, args) -> dict:
    data = split_demo(method, work / f"data-{method}")
    results: dict[str, list[dict]] = {"bare": [], "studio": []}
    for rep in range(args.reps):
        params = dict(method=method, model=model, data=str(data), train=str(data / "train.jsonl"),
                      test=str(data / "test.jsonl"), quantization=args.quantization, examples=args.examples,
                      seed=42 + rep, lora=LORA, out=str(work / f"bare-{method}"))
        order = ("bare", "studio") if rep % 2 == 0 else ("studio", "bare")
        for side in order:
            r = run_bare(params) if side == "bare" else run_studio(params, work / "runs")
            results[side].append(r)
            print(f"  {method} rep {rep + 1} {side:6}: train {r['train_seconds']:7.1f} s  total "
                  f"{r['total_seconds']:7.1f} s  {r['steps']:4d} steps  {r['seen']:5d} examples  "
                  f"eval loss {r['eval_loss']:.4f}", flush=True)
            if side == "studio" and rep == 0:
                for line in r["choices"]:
                    print(f"      studio chose {line}", flush=True)
    ratios = [b["train_seconds"] / s["train_seconds"] for b, s in zip(results["bare"], results["studio"])]
    total_ratios = [b["total_seconds"] / s["total_seconds"] for b, s in zip(results["bare"], results["studio"])]
    losses = {side: [r["eval_loss"] for r in rs] for side, rs in results.items()}
    print(f"{method.upper()}: studio faster by {statistics.median(ratios):.2f}x in training "
          f"(per repetition {', '.join(f'{x:.2f}' for x in ratios)}), {statistics.median(total_ratios):.2f}x "
          f"end to end (spread {spread(total_ratios)}); goal >= 1.3x")
    print(f"{method.upper()}: final eval loss studio {statistics.median(losses['studio']):.4f} "
          f"(spread {spread(losses['studio'])}), bare TRL {statistics.median(losses['bare']):.4f} "
          f"(spread {spread(losses['bare'])})", flush=True)
    return {"ratios": ratios, "total_ratios": total_ratios, "losses": losses}


# Options measured one at a time; the batch size moves with its accumulation and evaluation batch.
OPTION_GROUPS = {"gradient_checkpointing": ("gradient_checkpointing",),
                 "per_device_train_batch_size": ("per_device_train_batch_size", "gradient_accumulation_steps",
                                                 "eval_batch_size"),
                 "padding_free": ("padding_free",), "group_by_length": ("group_by_length",),
                 "precompute_ref_log_probs": ("precompute_ref_log_probs",), "use_liger_kernel": ("use_liger_kernel",),
                 "score_trained_tokens_only": ("score_trained_tokens_only",)}


def bench_each_option(method: str, model: str, work: Path, args) -> None:
    """Each option the studio changed, taken back to its default while the others stay: the
    training time it saves. Interleaved with the run that has all of them."""
    from backend.runs.config import default_config

    data = work / f"data-{method}"
    defaults = default_config(method)
    base = dict(method=method, model=model, data=str(data), quantization=args.quantization, examples=args.examples,
                lora=LORA)
    probe = run_studio(dict(base, seed=42), work / "runs")
    chosen = probe["chosen"]
    changed = [k for k in OPTION_GROUPS if k in chosen and chosen[k] != getattr(defaults, k)]
    times: dict[str, list[float]] = {"all": [], **{k: [] for k in changed}}
    for rep in range(args.reps):
        variants = ["all"] + changed
        for name in variants if rep % 2 == 0 else reversed(variants):
            pinned = dict(chosen)
            for key in OPTION_GROUPS.get(name, ()):
                pinned[key] = getattr(defaults, key)
            r = run_studio(dict(base, seed=42 + rep), work / "runs", pinned=pinned)
            times[name].append(r["train_seconds"])
            print(f"  {method} option rep {rep + 1} {'all options' if name == 'all' else name + ' at its default'}: "
                  f"train {r['train_seconds']:.1f} s, eval loss {r['eval_loss']:.4f}", flush=True)
    for name in changed:
        ratios = [t / a for t, a in zip(times[name], times["all"])]
        print(f"{method.upper()}: with {name} at its default ({getattr(defaults, name)}) training takes "
              f"{statistics.median(ratios):.2f}x as long "
              f"(per repetition {', '.join(f'{x:.2f}' for x in ratios)})", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tiny", help="tiny | embedded | a model folder")
    ap.add_argument("--methods", default="sft,dpo")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--examples", type=int, default=0,
                    help="examples each side sees (a multiple of 16); 0: one epoch of the training rows")
    ap.add_argument("--quantization", default="4bit", choices=("4bit", "none"),
                    help="how both sides load the base (the studio's default is 4bit)")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch threads of both sides (OMP_NUM_THREADS); 0 leaves torch's default. On a machine "
                         "other jobs share, 1 avoids the spinning of oversubscribed threads that slows both sides "
                         "by up to 10x at random")
    ap.add_argument("--each-option", action="store_true",
                    help="also measure each chosen option alone: the studio run without it against all of them")
    ap.add_argument("--options-only", action="store_true", help="only --each-option, without the bare side")
    args = ap.parse_args()
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # inherited by the bare script and the worker

    work = Path(tempfile.mkdtemp(prefix="bench-defaults-"))
    if args.model == "tiny":
        from backend.testing.tiny_model import build_tiny_model

        model = str(build_tiny_model(work / "tiny", hidden_size=256, layers=4))
    elif args.model == "embedded":
        from backend.models.embedded_model import ensure_embedded_model

        model = str(ensure_embedded_model())
    else:
        model = args.model
    seen = f"{args.examples} examples" if args.examples else "one epoch"
    threads = args.threads or "default"
    print(f"Studio defaults vs bare TRL defaults: {seen}, {args.quantization}, {args.reps} repetitions, "
          f"{threads} threads, model {model}", flush=True)
    for method in args.methods.split(","):
        if args.options_only:
            split_demo(method.strip(), work / f"data-{method.strip()}")
        else:
            bench_method(method.strip(), model, work, args)
        if args.each_option or args.options_only:
            bench_each_option(method.strip(), model, work, args)


if __name__ == "__main__":
    main()
