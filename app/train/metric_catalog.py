"""Which plot each training metric goes on, and in which colour.

TRL's metric keys arrive unchanged; the keys every trainer logs are listed here,
and each method's own (``rewards/chosen`` and ``rewards/rejected`` sharing a
plot, say) come from its spec in the registry (backend.methods). A key it has
never heard of still gets a plot of its own: plots follow the metrics a method
actually logs, not a fixed list.

Colours mean the same thing everywhere: chosen is green, rejected red, the
training loss blue and evaluation amber.
"""

from __future__ import annotations

import zlib
from functools import lru_cache
from typing import Iterable

from backend.core.events import EvalLog, Event, TrainLog
from backend.methods import all_methods
from backend.methods.spec import ROLE_COLOURS
from widgets.series_style import SeriesStyle

# The roles' colours are the registry's (backend.methods.spec.ROLE_COLOURS); evaluation's is the plots' own.
CHOSEN = ROLE_COLOURS["chosen"]
TRAIN = ROLE_COLOURS["train"]
NEUTRAL = ROLE_COLOURS["neutral"]
EVAL = "#d97706"
_OTHER_PALETTE = ("#0f766e", "#9333ea", "#be185d", "#4d7c0f", "#b45309", "#1d4ed8", "#6d28d9")

# Pseudo-keys for the fields a TrainLog carries beside its metrics.
MEMORY_KEY = "peak_memory_mb"
THROUGHPUT_KEY = "tokens_per_second"

# Bookkeeping, not learning signals: a counter, the epoch, end-of-run timings.
IGNORED_KEYS = frozenset({
    "epoch", "step", "num_tokens", "total_flos", "train_runtime", "train_samples_per_second",
    "train_steps_per_second", "train_loss", "runtime", "samples_per_second", "steps_per_second",
    "num_input_tokens_seen",
})

# key: (plot id, plot title, series label, colour, line, order, smooth); what every trainer logs.
_SHARED: dict[str, tuple[str, str, str, str, str, int, bool]] = {
    "loss": ("loss", "Loss", "train", TRAIN, "solid", 10, True),
    "entropy": ("entropy", "Entropy", "entropy", "#a16207", "solid", 85, True),
    "learning_rate": ("learning_rate", "Learning rate", "lr", NEUTRAL, "solid", 90, False),
    "grad_norm": ("grad_norm", "Gradient norm", "grad norm", "#ea580c", "solid", 92, True),
    MEMORY_KEY: ("memory", "Peak memory (MB)", "peak", "#0f766e", "solid", 94, False),
    THROUGHPUT_KEY: ("throughput", "Throughput (tokens/s)", "tokens/s", "#1d4ed8", "solid", 96, True),
}


def _known() -> dict[str, tuple[str, str, str, str, str, int, bool]]:
    known = dict(_SHARED)
    for spec in all_methods():
        for m in spec.metrics:
            if "*" not in m.key:
                known.setdefault(m.key, (m.plot, m.title, m.label, m.colour, m.line_style, m.order, True))
    return known


def _patterns() -> list[tuple[str, str, tuple[str, str, str, str, str, int, bool]]]:
    """Metric keys with one ``*`` stand for a family whose names only the run knows (one key
    per grader, ``rewards/*/mean``): each member joins the family's plot, labelled by what
    the ``*`` matched and coloured apart from its siblings."""
    found = []
    for spec in all_methods():
        for m in spec.metrics:
            if m.key.count("*") == 1:
                prefix, suffix = m.key.split("*")
                found.append((prefix, suffix, (m.plot, m.title, m.label, m.colour, m.line_style, m.order, True)))
    return found


_KNOWN = _known()
_PATTERNS = _patterns()


# Members of a family get these in the order they first appear, so the few graders of a run
# never share a colour (a hash of the name would, one time in seven).
_FAMILY_PALETTE = ("#2563eb", "#ea580c", "#16a34a", "#9333ea", "#db2777", "#0d9488", "#a16207", "#dc2626")
_family_members: dict[str, list[str]] = {}


