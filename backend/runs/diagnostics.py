"""Plain-language notes about a run, derived from its metrics as they arrive.

Each rule looks for a pattern practitioners learn to recognise on loss curves
and says, in words, what it usually means and what to try. The rules only read
numbers, so they are tested without a window and run on replayed runs too; the
window's notes panel and ``alignstudio train`` show the same notes.
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
# RL (sampled completions scored by graders)
HISTORY = 60  # points kept per metric for trends over a run
ZERO_STD_FRACTION = 0.8  # share of groups whose completions all scored the same
ZERO_STD_CLEAR = 0.6
ZERO_STD_POINTS = 3  # logs whose mean share decides
SCORE_FLOOR = 0.02  # a grader mean this close to 0 (or 1) means "almost nothing (everything) passes"
LENGTH_HACK_CORRELATION = 0.8
LENGTH_HACK_GROWTH = 0.3  # completions 30% longer than at the start
CLIPPED_RATIO = 0.5
CLIPPED_CLEAR = 0.3
KL_RUNAWAY = 1.0  # nats per token; a group-sampling RL run that learns without drifting stays well under 0.1
KL_GROWTH = 5.0  # recent KL this many times its early level...
KL_GROWTH_FLOOR = 0.2  # ...and above this
CONSTANT_GRADER_POINTS = 10  # a strict grader often scores 0 for the first steps; that is not "never"
# Policy/value RL with a reward model (KL per answer, a value function)
VALUE_LOSS_GROWTH = 10.0  # recent value loss this many times its lowest...
VALUE_LOSS_FLOOR = 1.0  # ...and above this
ENTROPY_COLLAPSE = 0.5  # answers' entropy fell to half its start while the score rose
CONSTANT_TOLERANCE = 1e-6


@dataclass
class _Track:
    """What the rules need of one metric, in constant memory and time per point."""

    first: list[float] = field(default_factory=list)
    recent: deque = field(default_factory=lambda: deque(maxlen=RECENT_WINDOW))
    history: deque = field(default_factory=lambda: deque(maxlen=HISTORY))
    count: int = 0
    last: float = math.nan
    low: float = math.inf  # lowest and highest value ever seen
    high: float = -math.inf

    def add(self, value: float) -> None:
        self.count += 1
        self.last = value
        if len(self.first) < EARLY_WINDOW:
            self.first.append(value)
        self.recent.append(value)
        self.history.append(value)
        if math.isfinite(value):
            self.low, self.high = min(self.low, value), max(self.high, value)

    def latest(self, n: int) -> list[float]:
        return [v for v in list(self.recent)[-n:] if math.isfinite(v)]


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
            outcome = rule(step)
            # A rule about each of several things (every grader) returns a list.
            for result in outcome if isinstance(outcome, list) else [outcome]:
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
                 "too_easy": self._too_easy, "margins_flat": self._margins_flat,
                 "rewards_all_equal": self._rewards_all_equal, "length_hacking": self._length_hacking,
                 "completions_clipped": self._completions_clipped, "kl_runaway": self._kl_runaway,
                 "grader_constant": self._graders_constant, "answer_kl_runaway": self._answer_kl_runaway,
                 "value_loss_diverging": self._value_loss_diverging, "entropy_collapse": self._entropy_collapse}
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

    # -------------------------------------------------------- RL rules
    def _grader_names(self) -> list[str]:
        """Graders the run logs (TRL: ``rewards/<name>/mean``)."""
        return [key[len("rewards/"):-len("/mean")] for key in self._tracks
                if key.startswith("rewards/") and key.endswith("/mean") and key.count("/") >= 2]

    def _rewards_all_equal(self, step: int):
        track = self._track("frac_reward_zero_std")
        code = "rewards_all_equal"
        if not track.count or not math.isfinite(track.last):
            return None
        # The share swings from log to log (a batch holds few groups): its recent mean decides.
        recent = track.latest(ZERO_STD_POINTS)
        share = fmean(recent) if recent else 0.0
        if code in self._active:
            return code if share < ZERO_STD_CLEAR else None
        if len(recent) < ZERO_STD_POINTS or share < ZERO_STD_FRACTION:
            return None
        means = {name: self._track(f"rewards/{name}/mean").last for name in self._grader_names()}
        means = {name: v for name, v in means.items() if math.isfinite(v)}
        failing = [n for n, v in means.items() if abs(v) <= SCORE_FLOOR]
        passing = [n for n, v in means.items() if abs(v - 1.0) <= SCORE_FLOOR]
        if means and len(failing) == len(means):
            why = (f"Every completion scores 0 with {_names(failing)}: the graders are too strict for what this "
                   "model writes now, so no completion is better than its neighbours.")
            advice = ("Give partial credit (a format grader beside the exact answer, a numeric match with a "
                      "tolerance, a marker the model already uses), use easier prompts, or raise the max "
                      "completion length if answers are cut before they end. Try the graders on a few "
                      "completions before the next run.")
        elif means and len(passing) == len(means):
            why = (f"Every completion scores 1 with {_names(passing)}: the graders are too lenient, everything "
                   "passes, so nothing is better than anything else.")
            advice = ("Make the graders stricter (an exact answer instead of a format check, a tighter pattern "
                      "or length target), add a grader that tells good from merely valid, or use harder prompts.")
        else:
            why = ("Within most groups every completion got the same reward, so their advantages are zero and "
                   "those prompts teach nothing.")
            advice = ("Sample more variety: more completions per prompt, a higher temperature; or add a grader "
                      "with graded scores (partial credit) instead of pass/fail only. The sample table marks "
                      "such groups with '='.")
        return Diagnosis(code, "warning", "Most groups got one reward for all their completions",
                         f"At step {step}, {share:.0%} of the groups had no spread in reward. {why}", advice, step)

    def _length_hacking(self, step: int):
        reward = self._track("reward")
        length = self._track("completions/mean_length")
        code = "length_hacking"
        pairs = [(r, n) for r, n in zip(list(reward.history)[-length.count:], list(length.history)[-reward.count:])
                 if math.isfinite(r) and math.isfinite(n)]
        if len(pairs) < MIN_POINTS_FOR_TRENDS:
            return None
        rewards, lengths = [p[0] for p in pairs], [p[1] for p in pairs]
        start_len, now_len = fmean(lengths[:EARLY_WINDOW]), fmean(lengths[-EARLY_WINDOW:])
        start_r, now_r = fmean(rewards[:EARLY_WINDOW]), fmean(rewards[-EARLY_WINDOW:])
        correlation = _correlation(rewards, lengths)
        longer = start_len > 0 and now_len > (1 + LENGTH_HACK_GROWTH) * start_len
        if longer and now_r > start_r and correlation >= LENGTH_HACK_CORRELATION:
            return Diagnosis(
                code, "warning", "Reward is rising with completion length",
                f"Completions grew from {start_len:.0f} to {now_len:.0f} tokens on average while the reward rose "
                f"from {start_r:.3g} to {now_r:.3g}, in step (correlation {correlation:.2f}). The model may be "
                "learning that longer answers score better rather than that better answers do.",
                "Read a few long completions in the sample table. If length is what pays, add a length target "
                "grader (or lower the weight of the grader that rewards it), use the dr_grpo loss, which does "
                "not favour long completions, and mask truncated completions.",
                step)
        return code if code in self._active and not longer else None

    def _completions_clipped(self, step: int):
        track = self._track("completions/clipped_ratio")
        code = "completions_clipped"
        recent = track.latest(EARLY_WINDOW)
        if len(recent) < EARLY_WINDOW:
            return None
        share = fmean(recent)
        if share >= CLIPPED_RATIO:
            return Diagnosis(
                code, "warning", "Most completions are cut at the max completion length",
                f"Over the last {len(recent)} logs {share:.0%} of the completions hit the max completion length "
                "before they ended: a grader looking for a final answer rarely sees one, and cut answers are "
                "graded as they stand.",
                "Raise the max completion length (memory grows with it), ask for short answers in the prompt or "
                "the system prompt, or turn on masking of truncated completions so cut ones do not count in the "
                "loss.",
                step)
        return code if code in self._active and share < CLIPPED_CLEAR else None

    def _kl_runaway(self, step: int):
        track = self._track("kl")
        code = "kl_runaway"
        recent = track.latest(EARLY_WINDOW)
        if track.count < MIN_POINTS_FOR_TRENDS or len(recent) < EARLY_WINDOW:
            return None
        start = fmean([v for v in track.first if math.isfinite(v)] or [0.0])
        now = fmean(recent)
        grew = now > KL_GROWTH_FLOOR and now > KL_GROWTH * max(start, 1e-9)
        if now > KL_RUNAWAY or grew:
            return Diagnosis(
                code, "warning", "The policy is drifting fast from the reference (KL)",
                f"The KL to the reference model is {now:.3g} per token now, against {start:.3g} at the start. "
                "A KL that keeps climbing usually means the model found something the graders over-reward and is "
                "leaving fluent text behind to chase it.",
                "Read the latest samples. Lower the learning rate, raise beta (the KL weight), use fewer "
                "iterations per generation, or stop and keep an earlier checkpoint.",
                step)
        return code if code in self._active and now < KL_GROWTH_FLOOR else None

    def _answer_kl_runaway(self, step: int):
        """The KL rule for methods that log it summed per answer (objective/kl): per token it is
        that sum over the mean answer length."""
        kl, length = self._track("objective/kl"), self._track("completions/mean_length")
        code = "answer_kl_runaway"
        n = min(len(kl.history), len(length.history))
        per_token = [k / max(1.0, t) for k, t in zip(list(kl.history)[-n:], list(length.history)[-n:]) if n]
        if kl.count < MIN_POINTS_FOR_TRENDS or len(per_token) < MIN_POINTS_FOR_TRENDS:
            return None
        start, now = fmean(per_token[:EARLY_WINDOW]), fmean(per_token[-EARLY_WINDOW:])
        grew = now > KL_GROWTH_FLOOR and now > KL_GROWTH * max(start, 1e-9)
        if now > KL_RUNAWAY or grew:
            return Diagnosis(
                code, "warning", "The policy is drifting fast from the reference (KL)",
                f"The KL to the reference is {now:.3g} per answer token now ({kl.last:.3g} per answer), against "
                f"{start:.3g} per token at the start. The penalty no longer holds the policy: it is chasing "
                "something the reward model over-scores.",
                "Read the latest samples. Raise the KL coefficient, lower the learning rate or the update epochs, "
                "or stop and keep an earlier checkpoint.",
                step)
        return code if code in self._active and now < KL_GROWTH_FLOOR else None

    def _value_loss_diverging(self, step: int):
        track = self._track("loss/value_avg")
        code = "value_loss_diverging"
        recent = track.latest(EARLY_WINDOW)
        if track.count < MIN_POINTS_FOR_TRENDS or len(recent) < EARLY_WINDOW:
            return None
        now = fmean(recent)
        if now > VALUE_LOSS_FLOOR and now > VALUE_LOSS_GROWTH * max(track.low, 1e-9):
            return Diagnosis(
                code, "warning", "The value loss is growing",
                f"The value loss is {now:.3g} now, against {track.low:.3g} at its lowest. The value function no "
                "longer predicts the returns, so the advantages the policy learns from are noise.",
                "Lower the learning rate; lower the value clip range or the value loss weight; turn on Whiten "
                "rewards when the reward model's scores are large.",
                step)
        return code if code in self._active and now < VALUE_LOSS_FLOOR else None

    def _entropy_collapse(self, step: int):
        entropy, score = self._track("objective/entropy"), self._track("objective/scores")
        code = "entropy_collapse"
        if entropy.count < MIN_POINTS_FOR_TRENDS or score.count < MIN_POINTS_FOR_TRENDS:
            return None
        start, now = fmean(entropy.first), fmean(entropy.latest(EARLY_WINDOW) or [entropy.last])
        collapsed = start > 0 and now < ENTROPY_COLLAPSE * start
        if collapsed and fmean(score.latest(EARLY_WINDOW) or [score.last]) > fmean(score.first):
            return Diagnosis(
                code, "warning", "Scores rise while the answers grow uniform",
                f"The answers' entropy fell from {start:.3g} to {now:.3g} while the reward model's score rose: "
                "the policy may be repeating one phrasing the reward model likes rather than answering better.",
                "Read the latest samples. If they repeat themselves, raise the KL coefficient or the temperature, "
                "or stop and keep an earlier checkpoint.",
                step)
        return code if code in self._active and not collapsed else None

    def _graders_constant(self, step: int):
        results = []
        for name in self._grader_names():
            track = self._track(f"rewards/{name}/mean")
            spread = self._track(f"rewards/{name}/std")
            code = f"grader_constant:{name}"
            values = [v for v in track.history if math.isfinite(v)]
            spreads = [v for v in spread.history if math.isfinite(v)]
            if len(values) < CONSTANT_GRADER_POINTS:
                continue
            constant = (max(values) - min(values) <= CONSTANT_TOLERANCE
                        and (not spreads or max(spreads) <= CONSTANT_TOLERANCE))
            if constant and len(values) == track.count:
                results.append(Diagnosis(
                    code, "warning", f"The grader '{name}' gives every completion the same score",
                    f"In all {track.count} logged steps '{name}' scored every completion {values[-1]:.3g}: it adds "
                    "nothing to the learning signal, and its weight only shifts every reward alike.",
                    "Check its settings (the reference column it reads, the pattern, the answer marker) against a "
                    "few rows with Try the graders; remove it if it cannot tell completions apart.",
                    step))
            elif not constant:
                results.append(code if code in self._active else None)
        return results


def _names(names: list[str]) -> str:
    quoted = [f"'{n}'" for n in names]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]


def _correlation(xs: list[float], ys: list[float]) -> float:
    mx, my = fmean(xs), fmean(ys)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else 0.0
