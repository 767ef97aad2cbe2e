"""A model card (README.md) for an export: what was trained, on what, how it ended.

It is built from the run folder alone (config.yaml, metrics.jsonl) plus an
optional batch-compare summary, so an export made months later from the CLI
says the same as one made from the window. No torch here.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from backend.core.events import RunStarted, WorkerWarning
from backend.runs.folder import current_attempt_events, load_run_config, read_events, summarize_run
from backend.runs.config import to_dict

COMPARE_SUMMARY_FILE = "compare_summary.json"
COMPARE_EXPORT_GLOB = "*compare*.jsonl"

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


def read_compare_summary(path: Path) -> dict:
    """The summary line of a batch-compare JSONL export. Raises ExportError naming the file."""
    from backend.compare.export import read_jsonl_export
    from backend.export.plan import ExportError

    try:
        summary, _rows = read_jsonl_export(path)
    except OSError as exc:
        raise ExportError(f"The compare file {path} cannot be read: {exc.strerror or exc}.") from None
    except (ValueError, TypeError, AttributeError) as exc:
        raise ExportError(f"{path} is not a batch-compare JSON Lines export ({exc}).") from None
    if summary is None:
        raise ExportError(f"{path} has no summary line; export the batch compare as JSON Lines from the Compare "
                          "tab and pick that file.")
    return dataclasses.asdict(summary)


def find_compare_summary(run_dir: Path) -> dict | None:
    """A batch-compare summary kept in the run folder (``compare_summary.json``, or the newest
    ``*compare*.jsonl`` export saved there), if any."""
    try:
        return json.loads((run_dir / COMPARE_SUMMARY_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pass
    exports = sorted(run_dir.glob(COMPARE_EXPORT_GLOB), key=lambda p: p.stat().st_mtime, reverse=True)
    for path in exports:
        try:
            return read_compare_summary(path)
        except ValueError:
            continue
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
