"""Token counts from a tokenizer parsed in a helper process.

Parsing a large ``tokenizer.json`` (Gemma 3's 262k-token file: 33 MB, about
1.6 s of CPU) happens inside the ``tokenizers`` library without releasing the
GIL, so every thread of the process stops for that long: in the window, right
after the early data report, which then is not painted until the parse ends.
The window therefore has a helper process parse it on another core and count
tokens for the report. The helper keeps the tokenizer for the next report with
the same model and ends when the window does (its stdin closes). Headless
commands parse in-process (``backend.models.tokenizer_cache``), as before.

Protocol, one JSON document a line: the helper first writes ``{"ready": true}``
or ``{"error": "..."}``; then for each list of texts it reads, it writes the
list of their token counts (without special tokens).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

KEEP_HELPERS = 2  # the current model's tokenizer and the one before it
_lock = threading.Lock()
_helpers: dict[tuple[str, int, int], "TokenCounter"] = {}
_enabled = False


def count_in_helper_processes(enabled: bool = True) -> None:
    """Make reports count tokens in helper processes (the window asks for this at start)."""
    global _enabled
    _enabled = enabled


def helpers_enabled() -> bool:
    return _enabled


class TokenCounterError(RuntimeError):
    """The helper could not parse the tokenizer, or stopped."""


class TokenCounter:
    """One helper process holding one parsed tokenizer."""

    def __init__(self, file: Path) -> None:
        self.file = file
        self._lock = threading.Lock()
        self._process = subprocess.Popen(
            [sys.executable, "-m", "backend.data.token_counts", str(file)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )
        self._ready: bool | None = None
        self._error = ""

    def wait_ready(self) -> None:
        """Block until the tokenizer is parsed; raise TokenCounterError if it could not be."""
        with self._lock:
            if self._ready is None:
                answer = self._read()
                self._ready = isinstance(answer, dict) and answer.get("ready") is True
                if not self._ready:
                    self._error = answer.get("error", "no answer") if isinstance(answer, dict) else "no answer"
            if not self._ready:
                raise TokenCounterError(self._error)

    def counts(self, texts: list[str]) -> list[int]:
        """The token count of each text."""
        self.wait_ready()
        with self._lock:
            try:
                self._process.stdin.write(json.dumps(texts).encode() + b"\n")
                self._process.stdin.flush()
            except OSError as err:
                raise TokenCounterError(f"the token counter stopped ({err})") from err
            answer = self._read()
        if not isinstance(answer, list) or len(answer) != len(texts):
            raise TokenCounterError(f"the token counter answered {str(answer)[:200]}")
        return answer

    def alive(self) -> bool:
        return self._process.poll() is None

    def close(self) -> None:
        if self.alive():
            self._process.stdin.close()  # the helper's read ends; it exits
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def _read(self):
        line = self._process.stdout.readline()
        if not line:
            return {"error": f"the token counter stopped (exit code {self._process.wait()})"}
        return json.loads(line)


def counter_for(file: Path) -> TokenCounter:
    """The helper for this tokenizer file, started if needed, its tokenizer parsed."""
    stat = file.stat()
    key = (str(file.resolve()), stat.st_size, stat.st_mtime_ns)
    with _lock:
        counter = _helpers.get(key)
        if counter is None or not counter.alive():
            counter = _helpers[key] = TokenCounter(file)
            # Older helpers go, beyond the few kept: each holds a parsed vocabulary.
            for old in list(_helpers)[:-KEEP_HELPERS]:
                _helpers.pop(old).close()
    counter.wait_ready()
    return counter


def close_helpers() -> None:
    """End every helper (each also ends by itself when this process does)."""
    with _lock:
        counters = list(_helpers.values())
        _helpers.clear()
    for counter in counters:
        counter.close()


def _serve(path: str) -> int:
    from tokenizers import Tokenizer

    out = sys.stdout.buffer

    def say(value) -> None:
        out.write(json.dumps(value).encode() + b"\n")
        out.flush()

    try:
        tokenizer = Tokenizer.from_file(path)
    except Exception as err:  # the caller turns it into the report's warning
        say({"error": str(err) or type(err).__name__})
        return 1
    say({"ready": True})
    for line in sys.stdin.buffer:
        texts = json.loads(line)
        say([len(encoding.ids) for encoding in tokenizer.encode_batch(texts, add_special_tokens=False)])
    return 0


if __name__ == "__main__":
    sys.exit(_serve(sys.argv[1]))
