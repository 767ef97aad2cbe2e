"""The run's one clock: how long a run has taken, and how to write it.

A run's duration is the wall time its workers spent on it, from the moment a
worker process started (loading the model and data included) to its last
event, evaluations and saving included; a resumed run adds the time of its
earlier attempts. Every event that carries ``elapsed_seconds`` reads this clock,
so the live view, the finish banner, the Runs tab and the CLI show one figure.
"""

from __future__ import annotations

import math
from typing import Iterable


def format_duration(seconds: float | None) -> str:
    """``m:ss`` or ``h:mm:ss``; an unknown duration is a dash."""
    if seconds is None or not math.isfinite(seconds):
        return "–"
    seconds = int(round(max(0.0, seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def run_duration(events: Iterable) -> float | None:
    """Seconds on the run clock at the last of ``events``.

    The clock's zero is read off the newest event that carries ``elapsed_seconds``
    (its time minus its reading), so events without a reading (a failure the
    supervisor recorded for a worker that died) still count up to their own time.
    Folders written before events carried the clock fall back to the time since
    the first event."""
    events = list(events)
    if not events:
        return None
    zero = None
    for event in events:
        elapsed = getattr(event, "elapsed_seconds", None)
        if isinstance(elapsed, (int, float)) and math.isfinite(elapsed):
            zero = event.time - elapsed
    if zero is None:
        zero = events[0].time
    return max(0.0, events[-1].time - zero)


def evaluations_left(step: int, max_steps: int, eval_steps: int, has_eval: bool) -> int:
    """Evaluations still to come once optimizer step ``step`` is logged, counting one
    that runs at that very step (it starts right after the log): one every
    ``eval_steps`` steps (0: none during training), and a final one unless the
    last step had one."""
    if not has_eval or max_steps <= 0:
        return 0
    if eval_steps <= 0:
        return 1
    periodic = max_steps // eval_steps - (max(step, 1) - 1) // eval_steps
    final = 0 if max_steps % eval_steps == 0 else 1
    return max(0, periodic) + final
