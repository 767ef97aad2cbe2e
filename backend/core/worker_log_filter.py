"""What of a worker's log a user needs to read.

``worker.log`` keeps everything the libraries print. Some of it reads like
failure and is not: bitsandbytes announcing that an optional kernel package is
missing, deprecation notices about a library's next major version, TRL telling
itself which trainer option it set. The window shows the log through this
filter: each known harmless message is replaced, the first time it appears,
by one line that says what it was and why it does not matter; everything else
passes unchanged. The table below is the one place to add such a message.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

NOTE_PREFIX = "[studio] harmless: "


@dataclass(frozen=True)
class HarmlessMessage:
    key: str
    pattern: re.Pattern
    explanation: str
    # Python's warnings module prints the offending source line indented under the
    # warning; that line belongs to the warning and goes with it.
    swallows_indented_lines: bool = False


def _rx(text: str) -> re.Pattern:
    return re.compile(text)


KNOWN_HARMLESS: tuple[HarmlessMessage, ...] = (
    HarmlessMessage(
        "bnb_cpu_kernel",
        _rx(r"Failed to load CPU gemm_4bit_forward from kernels-community"),
        "bitsandbytes looked for an optional fast 4-bit CPU kernel (the `kernels` package, downloaded on "
        "demand) and uses its own built-in one instead. Training is correct, only a little slower on a CPU.",
    ),
    HarmlessMessage(
        "library_deprecation",
        _rx(r"site-packages/.+:\d+: (FutureWarning|DeprecationWarning|PendingDeprecationWarning): "),
        "A library (transformers, TRL, PEFT…) says an option it is given will be renamed in its next "
        "major version. The studio pins the versions it was tested with; nothing to do.",
        swallows_indented_lines=True,
    ),
    HarmlessMessage(
        "remove_unused_columns",
        _rx(r"remove_unused_columns"),
        "TRL set the trainer option remove_unused_columns itself, as this method needs; nothing to do.",
    ),
    HarmlessMessage(
        "use_cache_with_checkpointing",
        _rx(r"`use_cache=True` is incompatible with gradient checkpointing"),
        "Generation caching is switched off while training with gradient checkpointing, as it must be.",
    ),
)


class WorkerLogFilter:
    """Feed it the log's lines in order; it returns the lines to show. It keeps
    state across calls (a warning's source line can arrive in the next chunk)."""

    def __init__(self, table: tuple[HarmlessMessage, ...] = KNOWN_HARMLESS):
        self.table = table
        self.reset()

    def reset(self) -> None:
        self.hidden: Counter[str] = Counter()
        self._swallowing = False

    def feed(self, lines: list[str]) -> list[str]:
        shown: list[str] = []
        for line in lines:
            if self._swallowing and line.startswith("  "):
                continue
            self._swallowing = False
            known = self.match(line)
            if known is None:
                shown.append(line)
                continue
            self._swallowing = known.swallows_indented_lines
            if not self.hidden[known.key]:
                shown.append(NOTE_PREFIX + known.explanation)
            self.hidden[known.key] += 1
        return shown

    def match(self, line: str) -> HarmlessMessage | None:
        for known in self.table:
            if known.pattern.search(line):
                return known
        return None

    def hidden_count(self) -> int:
        return sum(self.hidden.values())


def filter_log_text(text: str) -> str:
    """The whole of a log as the window shows it by default."""
    return "\n".join(WorkerLogFilter().feed(text.splitlines()))
