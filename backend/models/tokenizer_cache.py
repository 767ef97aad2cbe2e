"""Tokenizers loaded from ``tokenizer.json`` files, kept for the life of the process.

A model with a large vocabulary has a large ``tokenizer.json`` (Gemma 3's
262k-token file is 33 MB and takes about a second to parse), and the window
measures the loaded dataset again whenever the model changes. Parsing the same
unchanged file twice is waste, so parsed tokenizers are kept by path, size and
modification time. The ``tokenizers`` library has no such cache of its own
(``transformers``' ``AutoTokenizer`` has none either and would cost a 2 s import).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

# A file this large takes long enough to parse (~0.2 s and up) that the window
# shows a report with estimated lengths first and the measured one after.
SLOW_TOKENIZER_BYTES = 4 * 2**20

_lock = threading.Lock()
_cache: dict[tuple[str, int, int], Any] = {}


def tokenizer_file(path: str | Path) -> Path:
    """The ``tokenizer.json`` of a model folder, or the file itself."""
    file = Path(path).expanduser()
    return file / "tokenizer.json" if file.is_dir() else file


def _key(file: Path) -> tuple[str, int, int]:
    stat = file.stat()
    return (str(file.resolve()), stat.st_size, stat.st_mtime_ns)


def is_loaded(path: str | Path) -> bool:
    try:
        key = _key(tokenizer_file(path))
    except OSError:
        return False
    with _lock:
        return key in _cache


def loading_is_slow(path: str | Path) -> bool:
    """True when parsing this tokenizer would noticeably delay a report."""
    if is_loaded(path):
        return False
    try:
        return tokenizer_file(path).stat().st_size >= SLOW_TOKENIZER_BYTES
    except OSError:
        return False


def load_tokenizer(path: str | Path):
    """The parsed ``tokenizers.Tokenizer``; raises what ``Tokenizer.from_file`` raises."""
    file = tokenizer_file(path)
    key = _key(file)
    with _lock:
        cached = _cache.get(key)
    if cached is not None:
        return cached
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(file))
    with _lock:
        # A file rewritten in place leaves its old entry unreachable: drop it.
        for stale in [k for k in _cache if k[0] == key[0]]:
            del _cache[stale]
        _cache[key] = tokenizer
    return tokenizer
