"""The completions an RL trainer sampled, turned into a SampleBatch the window can show.

TRL's group-sampling RL trainers keep the last generation batch in ``trainer._logs``
(prompts, completions, each reward function's scores, advantages), sized to one
generation batch, whether or not completion logging is on. That private
structure is read defensively: if a TRL release renames it, the run goes on and
only the sample table stays empty (one warning says so). Torch-free.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

from backend.core.events import SampleBatch

# At most this many rows travel per batch (whole groups, the latest ones): the
# window shows recent samples, and metrics.jsonl must not grow by megabytes a step.
MAX_SAMPLE_ROWS = 32
PROMPT_CHARS = 600
COMPLETION_CHARS = 1500


def cut_middle(text: str, limit: int) -> str:
    """``text`` within ``limit`` characters: its start and end, which hold the question
    and the final answer, with the middle replaced by a note of how much was cut."""
    if len(text) <= limit:
        return text
    head = (limit * 2) // 3
    tail = limit - head
    return f"{text[:head]} [… {len(text) - head - tail:,} characters cut …] {text[-tail:]}"


def render_text(value: Any) -> str:
    """A prompt or completion as plain text: a string as is, chat messages as 'role: content'
    lines (a completion that is one assistant message as its content)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return _content_text(value.get("content", ""))
    if isinstance(value, (list, tuple)):
        messages = [m for m in value if isinstance(m, dict)]
        if len(messages) == 1 and messages[0].get("role") == "assistant":
            return _content_text(messages[0].get("content", ""))
        if messages:
            return "\n".join(f"{m.get('role', '?')}: {_content_text(m.get('content', ''))}" for m in messages)
    return str(value)


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # multimodal parts: the text ones
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
    return str(content)


def _number(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number


class SampleCapture:
    """Reads the trainer's last generation batch at each log and builds a SampleBatch,
    once per new batch (a batch serves several optimizer steps when
    ``steps_per_generation`` > 1; it is sent once)."""

    def __init__(self, trainer, max_rows: int = MAX_SAMPLE_ROWS):
        self.trainer = trainer
        self.max_rows = max_rows
        self._last_signature = ""
        self.broken = ""  # why samples cannot be read from this trainer, once known

    def collect(self, step: int) -> SampleBatch | None:
        if self.broken:
            return None
        try:
            logs = self.trainer._logs
            prompts = list(logs["prompt"])
            completions = list(logs["completion"])
            rewards = {str(name): list(values) for name, values in logs["rewards"].items()}
            advantages = list(logs["advantages"])
        except (AttributeError, KeyError, TypeError) as exc:
            self.broken = f"this TRL version keeps no readable sample log ({exc.__class__.__name__}: {exc})"
            return None
        if not completions:
            return None
        signature = self._signature(completions, advantages)
        if signature == self._last_signature:
            return None
        self._last_signature = signature
        names = list(getattr(self.trainer, "reward_func_names", None) or rewards)
        weights = self._weights(len(names))
        group_size = max(1, int(getattr(self.trainer, "num_generations", 1) or 1))
        total = len(completions)
        keep = self._rows_to_keep(total, group_size)
        rows = []
        for i in range(total - keep, total):
            scores = {name: _number(rewards[name][i]) if i < len(rewards.get(name, ())) else math.nan
                      for name in names}
            finite = [(weights[j], v) for j, v in enumerate(scores.values()) if math.isfinite(v)]
            reward = sum(w * v for w, v in finite) if finite else math.nan
            rows.append({
                "prompt": cut_middle(render_text(prompts[i]) if i < len(prompts) else "", PROMPT_CHARS),
                "completion": cut_middle(render_text(completions[i]), COMPLETION_CHARS),
                "scores": scores,
                "reward": reward,
                "advantage": _number(advantages[i]) if i < len(advantages) else math.nan,
                "group": i // group_size,
            })
        return SampleBatch(step=int(step), graders=names, rows=rows, total_rows=total)

    def _rows_to_keep(self, total: int, group_size: int) -> int:
        # Whole groups only: a group cut in half hides which of its completions won.
        groups = max(1, self.max_rows // group_size)
        return min(total, groups * group_size)

    def _weights(self, count: int) -> list[float]:
        weights = getattr(self.trainer, "reward_weights", None)
        try:
            values = [float(w) for w in (weights.tolist() if hasattr(weights, "tolist") else weights)]
        except (TypeError, ValueError):
            values = []
        return values if len(values) == count else [1.0] * count

    @staticmethod
    def _signature(completions: list, advantages: list) -> str:
        digest = hashlib.blake2b(digest_size=12)
        for text in completions:
            digest.update(render_text(text).encode("utf-8", "replace"))
            digest.update(b"\0")
        digest.update(repr(advantages).encode())
        return digest.hexdigest()
