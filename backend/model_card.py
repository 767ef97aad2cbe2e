"""A model card (README.md) for an export: what was trained, on what, how it ended.

It is built from the run folder alone (config.yaml, metrics.jsonl) plus an
optional batch-compare summary, so an export made months later from the CLI
says the same as one made from the window. No torch here.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from backend.events import RunStarted, WorkerWarning
from backend.run_folder import current_attempt_events, load_run_config, read_events, summarize_run
from backend.run_config import to_dict

COMPARE_SUMMARY_FILE = "compare_summary.json"

_COMPARE_LINES = (
    ("base_accuracy", "Preference accuracy, base model", "pct"),
    ("aligned_accuracy", "Preference accuracy, aligned model", "pct"),
    ("reward_accuracy", "Implicit-reward accuracy", "pct"),
    ("mean_reward_margin", "Mean implicit-reward margin", "num"),
    ("length_ratio", "Answer length, aligned / base", "num"),
    ("aligned_reward_win_rate", "Aligned answer out-rewards the base answer", "pct"),
    ("n_pairs", "Pairs compared", "int"),
)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if not math.isfinite(value) else f"{value:.4g}"
    return str(value)


def find_compare_summary(run_dir: Path) -> dict | None:
    """A batch-compare summary saved in the run folder, if any."""
    path = run_dir / COMPARE_SUMMARY_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def render_model_card(run_dir: str | Path, export_format: str, quantization: str = "",
                      checks: list[dict] | None = None, compare_summary: dict | None = None) -> str:
    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    events = current_attempt_events(read_events(run_dir))
    summary = summarize_run(run_dir, events)
    started = next((e for e in reversed(events) if isinstance(e, RunStarted)), None)
    warnings = [e for e in events if isinstance(e, WorkerWarning)]
    compare_summary = compare_summary if compare_summary is not None else find_compare_summary(run_dir)
    base = cfg.model or "embedded Gemma 3 270M (google/gemma-3-270m)"
    library = "peft" if export_format == "adapter" else ("gguf" if export_format in ("gguf", "ollama") else
                                                         "transformers")
    lines = [
        "---",
        f"base_model: {json.dumps(base)}",
        f"library_name: {library}",
        "tags:",
        "- alignstudio",
        "- trl",
        f"- {cfg.method}",
        "- lora",
        "---",
        "",
        f"# {run_dir.name}",
        "",
        f"{cfg.method.upper()} fine-tune of {base} with LoRA (r={cfg.lora_r}, alpha={cfg.lora_alpha}) on a "
        f"{cfg.quantization} base, trained with AlignStudio (TRL). Exported as **{export_format}**"
        + (f" at **{quantization}**." if quantization else "."),
        "",
        "## Training data",
        "",
        f"- File: `{Path(cfg.data_path).name if cfg.data_path else 'demo data'}`",
    ]
    if started is not None:
        lines += [f"- Rows used for training: {started.train_rows}; held out for evaluation: {started.eval_rows}"]
    for w in warnings:
        lines.append(f"- Note from the run: {w.message}")
    lines += ["", "## Result", "", f"- Status: {summary.status}, step {summary.step} of {summary.total_steps}"]
    for key, value in sorted(summary.final_metrics.items()):
        lines.append(f"- Final `{key}`: {_fmt(value)}")
    for key, value in sorted(summary.eval_metrics.items()):
        lines.append(f"- Held-out `{key}`: {_fmt(value)}")
    lines += ["", "## Compare (base vs aligned)", ""]
    if compare_summary:
        for key, label, kind in _COMPARE_LINES:
            value = compare_summary.get(key)
            if value is None:
                continue
            text = f"{value:.1%}" if kind == "pct" else _fmt(value)
            lines.append(f"- {label}: {text}")
    else:
        lines.append("No batch compare was saved with this run.")
    if checks:
        lines += ["", "## Export checks", ""]
        for check in checks:
            lines.append(f"- {check['name']}: {check['verdict']}")
    lines += ["", "## Training configuration", "", "```yaml"]
    for key, value in to_dict(cfg).items():
        lines.append(f"{key}: {json.dumps(value)}")
    lines += ["```", ""]
    return "\n".join(lines)
