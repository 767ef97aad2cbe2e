"""The numbers that say whether a run learned its preference, computed from scored rows.

Everything here is plain arithmetic over numbers the generation worker already
measured (sums of log-probabilities under the base and the aligned model), so
the window, the exports and the tests share one definition of each figure
without importing torch.

Definitions (log-probabilities are sums over the response tokens given the
prompt, tokenised the way TRL tokenised the training pairs):

- preference accuracy of a model: the fraction of held-out pairs where the
  model gives the chosen response a higher log-likelihood than the rejected one;
- implicit reward of a response: ``beta * (logp_aligned - logp_base)``, the
  reward of the methods whose spec says ``implicit_reward``, with the base model
  (adapter off) as the reference; for other runs it is still a measure of how
  far the adapter moved that response;
- reward accuracy: the fraction of pairs where the chosen response has the
  higher implicit reward (TRL's ``rewards/accuracies`` on the held-out rows);
- length change: the aligned model's mean answer length against the base's.

Ties count as not preferred: a model that cannot tell the two apart has not
learned the preference.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Iterable

DEFAULT_BETA = 0.1


def implicit_reward(beta: float | None, logp_aligned_sum: float | None, logp_base_sum: float | None) -> float | None:
    """None where either side is missing, or ``beta`` is None: the method has no implicit reward."""
    if beta is None or logp_aligned_sum is None or logp_base_sum is None:
        return None
    return beta * (logp_aligned_sum - logp_base_sum)


def mean_logp(logp_sum: float | None, n_tokens: int) -> float | None:
    if logp_sum is None or n_tokens <= 0:
        return None
    return logp_sum / n_tokens


@dataclass
class ResponseScore:
    """One response scored under both models. ``label`` says which response it is
    ("base"/"aligned" for generated answers, "chosen"/"rejected", or the caller's
    label); ``index`` is its position in the request. The aligned fields are None
    when no adapter is loaded."""

    index: int
    label: str
    n_tokens: int
    logp_base_sum: float | None = None
    logp_base_mean: float | None = None
    logp_aligned_sum: float | None = None
    logp_aligned_mean: float | None = None
    implicit_reward: float | None = None

    @classmethod
    def from_sums(cls, index: int, label: str, n_tokens: int, logp_base_sum: float | None,
                  logp_aligned_sum: float | None, beta: float | None) -> "ResponseScore":
        return cls(
            index=index,
            label=label,
            n_tokens=n_tokens,
            logp_base_sum=logp_base_sum,
            logp_base_mean=mean_logp(logp_base_sum, n_tokens),
            logp_aligned_sum=logp_aligned_sum,
            logp_aligned_mean=mean_logp(logp_aligned_sum, n_tokens),
            implicit_reward=implicit_reward(beta, logp_aligned_sum, logp_base_sum),
        )


@dataclass
class CompareRow:
    """One row of the batch table: a prompt, both answers and, for a held-out
    preference pair, how each model scores its chosen and rejected responses.

    ``prompt`` is display text (chat messages flattened to "role: content"
    lines); ``prompt_source`` is the prompt as sent (a string or a message list),
    so the window can re-run one row as a single compare. Answer fields stay
    empty when the batch was asked for scores only; pair fields stay None for a
    row without chosen/rejected responses.
    """

    index: int
    prompt: str
    prompt_source: Any = None
    # Generated answers. *_finish: stop | length | cancelled | error.
    base_answer: str = ""
    aligned_answer: str = ""
    base_tokens: int = 0
    aligned_tokens: int = 0
    base_finish: str = ""
    aligned_finish: str = ""
    # The stop string an answer was cut at, "" when it ended otherwise.
    base_stop_string: str = ""
    aligned_stop_string: str = ""
    # Each answer under both models (mean log-prob per token) and its implicit reward.
    base_answer_logp_base: float | None = None
    base_answer_logp_aligned: float | None = None
    base_answer_reward: float | None = None
    aligned_answer_logp_base: float | None = None
    aligned_answer_logp_aligned: float | None = None
    aligned_answer_reward: float | None = None
    # Held-out preference pair (sums of log-probs over the response tokens).
    chosen: str | None = None
    rejected: str | None = None
    chosen_tokens: int | None = None
    rejected_tokens: int | None = None
    chosen_logp_base: float | None = None
    rejected_logp_base: float | None = None
    chosen_logp_aligned: float | None = None
    rejected_logp_aligned: float | None = None
    chosen_reward: float | None = None
    rejected_reward: float | None = None

    @property
    def has_answers(self) -> bool:
        return bool(self.base_finish or self.aligned_finish)

    @property
    def has_pair(self) -> bool:
        return self.chosen_logp_base is not None and self.rejected_logp_base is not None

    @property
    def base_prefers_chosen(self) -> bool | None:
        return _greater(self.chosen_logp_base, self.rejected_logp_base)

    @property
    def aligned_prefers_chosen(self) -> bool | None:
        return _greater(self.chosen_logp_aligned, self.rejected_logp_aligned)

    @property
    def reward_prefers_chosen(self) -> bool | None:
        return _greater(self.chosen_reward, self.rejected_reward)

    @property
    def length_change(self) -> int | None:
        """Aligned answer length minus base answer length, in tokens."""
        if not (self.base_finish and self.aligned_finish):
            return None
        return self.aligned_tokens - self.base_tokens

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.update(
            base_prefers_chosen=self.base_prefers_chosen,
            aligned_prefers_chosen=self.aligned_prefers_chosen,
            reward_prefers_chosen=self.reward_prefers_chosen,
            length_change=self.length_change,
        )
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CompareRow":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def set_pair_scores(self, chosen: ResponseScore, rejected: ResponseScore) -> None:
        self.chosen_tokens, self.rejected_tokens = chosen.n_tokens, rejected.n_tokens
        self.chosen_logp_base, self.rejected_logp_base = chosen.logp_base_sum, rejected.logp_base_sum
        self.chosen_logp_aligned, self.rejected_logp_aligned = chosen.logp_aligned_sum, rejected.logp_aligned_sum
        self.chosen_reward, self.rejected_reward = chosen.implicit_reward, rejected.implicit_reward

    def set_answer_scores(self, base_answer: ResponseScore | None, aligned_answer: ResponseScore | None) -> None:
        if base_answer is not None:
            self.base_answer_logp_base = base_answer.logp_base_mean
            self.base_answer_logp_aligned = base_answer.logp_aligned_mean
            self.base_answer_reward = base_answer.implicit_reward
        if aligned_answer is not None:
            self.aligned_answer_logp_base = aligned_answer.logp_base_mean
            self.aligned_answer_logp_aligned = aligned_answer.logp_aligned_mean
            self.aligned_answer_reward = aligned_answer.implicit_reward


def _greater(a: float | None, b: float | None) -> bool | None:
    if a is None or b is None or (isinstance(a, float) and math.isnan(a)) or (isinstance(b, float) and math.isnan(b)):
        return None
    return a > b


@dataclass
class PreferenceAccuracy:
    n_pairs: int
    base: float | None  # fraction of pairs where the base model gives chosen the higher log-likelihood
    aligned: float | None  # the same for the aligned model
    reward: float | None  # fraction where chosen has the higher implicit reward
    mean_reward_margin: float | None  # mean of chosen reward - rejected reward
    base_mean_logp_margin: float | None  # mean of logp(chosen) - logp(rejected) under the base model
    aligned_mean_logp_margin: float | None


def preference_accuracy(rows: Iterable[CompareRow]) -> PreferenceAccuracy:
    pairs = [r for r in rows if r.has_pair]
    return PreferenceAccuracy(
        n_pairs=len(pairs),
        base=_fraction(r.base_prefers_chosen for r in pairs),
        aligned=_fraction(r.aligned_prefers_chosen for r in pairs),
        reward=_fraction(r.reward_prefers_chosen for r in pairs),
        mean_reward_margin=_mean(_diff(r.chosen_reward, r.rejected_reward) for r in pairs),
        base_mean_logp_margin=_mean(_diff(r.chosen_logp_base, r.rejected_logp_base) for r in pairs),
        aligned_mean_logp_margin=_mean(_diff(r.chosen_logp_aligned, r.rejected_logp_aligned) for r in pairs),
    )


@dataclass
class LengthChange:
    n_rows: int  # rows with both answers
    base_mean_tokens: float | None
    aligned_mean_tokens: float | None
    ratio: float | None  # aligned / base; 1.2 means answers got 20% longer
    mean_change_tokens: float | None  # aligned - base


def length_change(rows: Iterable[CompareRow]) -> LengthChange:
    both = [r for r in rows if r.base_finish and r.aligned_finish]
    base = _mean(r.base_tokens for r in both)
    aligned = _mean(r.aligned_tokens for r in both)
    ratio = aligned / base if base and aligned is not None else None
    return LengthChange(
        n_rows=len(both),
        base_mean_tokens=base,
        aligned_mean_tokens=aligned,
        ratio=ratio,
        mean_change_tokens=None if base is None else aligned - base,
    )


@dataclass
class CompareSummary:
    """The batch compare's verdict. Fractions are in [0, 1]; None where the batch
    had nothing to compute them from (no pairs, no answers, no adapter)."""

    n_rows: int = 0
    n_pairs: int = 0
    beta: float = DEFAULT_BETA
    # Preference accuracy on the pairs.
    base_accuracy: float | None = None
    aligned_accuracy: float | None = None
    reward_accuracy: float | None = None
    mean_reward_margin: float | None = None
    base_mean_logp_margin: float | None = None
    aligned_mean_logp_margin: float | None = None
    # Length change between the answers.
    n_answered: int = 0
    base_mean_tokens: float | None = None
    aligned_mean_tokens: float | None = None
    length_ratio: float | None = None
    length_change_tokens: float | None = None
    # Implicit reward of the generated answers.
    base_answer_mean_reward: float | None = None
    aligned_answer_mean_reward: float | None = None
    aligned_reward_win_rate: float | None = None  # rows where the aligned answer out-rewards the base answer
    # Context.
    cancelled: bool = False
    seconds: float = 0.0
    source: str = ""  # heldout | rows
    sampling: dict[str, Any] = field(default_factory=dict)
    model_label: str = ""
    adapter: str = ""
    run_dir: str = ""
    method: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CompareSummary":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def headline(self) -> str:
        """One or two sentences for the top of the batch view and the exports."""
        parts = []
        if self.n_pairs:
            kind = "held-out pair" if self.source == "heldout" else "preference pair"
            where = f"On {self.n_pairs} {kind}{'s' if self.n_pairs != 1 else ''}"
            if self.aligned_accuracy is None:
                acc = f"{where}, the base model prefers the chosen response {_pct(self.base_accuracy)} of the time"
            else:
                acc = (f"{where}, the aligned model prefers the chosen response {_pct(self.aligned_accuracy)} "
                       f"of the time (base model: {_pct(self.base_accuracy)})")
            if self.reward_accuracy is not None:
                acc += f"; the implicit reward ranks chosen first in {_pct(self.reward_accuracy)}"
            parts.append(acc + ".")
        if self.length_ratio is not None:
            change = (self.length_ratio - 1.0) * 100
            if abs(change) < 5:
                parts.append(f"Answer length barely changed ({self.base_mean_tokens:.1f} → "
                             f"{self.aligned_mean_tokens:.1f} tokens).")
            else:
                word = "longer" if change > 0 else "shorter"
                parts.append(f"Aligned answers are {abs(change):.0f}% {word} ({self.base_mean_tokens:.1f} → "
                             f"{self.aligned_mean_tokens:.1f} tokens on average).")
        if self.cancelled:
            parts.append("Stopped early; the figures cover the rows finished so far.")
        return " ".join(parts) or "Nothing to summarise yet."


def summarize(rows: list[CompareRow], beta: float = DEFAULT_BETA, **context: Any) -> CompareSummary:
    """The summary of a batch. ``context`` fills the descriptive fields
    (cancelled, seconds, source, sampling, model_label, adapter, run_dir, method)."""
    pref = preference_accuracy(rows)
    lengths = length_change(rows)
    answered = [r for r in rows if r.base_answer_reward is not None and r.aligned_answer_reward is not None]
    return CompareSummary(
        n_rows=len(rows),
        n_pairs=pref.n_pairs,
        beta=beta,
        base_accuracy=pref.base,
        aligned_accuracy=pref.aligned,
        reward_accuracy=pref.reward,
        mean_reward_margin=pref.mean_reward_margin,
        base_mean_logp_margin=pref.base_mean_logp_margin,
        aligned_mean_logp_margin=pref.aligned_mean_logp_margin,
        n_answered=lengths.n_rows,
        base_mean_tokens=lengths.base_mean_tokens,
        aligned_mean_tokens=lengths.aligned_mean_tokens,
        length_ratio=lengths.ratio,
        length_change_tokens=lengths.mean_change_tokens,
        base_answer_mean_reward=_mean(r.base_answer_reward for r in rows),
        aligned_answer_mean_reward=_mean(r.aligned_answer_reward for r in rows),
        aligned_reward_win_rate=_fraction(_greater(r.aligned_answer_reward, r.base_answer_reward)
                                          for r in answered),
        **context,
    )


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _mean(values: Iterable[float | None]) -> float | None:
    kept = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return sum(kept) / len(kept) if kept else None


def _fraction(flags: Iterable[bool | None]) -> float | None:
    kept = [f for f in flags if f is not None]
    return sum(kept) / len(kept) if kept else None


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.0f}%"
