"""Hub dataset downloads on the command line, said as the window's Data panel says them.

A terminal gets one line that keeps being rewritten; a log file or pipe gets a line when
a file starts or ends and otherwise every few seconds, so a long download neither looks
hung nor fills the log with hundreds of lines."""

from __future__ import annotations

import contextlib
import sys
import time

from backend.data.hub import DownloadProgress, reporting_downloads

# Between two lines of a download that is not on a terminal, unless a file started or ended.
LOG_LINE_EVERY_S = 5.0


class DownloadLines:
    """Prints each DownloadProgress it is handed to ``stream`` (see the module's docstring)."""

    def __init__(self, stream=None, terminal: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.terminal = self.stream.isatty() if terminal is None else terminal
        self._last_at = 0.0
        self._last_stage: tuple[str, int, bool] | None = None
        self.open_line = False  # a terminal line written without its newline yet
        self.heard = False  # a download has been reported

    def __call__(self, step: DownloadProgress) -> None:
        self.heard = True
        stage = (step.repo_id, step.files_done, step.preparing)
        now = time.monotonic()
        if self.terminal:
            print(f"\r\033[K{step.text()}", end="", file=self.stream, flush=True)
            self.open_line = True
        elif stage != self._last_stage or now - self._last_at >= LOG_LINE_EVERY_S:
            print(step.text(), file=self.stream, flush=True)
        self._last_stage, self._last_at = stage, now

    def finish(self) -> None:
        """Ends a rewritten terminal line, so the next output starts on a line of its own."""
        if self.open_line:
            print(file=self.stream, flush=True)
            self.open_line = False

    def clear(self) -> None:
        """Wipes the terminal line (the download's, or a scan's that rewrote the same line)."""
        if self.terminal:
            print("\r\033[K", end="", file=self.stream, flush=True)
        self.open_line = False


@contextlib.contextmanager
def printing_downloads(stream=None, terminal: bool | None = None):
    """While this block runs, a hub dataset that is not cached yet prints its download to
    ``stream`` (stderr by default: stdout keeps the command's own output, e.g. --json).
    Ctrl-C during a download ends the command (exit 130) with a line saying what is kept,
    as the window's Stop does, instead of a traceback."""
    lines = DownloadLines(stream, terminal)
    try:
        with reporting_downloads(lines):
            yield lines
    except KeyboardInterrupt:
        if not lines.heard:
            raise
        lines.finish()
        print("Download stopped; the files downloaded so far stay in the hub cache.", file=lines.stream, flush=True)
        raise SystemExit(130) from None
    finally:
        lines.finish()