def _family_style(base: str):
    for prefix, suffix, (plot, title, label, _colour, line, order, smooth) in _PATTERNS:
        if base.startswith(prefix) and base.endswith(suffix) and len(base) > len(prefix) + len(suffix):
            name = base[len(prefix):len(base) - len(suffix)]
            members = _family_members.setdefault(plot, [])
            if name not in members:
                members.append(name)
            colour = _FAMILY_PALETTE[members.index(name) % len(_FAMILY_PALETTE)]
            return (plot, title, label.replace("*", name) if "*" in label else name, colour, line, order, smooth)
    return None


@lru_cache(maxsize=4096)
def style_for_key(key: str) -> SeriesStyle | None:
    """The plot and look of ``key`` for no method in particular; ``eval_`` keys join their training curve."""
    return _style(key, None)


@lru_cache(maxsize=64)
def styles_for_method(method: str):
    """``style_for_key`` for a run of ``method``: the method's own titles and labels win where
    two methods log the same key differently (a good/bad answer, not a chosen/rejected one)."""
    from backend.methods import find_method

    spec = find_method(method)
    own = {m.key: (m.plot, m.title, m.label, m.colour, m.line_style, m.order, True)
           for m in (spec.metrics if spec else ()) if "*" not in m.key}
    if not own:
        return style_for_key
    return lru_cache(maxsize=4096)(lambda key: _style(key, own))


def _style(key: str, own: dict | None) -> SeriesStyle | None:
    is_eval = key.startswith("eval_")
    base = key[5:] if is_eval else key
    if base in IGNORED_KEYS or key in IGNORED_KEYS:
        return None
    known = (own or {}).get(base) or _KNOWN.get(base) or _family_style(base)
    if known is None:
        colour = _OTHER_PALETTE[zlib.crc32(base.encode()) % len(_OTHER_PALETTE)]
        known = (f"other:{base}", base, base.rsplit("/", 1)[-1], colour, "solid", 500, True)
    plot_id, title, label, colour, line, order, smooth = known
    if not is_eval:
        return SeriesStyle(plot_id, title, label, colour, line, False, smooth, order)
    if base == "loss":
        colour = EVAL
    return SeriesStyle(plot_id, title, f"eval {label}" if label != "train" else "eval", colour, "dot", True,
                       False, order)


def points_from_event(event: Event) -> list[tuple[str, int, float]]:
    """(key, step, value) for everything in ``event`` that has a plot."""
    if isinstance(event, TrainLog):
        points = [(k, event.step, v) for k, v in event.metrics.items() if isinstance(v, (int, float))]
        if event.peak_memory_mb is not None:
            points.append((MEMORY_KEY, event.step, event.peak_memory_mb))
        if event.tokens_per_second is not None:
            points.append((THROUGHPUT_KEY, event.step, event.tokens_per_second))
        return [p for p in points if style_for_key(p[0]) is not None]
    if isinstance(event, EvalLog):
        points = [(f"eval_{k}", event.step, v) for k, v in event.metrics.items() if isinstance(v, (int, float))]
        return [p for p in points if style_for_key(p[0]) is not None]
    return []


def collect_points(events: Iterable[Event]) -> dict[str, tuple[list[float], list[float]]]:
    """Every plotted series of a stored run, key -> (steps, values). Pure Python, so a
    long run can be collected off the GUI thread."""
    buffers: dict[str, tuple[list[float], list[float]]] = {}
    for event in events:
        for key, step, value in points_from_event(event):
            xs, ys = buffers.setdefault(key, ([], []))
            xs.append(step)
            ys.append(value)
    return buffers


def feed_points(grid, points: dict[str, tuple[list[float], list[float]]], run: str = "live") -> int:
    count = 0
    for key, (xs, ys) in points.items():
        grid.add_points(key, xs, ys, run=run)
        count += len(xs)
    return count


def feed_events(grid, events: Iterable[Event], run: str = "live") -> int:
    """Replay stored events into a plot grid; returns the number of points added."""
    return feed_points(grid, collect_points(events), run)


# What each method is expected to log, for tests and the empty-state text.
EXPECTED_KEYS = {spec.key: spec.expected_keys for spec in all_methods()}
