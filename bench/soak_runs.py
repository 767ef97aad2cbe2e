"""Soak test: start, stop, kill and resume training runs in a loop, then check the damage.

    python bench/soak_runs.py --runs 12 --seed 1

Each run is a tiny DPO run through the real worker process. Every attempt meets
one random fate: it completes; it is asked to stop at a random step; it is
killed with SIGKILL or SIGTERM at a random moment (model loading included);
or a fault is injected inside the worker (NaN weights, out of memory, a
segfault). A run that ended early is resumed (up to ``--max-attempts`` times,
each attempt again at the mercy of a random fate; the last one runs in peace).

At the end it checks what a user depends on:
- no worker process is left behind;
- every run folder opens (config readable, status not "damaged", events readable);
- every run reached its target step, and its plotted history has each step
  exactly once (no gap, no duplicate), however many attempts it took;
- a NaN run kept an adapter with finite weights or said that none was kept.

It prints one line per attempt and a summary with the counts. Exit status 1 if
any check failed. No network; the tiny model is built on the spot.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FATES = ("complete", "stop", "sigkill", "sigterm", "nan", "oom", "segv")


def write_preferences(path: Path, n: int = 48) -> Path:
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            fh.write(json.dumps({"prompt": f"Question {i}: help with task {i % 5}?",
                                 "chosen": " Sure, happy to help.", "rejected": " No. Whatever."}) + "\n")
    return path


def worker_processes(runs_root: Path) -> list:
    """Every training worker whose run folder lies under ``runs_root``, wherever it came from."""
    import psutil

    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmd = proc.info.get("cmdline") or []
        if "backend.training.worker" in cmd and any(str(runs_root) in part for part in cmd):
            found.append(proc)
    return found


def run_attempt(run, fate: str, rng: random.Random, target: int) -> tuple[str, float]:
    """Follow one worker to its end under ``fate``; returns how the attempt ended."""
    from backend.core.events import RunFailed, RunFinished, TrainLog

    kill_timer = None
    if fate in ("sigkill", "sigterm"):
        delay = rng.uniform(0.0, 8.0)  # from model loading to late training
        sig = signal.SIGKILL if fate == "sigkill" else signal.SIGTERM

        def strike():
            try:
                os.kill(run.process.pid, sig)
            except ProcessLookupError:
                pass

        kill_timer = threading.Timer(delay, strike)
        kill_timer.start()
    stop_at = rng.randint(1, target) if fate == "stop" else None
    t0 = time.monotonic()
    last = None
    for event in run.events():
        last = event
        if stop_at is not None and isinstance(event, TrainLog) and event.step >= stop_at:
            run.request_stop()
            stop_at = None
    if kill_timer is not None:
        kill_timer.cancel()
    if run.wait(timeout=60) is None:  # a worker that outlives its event stream is a defect
        run.kill()
    run.close()
    took = time.monotonic() - t0
    if isinstance(last, RunFinished):
        return ("stopped" if last.stopped else "completed"), took
    if isinstance(last, RunFailed):
        return f"failed:{last.kind}", took
    return "no-terminal-event", took


def check_run(run_dir: Path, target: int) -> list[str]:
    """What is wrong with a finished run folder (nothing, ideally)."""
    from backend.core.events import RunFailed, TrainLog
    from backend.runs.config import load_yaml
    from backend.runs.folder import current_attempt_events, read_events, summarize_run

    problems = []
    try:
        load_yaml(run_dir / "config.yaml")
    except Exception as exc:  # noqa: BLE001 - any failure to open is the finding
        problems.append(f"config does not load: {exc}")
    summary = summarize_run(run_dir)
    if summary.status != "completed":
        problems.append(f"status {summary.status} ({summary.error[:80]})")
    events = read_events(run_dir)
    steps = [e.step for e in current_attempt_events(events) if isinstance(e, TrainLog)]
    if steps != list(range(1, target + 1)):
        problems.append(f"history steps {steps[:3]}…{steps[-3:]} ({len(steps)}), not 1..{target} once each")
    nan_failures = [e for e in events if isinstance(e, RunFailed) and e.kind == "nan_loss"]
    for failure in nan_failures:
        if "was kept" not in failure.message and "no adapter was kept" not in failure.message:
            problems.append("a NaN failure did not say which adapter was kept")
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--steps", type=int, default=12, help="target steps per run")
    parser.add_argument("--max-attempts", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    from backend.testing.fault_injection import ENV_VAR
    from backend.runs.config import default_config
    from backend.testing.tiny_model import build_tiny_model
    from backend.training.client import TrainingRun

    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="alignstudio-soak-"))
    os.environ["ALIGNSTUDIO_HOME"] = str(work / "home")
    runs_root = work / "runs"
    model = build_tiny_model(work / "model")
    data = write_preferences(work / "prefs.jsonl")

    fates, outcomes, failures = Counter(), Counter(), []
    started = time.monotonic()
    for index in range(args.runs):
        cfg = default_config(
            "dpo", model=str(model), data_path=str(data), quantization="none", max_steps=args.steps,
            per_device_train_batch_size=2, gradient_accumulation_steps=1, gradient_checkpointing=False,
            learning_rate=5e-3, lora_r=8, lora_alpha=16, max_length=64, eval_fraction=0.0, save_steps=3,
            warmup_ratio=0.0, lr_scheduler_type="constant", run_name=f"soak-{index:02d}")
        run_dir = None
        for attempt in range(args.max_attempts):
            fate = "complete" if attempt == args.max_attempts - 1 else rng.choice(FATES)
            fault_step = rng.randint(1, args.steps)
            os.environ[ENV_VAR] = {"nan": f"nan@{fault_step}", "oom": f"oom@{fault_step}",
                                   "segv": f"segv@{fault_step}"}.get(fate, "slow_step=0.1")
            run = TrainingRun.start(cfg, runs_root) if run_dir is None else TrainingRun.resume(run_dir)
            run_dir = run.run_dir
            outcome, took = run_attempt(run, fate, rng, args.steps)
            fates[fate] += 1
            outcomes[outcome] += 1
            print(f"run {index:02d} attempt {attempt + 1}: {fate:<8} → {outcome:<22} {took:5.1f} s", flush=True)
            if outcome == "completed":
                break
        os.environ.pop(ENV_VAR, None)
        problems = check_run(run_dir, args.steps)
        failures += [f"{run_dir.name}: {p}" for p in problems]

    time.sleep(1.0)  # a killed worker's children need a moment to be reaped
    leftovers = worker_processes(runs_root)
    folders = sorted(p for p in runs_root.iterdir() if p.is_dir())
    print()
    print(f"{args.runs} runs, {sum(fates.values())} attempts in {time.monotonic() - started:.0f} s")
    print("fates:    " + ", ".join(f"{k} {v}" for k, v in sorted(fates.items())))
    print("outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())))
    faults = sum(v for k, v in fates.items() if k != "complete")
    print(f"faults and interruptions tried: {faults}; run folders: {len(folders)}; "
          f"runs that reached {args.steps} steps with a clean history: {args.runs - len({f.split(':')[0] for f in failures})}")
    print(f"worker processes left behind: {len(leftovers)}")
    for problem in failures:
        print(f"  PROBLEM {problem}")
    ok = not failures and not leftovers
    print("OK" if ok else "FAILED")
    if ok:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"(kept {work} for inspection)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
