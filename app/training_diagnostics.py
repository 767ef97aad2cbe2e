"""Plain-language notes about a run, derived from its metrics as they arrive.

Each rule looks for a pattern practitioners learn to recognise on loss curves
and says, in words, what it usually means and what to try. The rules only read
numbers, so they are tested without a window and run on replayed runs too.
Which rules watch a run its method's spec says (``MethodSpec.diagnostics``, by
rule code); a run of no known method gets every rule.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from statistics import fmean


@dataclass(frozen=True)
class Diagnosis:
    code: str
    severity: str  # error | warning | info
    title: str
    text: str
    advice: str
    step: int
    stop_recommended: bool = False


# Thresholds, named so that a reader can argue with them.
EARLY_WINDOW = 3  # points averaged for "at the start" and "now"
MIN_POINTS_FOR_TRENDS = 8
CHOSEN_DROP_NATS = 1.0  # log-probs are summed over tokens; one nat is a clear move
CHOSEN_DROP_FRACTION = 0.05
MARGIN_RISE = 0.1
EASY_ACCURACY = 0.99
EASY_RUN_LENGTH = 3  # consecutive logs at ~1.0
FLAT_MIN_STEPS = 20
FLAT_MARGIN = 0.02
RECENT_WINDOW = 10  # points that make up "lately" for the flat-margin rule


@dataclass
class _Track:
    """What the rules need of one metric, in constant memory and time per point."""

    first: list[float] = field(default_factory=list)
    recent: deque = field(default_factory=lambda: deque(maxlen=RECENT_WINDOW))
    count: int = 0
    last: float = math.nan

    def add(self, value: float) -> None:
        self.count += 1
        self.last = value
        if len(self.first) < EARLY_WINDOW:
            self.first.append(value)
        self.recent.append(value)


class TrainingDiagnostics:
    """Feed it every logged step; it returns the notes that are new or changed."""

    def __init__(self, total_steps: int = 0, method: str = "", eval_rows: int = 0):
        self.reset(total_steps, method, eval_rows)

    def reset(self, total_steps: int = 0, method: str = "", eval_rows: int = 0) -> None:
        """``eval_rows``: held-out rows the run evaluates on; advice depends on whether it has any."""
        self.total_steps = total_steps
        self.method = method
        self.eval_rows = eval_rows
        self._tracks: dict[str, _Track] = {}
        self._active: dict[str, Diagnosis] = {}
        self._easy_streak = 0

    def active(self) -> list[Diagnosis]:
        order = {"error": 0, "warning": 1, "info": 2}
        return sorted(self._active.values(), key=lambda d: (order[d.severity], d.step))

    def observe(self, step: int, metrics: dict[str, float],
                evaluation: bool = False) -> tuple[list[Diagnosis], list[str]]:
        """Record one log; returns (new notes, codes of notes that no longer apply)."""
        prefix = "eval_" if evaluation else ""
        for key, value in metrics.items():
            if isinstance(value, (int, float)):
                track = self._tracks.get(prefix + key)
                if track is None:
                    track = self._tracks[prefix + key] = _Track()
                track.add(float(value))
        raised: list[Diagnosis] = []
        cleared: list[str] = []
        for rule in self._rules():
            result = rule(step)
            if result is None:
                continue
            if isinstance(result, str):
                if result in self._active:
                    del self._active[result]
                    cleared.append(result)
                continue
            if result.code not in self._active:
                self._active[result.code] = result
                raised.append(result)
        return raised, cleared

    # ----------------------------------------------------------------- rules
    def _rules(self):
        from backend.methods import find_method

        rules = {"non_finite_loss": self._non_finite_loss, "both_pushed_down": self._both_pushed_down,
                 "too_easy": self._too_easy, "margins_flat": self._margins_flat}
        spec = find_method(self.method)
        return list(rules.values()) if spec is None else [rules[code] for code in spec.diagnostics if code in rules]

    def _track(self, key: str) -> _Track:
        return self._tracks.get(key) or _Track()

    def _non_finite_loss(self, step: int):
        for key in ("loss", "eval_loss", "nll_loss"):
            track = self._track(key)
            if track.count and not math.isfinite(track.last):
                what = "NaN" if math.isnan(track.last) else "infinite"
                name = {"loss": "training loss", "eval_loss": "evaluation loss", "nll_loss": "NLL loss"}[key]
                return Diagnosis(
                    "non_finite_loss", "error", f"The {name} is {what}",
                    f"At step {step} the {name} became {what}; the weights are now garbage, so "
                    "training is stopped. It comes from examples with an empty or cut answer, "
                    "16-bit overflow, or a learning rate that is too high.",
                    "Read the failure message first: it says what the batches of that step held (empty "
                    "or cut answers, uneven lengths, fp16). Only if they looked ordinary, lower the "
                    "learning rate (divide it by 10) and keep the max gradient norm at 1.0.",
                    step, stop_recommended=True,
                )
        return None

    def _both_pushed_down(self, step: int):
        chosen = self._track("logps/chosen")
        margins = self._track("rewards/margins")
        code = "both_pushed_down"
        if chosen.count < MIN_POINTS_FOR_TRENDS or margins.count < MIN_POINTS_FOR_TRENDS:
            return None
        late_c, late_m = list(chosen.recent)[-EARLY_WINDOW:], list(margins.recent)[-EARLY_WINDOW:]
        if not all(math.isfinite(v) for v in chosen.first + margins.first + late_c + late_m):
            return None
        start_c, now_c = fmean(chosen.first), fmean(late_c)
        start_m, now_m = fmean(margins.first), fmean(late_m)
        drop = start_c - now_c
        falling = drop > max(CHOSEN_DROP_NATS, CHOSEN_DROP_FRACTION * abs(start_c))
        rising = now_m - start_m > MARGIN_RISE
        if falling and rising:
            return Diagnosis(
                code, "warning", "Chosen answers are losing probability too",
                f"The margin grew from {start_m:.2f} to {now_m:.2f}, but the log-probability of the chosen "
                f"answers fell from {start_c:.1f} to {now_c:.1f}: the model pushes both answers down, the "
                "rejected ones faster. It can win the preference while getting worse at writing good answers.",
                "Try a lower learning rate or a higher beta, fewer epochs, or a method that also trains on the "
                "chosen answers (an NLL term keeps them likely). Check the outputs in the Compare tab before trusting this run.",
                step,
            )
        return code if code in self._active and not falling else None

    def _too_easy(self, step: int):
        accuracies = self._track("rewards/accuracies")
        if not accuracies.count:
            return None
        self._easy_streak = self._easy_streak + 1 if accuracies.last >= EASY_ACCURACY else 0
        horizon = max(10, int(0.15 * self.total_steps)) if self.total_steps else 10
        if self._easy_streak >= EASY_RUN_LENGTH and step <= horizon and accuracies.count <= horizon:
            if self.eval_rows:
                watch = (f"Watch the evaluation accuracy and loss on the {self.eval_rows:,} held-out rows (the "
                         "dotted points): if they lag far behind")
            else:
                watch = ("Hold out data (held-out fraction > 0) and watch the evaluation accuracy and loss: "
                         "if they lag far behind")
            return Diagnosis(
                "too_easy", "info", "Reward accuracy hit 1.0 almost at once",
                f"By step {step} the model already ranks every chosen answer above its rejected one. "
                "Either the pairs are too easy to tell apart (the rejected answers differ in an obvious way, "
                "such as length or format), or the model is memorising a small dataset.",
                "Look at the data report's length ratio and at a few pairs in the preview; harder pairs teach "
                f"more. {watch}, train fewer steps or lower the learning rate.",
                step,
            )
        return None

    def _margins_flat(self, step: int):
        track = self._track("rewards/margins")
        code = "margins_flat"
        enough_steps = max(FLAT_MIN_STEPS, int(0.2 * self.total_steps))
        if step < enough_steps or track.count < EARLY_WINDOW + RECENT_WINDOW:
            return None
        recent_values = [v for v in track.recent if math.isfinite(v)]
        start_values = [v for v in track.first if math.isfinite(v)]
        if not recent_values or not start_values:
            return None
        recent = fmean(recent_values)
        start = fmean(start_values)
        flat = abs(recent - start) < FLAT_MARGIN and abs(recent) < 2.5 * FLAT_MARGIN
        if flat:
            return Diagnosis(
                code, "warning", "Reward margins are not moving",
                f"After {step} steps the reward margin is still {recent:.3f}: the model has not started to "
                "prefer the chosen answers.",
                "Raise the learning rate (preference tuning with LoRA usually needs 5e-6 to 5e-5; with very "
                "small batches, more) or raise beta. Check that warm-up has not eaten most of the run, and that "
                "chosen and rejected really differ in the preview.",
                step,
            )
        return code if code in self._active else None
