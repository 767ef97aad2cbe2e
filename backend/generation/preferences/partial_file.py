"""The progress of a generation job, kept so a stopped or crashed job continues where it was.

``<output>.partial.jsonl`` is append-only: a header line (the request and its fingerprint), then one
line per finished row, flushed and synced as it is written. A line cut off by a crash is ignored on
reading, so at worst the row being written is done again. The output file itself appears only at
the end, written whole under a temporary name and renamed (``write_text_atomic``): nothing half
written ever sits under the output's name.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from backend.generation.preferences.request import GenerationRequest, RequestError
from backend.core.atomic_files import write_json_atomic, write_text_atomic


class PartialFile:
    def __init__(self, request: GenerationRequest):
        self.request = request
        self.path = request.partial
        self.fingerprint = request.fingerprint()
        self.records: dict[int, dict[str, Any]] = {}
        self._fh = None

    def open(self) -> dict[int, dict[str, Any]]:
        """Read what an earlier run of the same request finished; start the file when there is none.
        RequestError when a partial file of other settings is in the way and ``restart`` is off.
        Opening an open file returns what it holds."""
        if self._fh is not None:
            return self.records
        if self.path.exists() and self.request.restart:
            self.path.unlink()
        if self.path.exists():
            header, records = _read(self.path)
            if header.get("fingerprint") != self.fingerprint:
                raise RequestError(
                    f"{self.path.name} holds a half-done generation made with other settings or another version "
                    "of the input file, so it cannot be continued with these. Start over (CLI: --restart) to "
                    "discard it, or choose another output file.", "restart")
            self.records = records
            self._fh = self.path.open("a", encoding="utf-8")
        else:
            self._fh = self.path.open("w", encoding="utf-8")
            self._write({"fingerprint": self.fingerprint, "request": self.request.to_dict()})
        return self.records

    def append(self, record: dict[str, Any]) -> None:
        self.records[int(record["index"])] = record
        self._write(record)

    def _write(self, data: dict[str, Any]) -> None:
        self._fh.write(json.dumps(data, ensure_ascii=False) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def finish(self, rows: list[dict[str, Any]], report: dict[str, Any]) -> None:
        """Write the output and its report atomically, then drop the partial file."""
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        write_text_atomic(self.request.output, text)
        write_json_atomic(self.request.report, report)
        self.close()
        self.path.unlink(missing_ok=True)


def _read(path: Path) -> tuple[dict[str, Any], dict[int, dict[str, Any]]]:
    header: dict[str, Any] = {}
    records: dict[int, dict[str, Any]] = {}
    with path.open("r", encoding="utf-8", errors="replace") as fh:
        for n, line in enumerate(fh):
            try:
                data = json.loads(line)
            except ValueError:
                continue  # the line a crash cut off
            if not isinstance(data, dict):
                continue
            if n == 0:
                header = data
            elif isinstance(data.get("index"), int):
                records[data["index"]] = data
    return header, records
