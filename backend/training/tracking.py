"""Experiment trackers beside ``metrics.jsonl``: TensorBoard, Weights & Biases, Trackio, MLflow.

The metrics reach them through TRL's own reporting (``report_to``), so every key
TRL logs arrives unchanged. A tracker that was chosen but is not installed is
refused before the run, naming the package to install. Torch-free: only
``importlib.util.find_spec`` looks for the packages.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

TENSORBOARD_DIR = "tensorboard"

# Tracker name (as transformers' report_to spells it) -> (import name(s), pip package, what it is).
TRACKERS = {
    "tensorboard": (("tensorboard", "tensorboardX"), "tensorboard", "TensorBoard event files in the run folder"),
    "wandb": (("wandb",), "wandb", "Weights & Biases (needs `wandb login`, or WANDB_MODE=offline)"),
    "trackio": (("trackio",), "trackio", "Trackio, a local dashboard"),
    "mlflow": (("mlflow",), "mlflow", "MLflow (MLFLOW_TRACKING_URI, or ./mlruns)"),
}
AUTO, NONE = "", "none"


def installed(tracker: str) -> bool:
    modules = TRACKERS[tracker][0]
    return any(importlib.util.find_spec(m) is not None for m in modules)


def chosen_trackers(report_to: str) -> list[str]:
    """The names in a ``report_to`` setting, in order, without repeats."""
    text = (report_to or "").strip().lower()
    if text == NONE:
        return []
    names = [n.strip() for n in text.replace(";", ",").split(",") if n.strip()]
    return list(dict.fromkeys(names))


def tracker_problems(report_to: str) -> list[tuple[str, str]]:
    """(field, message) for every unknown or missing tracker in ``report_to``."""
    problems = []
    for name in chosen_trackers(report_to):
        if name not in TRACKERS:
            problems.append(("report_to", f"Trackers: {name!r} is not a tracker AlignStudio knows; choose from "
                                          f"{', '.join(TRACKERS)}, or none"))
        elif not installed(name):
            problems.append(("report_to", f"Trackers: {name} was chosen but is not installed; install it with "
                                          f"`pip install {TRACKERS[name][1]}`, or leave it out"))
    return problems


def resolved_trackers(report_to: str) -> list[str]:
    """What a run reports to: the chosen trackers, or, when none were named, TensorBoard if it is installed."""
    if (report_to or "").strip() == AUTO:
        return ["tensorboard"] if installed("tensorboard") else []
    return [n for n in chosen_trackers(report_to) if n in TRACKERS]


def tensorboard_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / TENSORBOARD_DIR


def tensorboard_command(run_dir: str | Path, port: int) -> list[str] | None:
    """The command that opens TensorBoard on a run, or None when TensorBoard is not installed."""
    if importlib.util.find_spec("tensorboard") is None:
        return None
    import sys

    return [sys.executable, "-m", "tensorboard.main", "--logdir", str(tensorboard_dir(run_dir)), "--port", str(port)]
