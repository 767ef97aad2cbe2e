"""Prepared copies of big datasets: normalised rows in memory-mapped Arrow files.

A dataset above ``dataset_loading.SPILL_BYTES`` is normalised into an Arrow
file under ``cache_dir()/datasets`` instead of into memory, then opened
memory-mapped, so memory holds the pages in use rather than the whole dataset.
A copy is named after the source file's path, size and modification time and
the format and column choice: the training worker, the preflight check and the
next session reuse the scan the window already made instead of reading
gigabytes again. The copy is written under a temporary name and renamed when
complete, and its description (``.json``) is written last, so a half-written
copy is never used. The ``KEEP_COPIES`` most recently used copies are kept.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

from backend.data.formats import DatasetError
from backend.core.paths import cache_dir


CACHE_VERSION = 1  # raise when the normalised rows of the same input would differ
KEEP_COPIES = 4
_STALE_LEFTOVER_SECONDS = 24 * 3600  # surely no longer being written


def cache_folder() -> Path:
    return cache_dir() / "datasets"


class PreparedCopy:
    """One prepared copy: ``<key>.arrow`` and its description ``<key>.json``."""

    def __init__(self, key: str, source: Path | None) -> None:
        folder = cache_folder()
        self.arrow = folder / f"{key}.arrow"
        self.description = folder / f"{key}.json"
        self.source = source

    @classmethod
    def for_source(cls, origin: Path | None, choice: dict[str, Any]) -> PreparedCopy:
        """The copy for the file ``origin`` read with ``choice`` (format, column map);
        a copy of its own, never reused, when the source is not a single file."""
        if origin is None:
            return cls(uuid.uuid4().hex, None)
        origin = origin.resolve()
        info = origin.stat()
        identity = [CACHE_VERSION, str(origin), info.st_size, info.st_mtime_ns, choice]
        key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:32]
        return cls(key, origin)

    def open(self) -> tuple[dict[str, Any], Any, str] | None:
        """The description, the memory-mapped rows (a pyarrow Table) and the copy's path, if a
        complete copy exists."""
        if not (self.arrow.is_file() and self.description.is_file()):
            return None
        try:
            description = json.loads(self.description.read_text(encoding="utf-8"))
            table = read_arrow_stream(self.arrow)
        except Exception:  # a damaged copy is simply made again
            return None
        os.utime(self.description)  # most recently used
        return description, table, str(self.arrow)

    def writer(self, schema) -> ArrowCopyWriter:
        return ArrowCopyWriter(self, schema)

    def describe(self, description: dict[str, Any]) -> None:
        """Write the description, which marks the copy complete, then drop older copies."""
        data = dict(description, source=str(self.source) if self.source else None)
        temporary = self.description.with_name(f"{self.description.name}.{uuid.uuid4().hex}.tmp")
        try:
            temporary.write_text(json.dumps(data), encoding="utf-8")
            os.replace(temporary, self.description)
        except OSError as err:
            _remove(temporary, self.arrow)
            raise _disk_error(err) from None
        _evict(keep=self)


class ArrowCopyWriter:
    """Record batches into a temporary Arrow stream, renamed into place by ``finish``."""

    def __init__(self, copy: PreparedCopy, schema) -> None:
        import pyarrow as pa

        self._copy = copy
        self._temporary = copy.arrow.with_name(f"{copy.arrow.name}.{uuid.uuid4().hex}.tmp")
        try:
            copy.arrow.parent.mkdir(parents=True, exist_ok=True)
            self._file = pa.OSFile(str(self._temporary), "wb")
            self._stream = pa.ipc.new_stream(self._file, schema)
        except OSError as err:
            raise _disk_error(err) from None

    def write(self, batch) -> None:
        try:
            self._stream.write_batch(batch)
        except OSError as err:
            self.discard()
            raise _disk_error(err) from None

    def finish(self):
        """The written rows as a Table memory-mapped from the copy, now in place."""
        try:
            self._close()
            os.replace(self._temporary, self._copy.arrow)
        except OSError as err:
            self.discard()
            raise _disk_error(err) from None
        return read_arrow_stream(self._copy.arrow)

    def discard(self) -> None:
        try:
            self._close()
        except OSError:
            pass  # the file goes anyway
        self._temporary.unlink(missing_ok=True)

    def _close(self) -> None:
        if not self._file.closed:
            self._stream.close()
            self._file.close()


def _evict(keep: PreparedCopy) -> None:
    """Keep the KEEP_COPIES most recently used copies, none of an older version of
    ``keep``'s source, and nothing a crash left behind: temporary files, and
    copies whose description was never written."""
    folder = keep.description.parent
    described = []
    for description in folder.glob("*.json"):
        try:
            source = json.loads(description.read_text(encoding="utf-8")).get("source")
            described.append((description.stat().st_mtime, description, source))
        except (OSError, ValueError):
            continue
    described.sort(reverse=True)
    others = 0
    for _, description, source in described:
        if description == keep.description:
            continue
        outdated = keep.source is not None and source == str(keep.source)
        if outdated or others >= KEEP_COPIES - 1:
            _remove(description.with_suffix(".arrow"), description)
        else:
            others += 1
    now = time.time()
    leftovers = [*folder.glob("*.tmp"), *(a for a in folder.glob("*.arrow") if not a.with_suffix(".json").exists())]
    for leftover in leftovers:
        try:
            if now - leftover.stat().st_mtime > _STALE_LEFTOVER_SECONDS:
                leftover.unlink()
        except OSError:
            continue


def _remove(*paths: Path) -> None:
    for path in paths:
        try:
            path.unlink(missing_ok=True)
        except OSError:
            pass  # in use elsewhere (Windows keeps mapped files); tried again next time


def _disk_error(err: OSError) -> DatasetError:
    folder = cache_folder()
    if err.errno == errno.ENOSPC:
        return DatasetError(
            f"There is not enough free disk space in {folder} for the prepared copy of this dataset "
            "(it needs about as much as the file itself). Free some space, or point ALIGNSTUDIO_CACHE "
            "at a folder on a bigger disk."
        )
    return DatasetError(
        f"The prepared copy of this dataset could not be written to {folder}: {err.strerror or err}. "
        "Point ALIGNSTUDIO_CACHE at a folder you can write to."
    )


def read_arrow_stream(path: Path):
    """A prepared copy (an Arrow stream, as `datasets` writes them) memory-mapped: the rows stay on
    disk and are paged in as read. pyarrow alone, so a load does not import `datasets`."""
    import pyarrow as pa

    # Not closed here: the table's buffers point into the mapping, which lives as long as they do.
    return pa.ipc.open_stream(pa.memory_map(str(path))).read_all()
