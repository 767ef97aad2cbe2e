"""PPO against RLOO: the same reward model, the same prompts, the same number of sampled
answers per step, side by side through the studio's own worker.

    .venv/bin/python bench/bench_ppo_vs_rloo.py                 # tiny model, reward model trained on the spot
    .venv/bin/python bench/bench_ppo_vs_rloo.py --model FOLDER --reward-model RUN --steps 30

Prints, for each method, the reward model's mean score early and late in the run, the
KL to the reference per answer token (PPO logs it per answer, so it is divided by the
mean answer length; RLOO's ``kl`` is per token already) and the seconds per step.
Both sample ``--answers`` answers per step: PPO one per prompt, RLOO ``--group`` per prompt.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PROMPTS = [f"Question {i}: can you help me with task {i % 7}?" for i in range(64)]


def write_pairs(path: Path) -> Path:
    polite = ["Sure, happy to help with that question.", "Thank you for asking! Here is a clear answer."]
    rude = ["No. Figure it out yourself. Whatever.", "Whatever. No. Do it yourself."]
    with path.open("w", encoding="utf-8") as fh:
        for i, prompt in enumerate(PROMPTS):
            fh.write(json.dumps({"prompt": prompt, "chosen": " " + polite[i % 2], "rejected": " " + rude[i % 2]}) + "\n")
    return path


def run(method: str, model: str, data: Path, runs_root: Path, **values) -> tuple[list, float]:
    from backend.core.events import RunFailed, TrainLog
    from backend.runs.config import default_config
    from backend.training.client import run_to_completion

    cfg = default_config(method, model=model, data_path=str(data), eval_fraction=0.0, save_steps=0,
                         logging_steps=1, warmup_ratio=0.0, lr_scheduler_type="constant", gradient_checkpointing=False,
                         **values)
    started = time.time()
    _run, events = run_to_completion(cfg, runs_root=runs_root, timeout=3600)
    if isinstance(events[-1], RunFailed):
        raise SystemExit(f"{method} failed: {events[-1].message}")
    return [e for e in events if isinstance(e, TrainLog)], time.time() - started


def train_reward_model(model: str, data: Path, runs_root: Path, common: dict) -> Path:
    from backend.methods import all_methods
    from backend.runs.config import default_config
    from backend.training.client import run_to_completion

    key = next(s.key for s in all_methods() if s.model_head == "score")
    cfg = default_config(key, model=model, data_path=str(data), eval_fraction=0.0, save_steps=0, max_length=64,
                         max_steps=12, learning_rate=5e-3, **common)
    run, events = run_to_completion(cfg, runs_root=runs_root, timeout=3600)
    if type(events[-1]).__name__ != "RunFinished":
        raise SystemExit(f"the reward model did not train: {events[-1]}")
    return run.run_dir


def mean(values: list[float]) -> float:
    values = [v for v in values if v == v]
    return sum(values) / len(values) if values else float("nan")


def summary(name: str, logs: list, score_key: str, kl_of, wall: float) -> dict:
    third = max(1, len(logs) // 3)
    seconds = [e.seconds_per_step for e in logs if e.seconds_per_step]
    return {
        "method": name,
        "steps": len(logs),
        "score_early": mean([e.metrics.get(score_key, float("nan")) for e in logs[:third]]),
        "score_late": mean([e.metrics.get(score_key, float("nan")) for e in logs[-third:]]),
        "kl_per_token_late": mean([kl_of(e.metrics) for e in logs[-third:]]),
        "seconds_per_step": mean(seconds[1:] or seconds),
        "wall_seconds": wall,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="", help="base model folder (default: a tiny model built now)")
    parser.add_argument("--reward-model", default="", help="reward model run (default: one trained now)")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--answers", type=int, default=8, help="sampled answers per step, for both methods")
    parser.add_argument("--group", type=int, default=2, help="RLOO's answers per prompt")
    parser.add_argument("--max-answer-tokens", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=5e-3)
    parser.add_argument("--temperature", type=float, default=0.7, help="sampling temperature, for both")
    parser.add_argument("--quantization", default="4bit", choices=("4bit", "8bit", "none"))
    parser.add_argument("--json", default="", help="also write the figures to this file")
    args = parser.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    work = Path(tempfile.mkdtemp(prefix="bench-ppo-rloo-"))
    os.environ.setdefault("ALIGNSTUDIO_HOME", str(work / "home"))
    model = args.model
    if not model:
        from backend.testing.tiny_model import build_tiny_model

        model = str(build_tiny_model(work / "tiny-model"))
    data = write_pairs(work / "pairs.jsonl")
    runs = work / "runs"
    common = dict(quantization=args.quantization, lora_r=8, lora_alpha=16, per_device_train_batch_size=args.answers,
                  gradient_accumulation_steps=1)
    reward_model = args.reward_model or str(train_reward_model(model, data, runs, common))
    max_length = max(64, args.max_answer_tokens + 48)
    shared = dict(common, max_steps=args.steps, learning_rate=args.learning_rate, max_length=max_length,
                  max_completion_length=args.max_answer_tokens, reward_model=reward_model,
                  temperature=args.temperature)

    ppo_logs, ppo_wall = run("ppo", model, data, runs, **shared)
    rloo_logs, rloo_wall = run("rloo", model, data, runs, num_generations=args.group, **shared)
    rows = [
        summary("PPO", ppo_logs, "objective/scores",
                lambda m: m.get("objective/kl", float("nan")) / max(1.0, m.get("completions/mean_length", 1.0)),
                ppo_wall),
        summary("RLOO", rloo_logs, "reward", lambda m: m.get("kl", float("nan")), rloo_wall),
    ]
    print(f"\nSame reward model ({Path(reward_model).name}), {len(PROMPTS)} prompts, {args.answers} answers per step, "
          f"{args.steps} steps, answers up to {args.max_answer_tokens} tokens, temperature {args.temperature}, "
          f"{args.quantization}.")
    print(f"{'method':<6} {'score early':>12} {'score late':>11} {'KL/token late':>14} {'s/step':>8} {'wall s':>8}")
    for r in rows:
        print(f"{r['method']:<6} {r['score_early']:>12.4f} {r['score_late']:>11.4f} {r['kl_per_token_late']:>14.4f} "
              f"{r['seconds_per_step']:>8.2f} {r['wall_seconds']:>8.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
