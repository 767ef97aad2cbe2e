"""Follow a growing log file by polling, the way ``tail -f`` does.

The worker writes its log straight to a file (an unread pipe could hang it),
so the window polls that file a few times a second. Reads are capped per tick
so that a burst of output never stalls the GUI thread.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, QTimer, Signal

_MAX_READ = 256 * 1024


class LogTailer(QObject):
    """Emits the new text of one file as it grows."""

    sig_text = Signal(str)
    """New text appended to the file since the last poll (decoded as UTF-8)."""

    def __init__(self, parent=None, interval_ms: int = 250):
        super().__init__(parent)
        self._path: Path | None = None
        self._offset = 0
        self._timer = QTimer(self)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self.poll)
        self._decoder_tail = b""

    def follow(self, path: str | Path, from_start: bool = True) -> None:
        self._path = Path(path)
        self._decoder_tail = b""
        try:
            self._offset = 0 if from_start else self._path.stat().st_size
        except OSError:
            self._offset = 0
        self._timer.start()
        self.poll()

    def stop(self) -> None:
        """Stop polling after reading what is left."""
        self.poll(unbounded=True)
        self._timer.stop()

    def is_following(self) -> bool:
        return self._timer.isActive()

    def poll(self, unbounded: bool = False) -> None:
        if self._path is None:
            return
        try:
            with self._path.open("rb") as fh:
                fh.seek(0, 2)
                size = fh.tell()
                if size < self._offset:  # truncated or replaced
                    self._offset = 0
                if size == self._offset:
                    return
                fh.seek(self._offset)
                data = fh.read(None if unbounded else _MAX_READ)
        except OSError:
            return
        self._offset += len(data)
        data = self._decoder_tail + data
        # Keep an incomplete UTF-8 sequence for the next read instead of mangling it.
        cut = len(data)
        for back in range(1, min(4, len(data)) + 1):
            byte = data[-back]
            if byte & 0xC0 == 0x80:
                continue
            if byte >= 0xC0 and back < (2 if byte < 0xE0 else 3 if byte < 0xF0 else 4):
                cut = len(data) - back
            break
        self._decoder_tail = data[cut:]
        text = data[:cut].decode("utf-8", errors="replace")
        if text:
            self.sig_text.emit(text)
