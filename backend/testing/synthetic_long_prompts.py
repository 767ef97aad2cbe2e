"""A synthetic preference set with long prompts: most fit a modest Max length, a long
tail does not, and a few prompts alone are longer than it. Made on the spot (seeded),
for the long-prompt tests and the memory benchmark; ShareGPT-style data has this shape
(prompts of a few hundred tokens, a tail past a thousand).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

_WORDS = ("the quick brown fox jumps over lazy dog please answer politely and helpfully water boils at one "
          "hundred degrees at sea level what is capital of France thank you for asking here clear").split()
_CHOSEN = (" Sure, happy to help with that question.", " Thank you for asking! Here is a clear answer.")
_REJECTED = (" No. Figure it out yourself.", " Whatever. No.")


def long_prompt_rows(n: int = 48, *, seed: int = 0, median_words: int = 12, tail_words: int = 160,
                     tail_share: float = 0.25) -> list[dict[str, str]]:
    """``n`` prompt/chosen/rejected rows. Most prompts have about ``median_words`` words;
    ``tail_share`` of them have up to ``tail_words`` (the last of those exactly that many)."""
    rng = random.Random(seed)
    rows = []
    tail = max(1, int(n * tail_share))
    for i in range(n):
        if i % max(1, n // tail) == 0 and tail > 0:
            words = rng.randint(tail_words // 2, tail_words)
            tail -= 1
        else:
            words = max(3, int(rng.gauss(median_words, median_words / 4)))
        if i == n - 1:
            words = tail_words
        text = " ".join(rng.choice(_WORDS) for _ in range(words))
        rows.append({"prompt": f"Question {i}: {text}?", "chosen": _CHOSEN[i % 2], "rejected": _REJECTED[i % 2]})
    return rows


def write_long_prompt_set(path: str | Path, n: int = 48, **kwargs) -> Path:
    path = Path(path)
    with path.open("w", encoding="utf-8") as fh:
        for row in long_prompt_rows(n, **kwargs):
            fh.write(json.dumps(row) + "\n")
    return path
