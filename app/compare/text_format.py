"""How the Compare views write numbers and turn them into sentences.

One place for it, so the panes, the batch table and the summary say the same
thing the same way. Pure functions; no Qt.
"""

from __future__ import annotations

import math

MINUS = "\u2212"
# Below this implicit reward, the aligned model has no clear preference between two answers.
NEGLIGIBLE_REWARD = 0.01
# Below this change of an answer's summed log-probability (nats), both models find it about equally likely.
NEGLIGIBLE_LOGP_CHANGE = 0.1
# A length ratio this far from 1 is called a verbosity shift.
VERBOSITY_SHIFT = 0.20

FINISH_TEXT = {
    "stop": "ended by the model",
    "length": "hit max new tokens",
    "cancelled": "stopped",
    "error": "failed",
}


def finish_text(reason: str, stop_string: str = "") -> str:
    """How an answer ended, in words; a stop string is named as the user would type it."""
    if reason == "stop" and stop_string:
        shown = stop_string.replace("\n", "\\n")
        return f"ended at \u201c{shown}\u201d (cut)"
    return FINISH_TEXT.get(reason, reason)


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def signed(value: float | None, digits: int = 3) -> str:
    if not _finite(value):
        return "–" if value is None else str(value)
    text = f"{value:+.{digits}f}"
    return text.replace("-", MINUS)


def number(value: float | None, digits: int = 2) -> str:
    if not _finite(value):
        return "–" if value is None else str(value)
    return f"{value:.{digits}f}".replace("-", MINUS)


def percent(value: float | None) -> str:
    return "–" if not _finite(value) else f"{value * 100:.0f}%"


def times(factor: float) -> str:
    if factor >= 1000:
        return "over 1000×"
    if factor >= 10:
        return f"{factor:.0f}×"
    return f"{factor:.1f}×"


def likelihood_sentence(logp_aligned_sum: float | None, logp_base_sum: float | None) -> str:
    """How training changed the likelihood of one answer, in one plain sentence. It holds for any
    method; only some also read the change as an implicit reward."""
    if not (_finite(logp_aligned_sum) and _finite(logp_base_sum)):
        return "Load a run or an adapter to see how alignment changed this answer."
    diff = logp_aligned_sum - logp_base_sum
    if abs(diff) < NEGLIGIBLE_LOGP_CHANGE:
        return "Both models find this answer about equally likely: alignment barely touched it."
    factor = math.exp(min(abs(diff), 50.0))
    if diff > 0:
        return f"The aligned model finds this answer {times(factor)} as likely as the base model does: " \
               "training moved towards it."
    return f"The aligned model finds this answer {times(factor)} less likely than the base model does: " \
           "training moved away from it."


def preference_sentence(base_reward: float | None, aligned_reward: float | None) -> str:
    """Which of the two answers the aligned model prefers, by implicit reward."""
    if base_reward is None or aligned_reward is None:
        return ""
    margin = aligned_reward - base_reward
    if abs(margin) < NEGLIGIBLE_REWARD:
        return "The aligned model has no clear preference between the two answers (implicit reward margin " \
               f"{signed(margin)})."
    if margin > 0:
        return f"The aligned model prefers its own answer to the base model's by {number(margin, 3)} " \
               "(implicit reward margin)."
    return f"The aligned model prefers the base model's answer to its own by {number(-margin, 3)} " \
           "(implicit reward margin)."


def length_change_text(base_mean: float | None, aligned_mean: float | None, ratio: float | None) -> str:
    if base_mean is None or aligned_mean is None:
        return "–"
    text = f"{base_mean:.1f} → {aligned_mean:.1f}"
    if ratio is not None and _finite(ratio):
        text += f" ({signed((ratio - 1) * 100, 0)}%)"
    return text


def is_verbosity_shift(ratio: float | None) -> bool:
    return _finite(ratio) and abs(ratio - 1.0) >= VERBOSITY_SHIFT


def flag(value: bool | None) -> str:
    return "–" if value is None else ("✓" if value else "✗")
