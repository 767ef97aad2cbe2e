"""Reading dataset files as a stream of raw rows, and naming what is not a dataset.

``open_rows(path)`` first looks at the path and the file's first bytes and
refuses, with a message that says what the file is and what to do, anything
that holds no rows: a missing file, a link loop, an image, a ZIP or Excel
file, a web page saved instead of a download, a Git LFS pointer, UTF-16 text.
Otherwise it gives a ``RowSource``: the rows in file order as
``(position, dict)``, with a ``DroppedRow`` in place of a line that holds no
row (broken JSON, a ragged CSV line, a line cut off at the end of the file).

JSON Lines and CSV are read a line at a time, never whole, so memory stays
bounded whatever the file's size; a single line longer than
``MAX_ROW_BYTES`` is skipped unread. A JSON document must be parsed whole and
is refused above ``MAX_JSON_DOCUMENT_BYTES``. Parquet and Arrow are read in
record batches. A file that changes while it is read is refused, since what
was read is then a mix of two versions.

Nothing here knows the dataset formats (``dataset_formats`` does) or imports
``datasets`` before a saved dataset folder or Arrow file needs it.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import errno
import io
import lzma
import json
import os
import re
import stat
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Union

from backend.data.formats import DatasetError, DroppedRow

JSON_LINES_SUFFIXES = {".jsonl", ".ndjson", ".jsonlines"}
JSON_SUFFIXES = {".json"}
CSV_SUFFIXES = {".csv", ".tsv"}
PARQUET_SUFFIXES = {".parquet", ".pq"}
ARROW_SUFFIXES = {".arrow"}
DATA_SUFFIXES = JSON_LINES_SUFFIXES | JSON_SUFFIXES | CSV_SUFFIXES | PARQUET_SUFFIXES | ARROW_SUFFIXES
# The compressions `datasets` unpacks on the fly (HH-RLHF ships as train.jsonl.gz).
COMPRESSION_SUFFIXES = {".gz": "gzip", ".gzip": "gzip", ".bz2": "bzip2", ".xz": "xz", ".zst": "zstd", ".zstd": "zstd"}
_COMPRESSION_MAGIC = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz", b"(\xb5/\xfd": "zstd"}

# No training example comes near this; a longer line is a file whose line
# breaks were lost, and reading it would cost its size in memory.
MAX_ROW_BYTES = 16 * 2**20
# A JSON document is parsed whole, at about ten times its size in memory.
MAX_JSON_DOCUMENT_BYTES = 1024 * 2**20
_HEAD_BYTES = 64 * 1024
_BATCH_ROWS = 1000

# Keys under which JSON files commonly nest their list of rows.
_JSON_ROW_KEYS = ("data", "train", "rows", "examples", "records", "items", "instances", "dataset")

SUPPORTED = (
    "Supported are JSON Lines (.jsonl), JSON (.json), CSV (.csv/.tsv), Parquet (.parquet), each also "
    "compressed (.gz, .bz2, .xz, .zst), folders laid out like a dataset repository and folders saved "
    "with datasets' save_to_disk."
)

Item = Union[tuple[int, dict[str, Any]], DroppedRow]


@dataclass
class RowSource:
    """The rows of one file, read as they are iterated.

    ``items`` yields ``(position, row)`` or ``DroppedRow`` in file order;
    ``notes`` gains remarks while it runs (blank lines skipped, say).
    ``bytes_done()`` over ``bytes_total`` is how far the reading has got.
    ``origin`` is the one file the rows come from (None for a saved dataset
    folder, which has several).
    """

    kind: str
    unit: str
    items: Iterator[Item]
    bytes_total: int
    bytes_done: Callable[[], int]
    columns: list[str] = field(default_factory=list)  # known before reading: CSV header, table schema
    notes: list[str] = field(default_factory=list)
    origin: Path | None = None


@contextlib.contextmanager
def open_rows(path: Path, split: str = "") -> Iterator[RowSource]:
    """The rows of the file or dataset folder at ``path``; DatasetError if it has none.

    ``split`` picks a split of a folder (``train`` when empty and the folder has one)."""
    with contextlib.ExitStack() as stack:
        path = Path(path)
        if split and not path.is_dir():
            raise DatasetError(f"Only a folder has splits; '{split}' cannot be taken from a single file.",
                               path=path)
        yield _open_folder(path, stack, split) if split else _open(path, stack)


def data_suffix(path: Path) -> str:
    """The suffix that says how the rows are written: ``.jsonl`` for ``train.jsonl.gz``."""
    suffix = path.suffix.lower()
    if suffix in COMPRESSION_SUFFIXES:
        return Path(path.stem).suffix.lower()
    return suffix


# ------------------------------------------------------------ choosing a reader


def _open(path: Path, stack: contextlib.ExitStack) -> RowSource:
    info = _stat(path)
    if stat.S_ISDIR(info.st_mode):
        return _open_folder(path, stack)
    if not stat.S_ISREG(info.st_mode):
        raise DatasetError(
            "This is not a regular file (it is a device, pipe or socket). Choose the dataset file itself.",
            path=path,
        )
    suffix = data_suffix(path)
    if suffix in ARROW_SUFFIXES and path.suffix.lower() not in COMPRESSION_SUFFIXES:
        return _arrow_file_source(path)
    raw = stack.enter_context(_open_binary(path))
    compression = _compression_of(path, raw)
    if compression:
        if suffix in PARQUET_SUFFIXES | ARROW_SUFFIXES:
            raise DatasetError(
                f"This {suffix} file is compressed with {compression}; Parquet and Arrow are compressed "
                "inside already. Unpack it and load the file inside.",
                path=path,
            )
        tracked = _TrackedFile(stack.enter_context(_decompressing(raw, compression, path)), path, raw=raw)
        tracked.compression = compression
    else:
        tracked = _TrackedFile(raw, path)
    head = tracked.head()
    if not compression and (suffix in PARQUET_SUFFIXES or head.startswith(b"PAR1")):
        if not head.startswith(b"PAR1"):
            _refuse_non_text(path, head, suffix)  # an LFS pointer or a web page, most likely
        return _parquet_source(path, stack)
    _refuse_non_text(path, head, suffix)
    if suffix in CSV_SUFFIXES:
        return _csv_source(tracked, suffix)
    first_char = head.removeprefix(codecs.BOM_UTF8).lstrip()[:1]
    if suffix in JSON_LINES_SUFFIXES | JSON_SUFFIXES or first_char in (b"{", b"["):
        return _json_source(tracked, suffix, first_char)
    if suffix in (".xlsx", ".xls", ".ods", ".numbers"):
        raise DatasetError(
            "This is a spreadsheet, which AlignStudio cannot read directly. Save it as CSV "
            "(in Excel: File → Save As → 'CSV UTF-8') and load the CSV file.",
            path=path,
        )
    raise DatasetError(
        f"AlignStudio cannot read '{suffix or 'extension-less'}' files. {SUPPORTED}",
        path=path,
    )


def _compression_of(path: Path, raw) -> str | None:
    """The compression named by the suffix or, failing that, by the first bytes."""
    named = COMPRESSION_SUFFIXES.get(path.suffix.lower())
    if named:
        return named
    start = raw.read(6)
    raw.seek(0)
    return next((kind for magic, kind in _COMPRESSION_MAGIC.items() if start.startswith(magic)), None)


def _decompressing(raw, compression: str, path: Path):
    """A binary stream of the unpacked bytes (it may seek, as the readers rewind)."""
    if compression == "gzip":
        import gzip

        return gzip.GzipFile(fileobj=raw, mode="rb")
    if compression == "bzip2":
        import bz2

        return bz2.BZ2File(raw, "rb")
    if compression == "xz":
        import lzma

        return lzma.LZMAFile(raw, "rb")
    import zstandard  # a dependency of the studio (pyproject.toml)

    return _ZstdStream(raw, zstandard)


class _ZstdStream(io.RawIOBase):
    """zstandard's reader seeks only forwards; going back starts over from the top."""

    def __init__(self, raw, zstandard) -> None:
        self._raw, self._zstd = raw, zstandard
        self._start()

    def _start(self) -> None:
        self._raw.seek(0)
        self._reader = self._zstd.ZstdDecompressor().stream_reader(self._raw, read_across_frames=True)
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        try:
            data = self._reader.read(len(buffer))
        except self._zstd.ZstdError as err:
            raise OSError(f"zstd data is damaged ({err})") from None
        buffer[: len(data)] = data
        self._position += len(data)
        return len(data)

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence != io.SEEK_SET:
            raise io.UnsupportedOperation("only absolute seeks")
        if offset < self._position:
            self._start()
        while self._position < offset:
            if not self.read(min(offset - self._position, 2**20)):
                break
        return self._position


def _stat(path: Path) -> os.stat_result:
    try:
        return path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            raise DatasetError(
                f"The file is a link to {os.readlink(path)}, which does not exist. "
                "Load the real file instead.",
                path=path,
            ) from None
        raise DatasetError("The file does not exist.", path=path) from None
    except PermissionError:
        raise DatasetError(_NO_PERMISSION, path=path) from None
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise DatasetError(
                "The file is a symbolic link that leads back to itself (a loop of links), so no "
                "data is behind it. Point the link at the real file, or load the file itself.",
                path=path,
            ) from None
        raise DatasetError(f"The file cannot be opened: {err.strerror or err}.", path=path) from None


_NO_PERMISSION = (
    "AlignStudio is not allowed to read this file (permission denied). Check the file's "
    "permissions, or copy it to a folder of your own and load the copy."
)


def _open_binary(path: Path):
    try:
        return open(path, "rb")
    except PermissionError:
        raise DatasetError(_NO_PERMISSION, path=path) from None
    except OSError as err:
        raise DatasetError(f"The file cannot be opened: {err.strerror or err}.", path=path) from None


# ------------------------------------------------------ files that hold no rows

# (first bytes, what the file is, what to do); checked before anything is parsed.
_SIGNATURES = [
    (b"\x89PNG\r\n\x1a\n", "a PNG image", None),
    (b"\xff\xd8\xff", "a JPEG image", None),
    (b"GIF8", "a GIF image", None),
    (b"%PDF", "a PDF document", None),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive", "Unpack it and load the dataset file inside."),
    (b"Rar!\x1a\x07", "a RAR archive", "Unpack it and load the dataset file inside."),
    (
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",
        "an old-style Office file (.xls or .doc)",
        "Save it from Excel as CSV (File → Save As → 'CSV UTF-8') and load the CSV file.",
    ),
    (b"SQLite format 3\x00", "an SQLite database", "Export the table as CSV or JSON Lines and load that."),
]


def _refuse_non_text(path: Path, head: bytes, suffix: str) -> None:
    if not head:
        raise DatasetError("The file is empty (0 bytes). Was it saved or downloaded completely?", path=path)
    if head.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        raise DatasetError(_other_encoding("UTF-32"), path=path)
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise DatasetError(_other_encoding("UTF-16"), path=path)
    _refuse_known_binary(path, head, suffix)
    if _looks_like_utf16(head):
        raise DatasetError(_other_encoding("UTF-16"), path=path)
    if b"\x00" in head[:8192]:
        raise DatasetError(f"This is not a text dataset: the file contains binary data. {SUPPORTED}", path=path)
    text = head.removeprefix(codecs.BOM_UTF8).lstrip()
    if text[:15].lower().startswith((b"<!doctype html", b"<html")):
        raise DatasetError(
            "This is a web page (HTML), not a dataset: the download saved the page that shows the "
            "file rather than the file. Download the raw file instead (on Hugging Face: the download "
            "button, or a link with /resolve/ in place of /blob/).",
            path=path,
        )
    if text.startswith(b"version https://git-lfs.github.com/spec/"):
        size = re.search(rb"\nsize (\d+)", text)
        real = f" (the real file has {_size_text(int(size.group(1)))})" if size else ""
        raise DatasetError(
            f"This is a Git LFS pointer, a small placeholder for the real file{real}. Run "
            "'git lfs pull' in the repository it came from, or download the file itself.",
            path=path,
        )
    if not text.strip() and len(head) < _HEAD_BYTES:
        raise DatasetError("The file is empty: it holds only spaces and blank lines.", path=path)


def _refuse_known_binary(path: Path, head: bytes, suffix: str) -> None:
    for signature, what, advice in _SIGNATURES:
        if head.startswith(signature):
            raise DatasetError(
                f"This is not a text dataset: the file is {what} (binary data). {advice or SUPPORTED}",
                path=path,
            )
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        what, advice = _describe_zip(path, suffix)
        raise DatasetError(f"This is not a text dataset: the file is {what} (binary data). {advice}", path=path)


def _describe_zip(path: Path, suffix: str) -> tuple[str, str]:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        names = []
    if suffix in (".xlsx", ".xlsm", ".ods", ".numbers") or any(n.startswith("xl/") for n in names):
        return "a spreadsheet workbook", (
            "Save it as CSV (in Excel: File → Save As → 'CSV UTF-8') and load the CSV file."
        )
    if any(n.startswith("word/") for n in names):
        return "a Word document", SUPPORTED
    data = [n for n in names if Path(n).suffix.lower() in DATA_SUFFIXES]
    inside = f" (it holds {', '.join(data[:3])})" if data else ""
    return f"a ZIP archive{inside}", "Unpack it and load the dataset file inside."


def _looks_like_utf16(head: bytes) -> bool:
    # ASCII text in UTF-16 has a zero byte beside every character.
    sample = head[:200]
    if len(sample) < 4:
        return False
    for zeros in (sample[1::2], sample[0::2]):
        if zeros.count(0) >= 0.9 * len(zeros):
            return True
    return False


def _other_encoding(name: str) -> str:
    return (
        f"The file is saved as {name} text. Save it as UTF-8 (in most editors: 'Save as…' → "
        "encoding UTF-8) and load it again."
    )


def _size_text(size: int) -> str:
    for unit, scale in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"


# -------------------------------------------------------------- reading lines


@dataclass
class _LongLine:
    """A line longer than MAX_ROW_BYTES: only its length is known, it was not kept."""

    length: int


class _TrackedFile:
    """A binary file read line by line, with the line number and the bytes read
    so far, and a check at the end that the file did not change meanwhile."""

    def __init__(self, fh, path: Path, raw=None) -> None:
        self._fh = fh
        self._raw = raw  # the compressed file under ``fh``, if any
        self.path = path
        info = os.fstat((raw or fh).fileno())
        self.size = info.st_size
        self._signature = (info.st_size, info.st_mtime_ns)
        self.offset = 0
        self.lineno = 0
        self.compression: str | None = None

    def progress(self) -> int:
        """Bytes of the file on disk read so far (compressed bytes for a compressed file)."""
        if self._raw is None:
            return self.offset
        try:
            return min(self._raw.tell(), self.size)
        except (OSError, ValueError):
            return 0

    def head(self) -> bytes:
        data = self._read(lambda: self._fh.read(_HEAD_BYTES))
        self._fh.seek(0)
        return data

    def rewind(self, offset: int, lineno: int) -> None:
        """Go back to ``offset``, where line ``lineno + 1`` starts."""
        self._fh.seek(offset)
        self.offset, self.lineno = offset, lineno

    def lines(self) -> Iterator[tuple[int, bytes | _LongLine]]:
        while True:
            raw = self._read(lambda: self._fh.readline(MAX_ROW_BYTES + 1))
            if not raw:
                self.check_unchanged()
                return
            self.offset += len(raw)
            self.lineno += 1
            if len(raw) > MAX_ROW_BYTES:
                yield self.lineno, _LongLine(len(raw) + self._skip_rest_of_line(raw))
            else:
                yield self.lineno, raw

    def read_all(self) -> bytes:
        data = self._read(self._fh.read)
        self.offset = len(data)
        self.check_unchanged()
        return data

    def check_unchanged(self) -> None:
        info = os.fstat((self._raw or self._fh).fileno())
        before = self._signature[0]
        read_all = self.offset == before or self._raw is not None  # unpacked bytes outnumber the file's
        if read_all and (info.st_size, info.st_mtime_ns) == self._signature:
            return
        after = info.st_size if info.st_size != before or self._raw is not None else self.offset
        if after != before:
            how = f"it {'grew' if after > before else 'shrank'} from {_size_text(before)} to {_size_text(after)}"
        else:
            how = "it was written to"
        raise DatasetError(
            f"The file changed while it was being read ({how}), so what was read may mix two versions. "
            "Wait until the program writing it has finished, then load it again.",
            path=self.path,
        )

    def _damaged(self, err: Exception) -> DatasetError:
        return DatasetError(
            f"The compressed data is damaged or cut off after {self.offset:,} unpacked bytes ({err}). "
            "Download or copy the file again completely.",
            path=self.path,
            line=self.lineno + 1 if self.lineno else None,
        )

    def _skip_rest_of_line(self, start: bytes) -> int:
        if start.endswith(b"\n"):
            return 0
        skipped = 0
        while True:
            chunk = self._read(lambda: self._fh.readline(2**20))
            skipped += len(chunk)
            self.offset += len(chunk)
            if not chunk or chunk.endswith(b"\n"):
                return skipped

    def _read(self, read: Callable[[], bytes]) -> bytes:
        try:
            return read()
        except (EOFError, lzma.LZMAError) as err:
            raise self._damaged(err) from None
        except OSError as err:
            if self._raw is not None and err.errno is None:  # gzip, bz2 and zstd data errors
                raise self._damaged(err) from None
            raise DatasetError(
                f"Reading the file failed after {self.offset:,} bytes: {err.strerror or err}. If it is on a "
                "network drive or a USB stick, copy it to this computer and load the copy.",
                path=self.path,
                line=self.lineno + 1 if self.lineno else None,
            ) from None


def _decode_line(raw: bytes, lineno: int, path: Path) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DatasetError(
            f"The file is not UTF-8 text (byte 0x{raw[err.start]:02x} at column {err.start + 1}). It was "
            "probably saved in another encoding such as Windows-1252 or Latin-1; save it as UTF-8 and "
            "load it again.",
            path=path,
            line=lineno,
        ) from None
    return text.removeprefix("\ufeff") if lineno == 1 else text


def _too_long(length: int) -> str:
    return (
        f"is {_size_text(length)} long, more than the {_size_text(MAX_ROW_BYTES)} a row may have, so it was "
        "skipped (if the file is one long line, its line breaks were lost)"
    )


# ---------------------------------------------------------------- JSON, JSON Lines


def _json_source(tracked: _TrackedFile, suffix: str, first_char: bytes) -> RowSource:
    first_is_whole, more_follows = _first_line_shape(tracked)
    if suffix in JSON_LINES_SUFFIXES:
        as_lines = first_char != b"[" or (first_is_whole and more_follows)
    else:
        as_lines = first_is_whole and more_follows
    notes: list[str] = []
    if as_lines:
        if suffix not in JSON_LINES_SUFFIXES:
            notes.append("The file holds one JSON object per line, so it was read as JSON Lines.")
        return _file_source(tracked, "JSON Lines", "line", _json_lines(tracked, notes), notes)
    if tracked.size > MAX_JSON_DOCUMENT_BYTES:
        raise DatasetError(
            f"This JSON file is {_size_text(tracked.size)}, too big to read as one document. Save it as "
            "JSON Lines (one object per line), which AlignStudio reads in a stream.",
            path=tracked.path,
        )
    return _file_source(tracked, "JSON", "row", _json_document(tracked, notes), notes)


def _first_line_shape(tracked: _TrackedFile) -> tuple[bool, bool]:
    """Whether the first non-blank line is a JSON value on its own, and whether
    more text follows it: together they tell JSON Lines from a JSON document."""
    lines = tracked.lines()
    first = next((raw for _, raw in lines if isinstance(raw, _LongLine) or raw.strip()), b"")
    whole = False
    if isinstance(first, bytes):
        try:
            json.loads(first.decode("utf-8").removeprefix("\ufeff"))
            whole = True
        except (ValueError, RecursionError):
            pass
    more = any(isinstance(raw, _LongLine) or raw.strip() for _, raw in _take(lines, 100))
    tracked.rewind(0, 0)
    return whole, more


def _take(iterator, n):
    for _, item in zip(range(n), iterator):
        yield item


def _json_lines(tracked: _TrackedFile, notes: list[str]) -> Iterator[Item]:
    blank = 0
    for lineno, raw in tracked.lines():
        if isinstance(raw, _LongLine):
            yield DroppedRow(lineno, None, _too_long(raw.length), "too_long")
            continue
        line = _decode_line(raw, lineno, tracked.path).strip()
        if not line:
            blank += 1
            continue
        yield _json_line_row(lineno, line, cut_off=not raw.endswith(b"\n"))
    if blank:
        notes.append(f"Skipped {blank} blank line{'s' if blank > 1 else ''}.")


def _json_line_row(lineno: int, line: str, cut_off: bool) -> Item:
    if "\x00" in line:
        return DroppedRow(lineno, None, "holds binary zeros instead of text: this part of the file is damaged",
                          "invalid_json")
    try:
        value = json.loads(line)
    except RecursionError:
        return DroppedRow(lineno, None, "is nested too deeply to be a row", "invalid_json")
    except json.JSONDecodeError as err:
        return DroppedRow(lineno, None, _json_line_problem(err, line, cut_off), "invalid_json")
    if not isinstance(value, dict):
        return DroppedRow(lineno, None, f"is {_json_kind(value)}, not an object {{...}} with named fields",
                          "not_object")
    return lineno, value


def _json_line_problem(err: json.JSONDecodeError, line: str, cut_off: bool) -> str:
    if err.msg == "Extra data":
        decoder = json.JSONDecoder()
        first, _ = decoder.raw_decode(line)
        if not isinstance(first, dict):
            return f"is not a JSON object {{...}}: it starts with {_json_kind(first)} and goes on after it"
        try:
            decoder.raw_decode(line, err.pos)
            return "holds more than one JSON object; put each row on a line of its own"
        except ValueError:
            return f"not valid JSON: unexpected text after the object, at column {err.colno}"
    if cut_off and (err.msg.startswith("Unterminated string") or err.pos >= len(line)):
        return "is cut off: the file ends in the middle of this row (was it saved or copied completely?)"
    return f"not valid JSON: {_plain_json_problem(err)} at column {err.colno}"


# The json module's messages, in words for people who do not write JSON.
_JSON_PROBLEMS = {
    "Expecting value": "expected a value",
    "Expecting ',' delimiter": "expected a comma",
    "Expecting ':' delimiter": "expected a colon",
    "Expecting property name enclosed in double quotes": "expected a field name in double quotes",
    "Unterminated string starting at": "a text value has no closing quote; it starts",
    "Invalid control character at": "a tab or line break must be written as \\t or \\n inside a text value,",
    "Invalid \\escape": "a backslash must be doubled (\\\\) inside a text value,",
}


def _plain_json_problem(err: json.JSONDecodeError) -> str:
    return _JSON_PROBLEMS.get(err.msg, err.msg.removesuffix(" at"))


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "a list [...]"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "true/false"
    if value is None:
        return "null"
    return "a number"


def _json_document(tracked: _TrackedFile, notes: list[str]) -> Iterator[Item]:
    data = tracked.read_all()
    path = tracked.path
    try:
        text = data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as err:
        line_start = data.rfind(b"\n", 0, err.start) + 1
        raise DatasetError(
            f"The file is not UTF-8 text (byte 0x{data[err.start]:02x} at column {err.start - line_start + 1}). "
            "It was probably saved in another encoding such as Windows-1252 or Latin-1; save it as UTF-8 "
            "and load it again.",
            path=path,
            line=data.count(b"\n", 0, err.start) + 1,
        ) from None
    del data
    try:
        document = json.loads(text)
    except RecursionError:
        raise DatasetError("The JSON is nested too deeply to hold rows.", path=path) from None
    except json.JSONDecodeError as err:
        raise _json_document_error(err, text, path) from None
    rows = _rows_of_document(document, path, notes)
    for index, row in enumerate(rows, 1):
        if isinstance(row, dict):
            yield index, row
        else:
            yield DroppedRow(index, None, f"is {_json_kind(row)}, not an object {{...}} with named fields",
                             "not_object")


def _json_document_error(err: json.JSONDecodeError, text: str, path: Path) -> DatasetError:
    before = text[: err.pos].rstrip()
    if before.endswith(",") and text[err.pos : err.pos + 1] in ("]", "}"):
        comma = len(before) - 1
        return DatasetError(
            "There is a comma after the last item of a list or object, which JSON does not allow. "
            "Remove that comma and load the file again.",
            path=path,
            line=text.count("\n", 0, comma) + 1,
        )
    if err.msg.startswith("Unterminated string"):
        return DatasetError(
            "A text value that starts here has no closing quote (\"), so the file ends inside it: add the "
            "missing quote, or, if the file is cut off, save or copy it again completely.",
            path=path,
            line=err.lineno,
        )
    if err.pos >= len(text.rstrip()):
        return DatasetError(
            "The file ends in the middle of the JSON: it is cut off. Was it saved or copied completely?",
            path=path,
            line=err.lineno,
        )
    return DatasetError(
        f"The file is not valid JSON: {_plain_json_problem(err)} at column {err.colno}. Fix the JSON "
        "there, or save the data as JSON Lines (one object per line), where a broken line costs only that line.",
        path=path,
        line=err.lineno,
    )


def _rows_of_document(document: Any, path: Path, notes: list[str]) -> list:
    if isinstance(document, list):
        if not document:
            raise DatasetError("The JSON list is empty: the file holds no rows.", path=path)
        return document
    if not isinstance(document, dict):
        raise DatasetError(
            f"The JSON file holds a single value ({_json_kind(document)}), not a list of rows. Put the rows "
            "in a list: [ {...}, {...} ], or save one object per line as JSON Lines.",
            path=path,
        )
    lowered = {str(k).lower(): k for k in document}
    for key in _JSON_ROW_KEYS:
        if key in lowered and isinstance(document[lowered[key]], list):
            notes.append(f'Read the rows listed under "{lowered[key]}".')
            if key == "train" and len(document) > 1:
                notes.append("The file has several splits; the train split was used.")
            return document[lowered[key]]
    lists = [k for k, v in document.items() if isinstance(v, list) and v and isinstance(v[0], dict)]
    if len(lists) == 1:
        notes.append(f'Read the rows listed under "{lists[0]}".')
        return document[lists[0]]
    if document and all(isinstance(v, list) for v in document.values()):
        if len({len(v) for v in document.values()}) == 1:
            notes.append("The file stores columns as lists; they were read as rows.")
            keys = list(document)
            return [dict(zip(keys, values)) for values in zip(*document.values())]
    raise DatasetError(
        "The JSON file holds one object, but no list of rows was found in it (looked for a list under "
        f"{', '.join(_JSON_ROW_KEYS[:4])}, ...). Put the rows in a list: [ {{...}}, {{...}} ], or save "
        "one object per line as JSON Lines.",
        path=path,
    )


# ---------------------------------------------------------------------- CSV

_SEPARATOR_NAMES = {",": "commas", ";": "semicolons", "\t": "tabs", "|": "vertical bars"}


class _LongCsvLine(Exception):
    def __init__(self, lineno: int, length: int) -> None:
        super().__init__(lineno)
        self.lineno, self.length = lineno, length


def _csv_source(tracked: _TrackedFile, suffix: str) -> RowSource:
    # The csv module's own limit (128 KB a value, for the whole process) would refuse
    # long answers; a value runs up to the limit only when its quote is never closed.
    csv.field_size_limit(max(csv.field_size_limit(), MAX_ROW_BYTES))
    header_line, header_text = _first_text_line(tracked)
    default = "\t" if suffix == ".tsv" else ","
    sep = _sniff_separator(header_text, default)
    header = next(csv.reader([header_text], delimiter=sep), [])
    # pandas' names for blank headers, so a file reads the same in both
    header = [h if h.strip() else f"Unnamed: {i}" for i, h in enumerate(header)]
    repeated = [h for h, n in Counter(header).items() if n > 1]
    if repeated:
        raise DatasetError(
            f"The column '{repeated[0]}' appears twice in the header. Give every column its own name.",
            path=tracked.path,
            line=header_line,
            field=repeated[0],
        )
    notes = []
    if sep != default:
        why = " (as spreadsheet programs write CSV where a comma is the decimal sign)" if sep == ";" else ""
        notes.append(f"The columns are separated by {_SEPARATOR_NAMES[sep]}{why}, and were read that way.")
    return _file_source(tracked, "CSV", "line", _csv_rows(tracked, header, header_line, sep), notes, header)


def _first_text_line(tracked: _TrackedFile) -> tuple[int, str]:
    for lineno, raw in tracked.lines():
        if isinstance(raw, _LongLine):
            raise DatasetError(
                f"The first line is {_size_text(raw.length)} long, far too long for a header of column "
                "names: this is not a CSV file, or its line breaks were lost.",
                path=tracked.path,
                line=lineno,
            )
        text = _decode_line(raw, lineno, tracked.path)
        if text.strip():
            return lineno, text
    raise DatasetError("The file is empty: it holds only blank lines.", path=tracked.path)


def _sniff_separator(header: str, default: str) -> str:
    counts = {sep: _count_unquoted(header, sep) for sep in _SEPARATOR_NAMES}
    best = max(counts, key=lambda sep: (counts[sep], sep == default))
    return best if counts[best] > counts[default] else default


def _count_unquoted(line: str, sep: str) -> int:
    return sum(part.count(sep) for part in line.split('"')[::2])


def _csv_rows(tracked: _TrackedFile, header: list[str], header_line: int, sep: str) -> Iterator[Item]:
    rows = problems = 0
    for start, record in _csv_records(tracked, sep, header):
        if isinstance(record, DroppedRow):
            problems += 1
            yield record
        elif len(record) != len(header):
            problems += 1
            yield _ragged(start, record, header, sep)
        else:
            rows += 1
            yield start, dict(zip(header, record))
    if not rows and not problems:
        raise DatasetError(
            f"The file has a header ({', '.join(header)}) but no rows under it.",
            path=tracked.path,
            line=header_line,
        )


def _ragged(start: int, record: list[str], header: list[str], sep: str) -> DroppedRow:
    values = f"{len(record)} value{'s' if len(record) != 1 else ''}"
    columns = f"{len(header)} columns ({', '.join(header)})"
    if len(record) < len(header):
        return DroppedRow(start, header[len(record)], f"has {values} but the header has {columns}", "bad_csv_row")
    return DroppedRow(
        start,
        None,
        f"has {values} but the header has {columns}; a value that contains a "
        f"{_SEPARATOR_NAMES[sep][:-1]} needs quotes around it",
        "bad_csv_row",
    )


class _CsvLineFeeder:
    """Physical lines for csv.reader, remembering where the current record
    began so that a broken record can be named and skipped."""

    def __init__(self, tracked: _TrackedFile) -> None:
        self._tracked = tracked
        self._lines = tracked.lines()
        self._at_start = True
        self.record_line = tracked.lineno + 1
        self.record_text = ""
        self.record_end = tracked.offset  # where the record's first line ends

    def mark(self) -> None:
        self._at_start = True

    def __iter__(self):
        return self

    def __next__(self) -> str:
        lineno, raw = next(self._lines)
        if isinstance(raw, _LongLine):
            raise _LongCsvLine(lineno, raw.length)
        text = _decode_line(raw, lineno, self._tracked.path)
        if self._at_start:
            self._at_start = False
            self.record_line, self.record_text, self.record_end = lineno, text, self._tracked.offset
        return text


def _csv_records(
    tracked: _TrackedFile, sep: str, header: list[str]
) -> Iterator[tuple[int, list[str] | DroppedRow]]:
    while True:
        feeder = _CsvLineFeeder(tracked)
        reader = csv.reader(feeder, delimiter=sep, strict=True)
        while True:
            feeder.mark()
            try:
                record = next(reader)
            except StopIteration:
                return
            except _LongCsvLine as long:
                yield long.lineno, DroppedRow(long.lineno, None, _too_long(long.length), "too_long")
                break  # the reader is mid-record; start a fresh one after the long line
            except csv.Error as err:
                start = feeder.record_line
                unclosed = str(err).startswith(("unexpected end of data", "field larger than field limit"))
                if unclosed or tracked.lineno > start:
                    # A quote opened on the record's first line ran on over the lines after it
                    # (to the end of the file, or to a quote that did not fit): skip only that
                    # first line and read on from the next one, so the lines it swallowed count.
                    yield start, _unclosed_quote(start, feeder.record_text, sep, header)
                    tracked.rewind(feeder.record_end, start)
                    break
                yield start, DroppedRow(start, None, _csv_problem(str(err)), "bad_csv_row")
                continue
            if record:
                yield feeder.record_line, record


def _unclosed_quote(lineno: int, text: str, sep: str, header: list[str]) -> DroppedRow:
    column = _open_quote_column(text.rstrip("\r\n"), sep)
    return DroppedRow(
        lineno,
        header[column - 1] if column <= len(header) else None,
        "starts with a quote (\") that is not closed on this line, so the line was skipped; close the "
        'quote, or write a quote that belongs to the text as two ("")',
        "bad_csv_row",
    )


def _open_quote_column(line: str, sep: str) -> int:
    """1-based number of the value whose opening quote is still open at the end of ``line``."""
    column, in_quotes, at_value_start, i = 1, False, True, 0
    opened = 1
    while i < len(line):
        ch = line[i]
        if in_quotes:
            if ch == '"':
                if line[i + 1 : i + 2] == '"':
                    i += 1
                else:
                    in_quotes = False
        elif ch == '"' and at_value_start:
            in_quotes, opened = True, column
        elif ch == sep:
            column += 1
            at_value_start = True
            i += 1
            continue
        at_value_start = False
        i += 1
    return opened


def _csv_problem(message: str) -> str:
    if "expected after" in message:
        return 'has text right after a closing quote; a quote inside a quoted value must be doubled ("")'
    if "NUL" in message:
        return "holds binary zeros instead of text: this part of the file is damaged"
    return f"could not be read as CSV ({message})"


# -------------------------------------------------------------- tables on disk


def _parquet_source(path: Path, stack: contextlib.ExitStack) -> RowSource:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(str(path))
    except Exception as err:  # pyarrow raises several types for a damaged file
        raise _library_error(path, "Parquet", err) from None
    stack.callback(parquet.close)
    total_rows = parquet.metadata.num_rows
    size = path.stat().st_size
    done = [0]

    def items() -> Iterator[Item]:
        try:
            for batch in parquet.iter_batches(batch_size=_BATCH_ROWS):
                for row in batch.to_pylist():
                    done[0] += 1
                    yield done[0], row
        except (OSError, ValueError, TypeError) as err:  # ArrowException derives from these
            raise _library_error(path, "Parquet", err) from None

    return RowSource(
        "Parquet", "row", items(), size, lambda: size * done[0] // max(total_rows, 1),
        columns=list(parquet.schema_arrow.names), origin=path,
    )


def _arrow_file_source(path: Path) -> RowSource:
    if (path.parent / "state.json").is_file():
        source = _saved_folder_source(path.parent)
        source.notes.insert(0, f"Loaded the saved dataset folder that contains {path.name}.")
        return source
    from datasets import Dataset

    try:
        table = Dataset.from_file(str(path))
    except Exception as err:  # pyarrow and datasets raise several types for a damaged file
        raise _library_error(path, "Arrow", err) from None
    source = table_source(table, "Arrow", path)
    source.origin = path
    return source


def _saved_folder_source(path: Path, split: str = "") -> RowSource:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as err:  # a damaged folder fails in many ways inside `datasets`
        raise _library_error(path, "saved dataset", err) from None
    notes = []
    if isinstance(loaded, datasets.DatasetDict):
        splits = list(loaded)
        if not splits:
            raise DatasetError("The saved dataset has no splits.", path=path)
        split = split or ("train" if "train" in loaded else splits[0])
        loaded = loaded[split]
        others = [s for s in splits if s != split]
        notes.append(
            f"The folder holds the splits {', '.join(splits)}; the {split} split was used."
            if others
            else f"Took the {split} split."
        )
    source = table_source(loaded, "saved dataset (Arrow)", path)
    source.notes.extend(notes)
    return source


def table_source(table, kind: str, path: Path | str) -> RowSource:
    """Rows of a memory-mapped ``datasets.Dataset`` (a saved folder, an Arrow file, a hub split)."""
    size = sum(os.path.getsize(f["filename"]) for f in table.cache_files) or 1
    total_rows = len(table)
    done = [0]

    def items() -> Iterator[Item]:
        try:
            for batch in table.with_format("arrow").iter(batch_size=_BATCH_ROWS):
                for row in batch.to_pylist():
                    done[0] += 1
                    yield done[0], row
        except (OSError, ValueError, TypeError) as err:
            raise _library_error(path, kind, err) from None

    return RowSource(kind, "row", items(), size, lambda: size * done[0] // max(total_rows, 1),
                     columns=list(table.column_names))


def _library_error(path: Path, kind: str, err: Exception) -> DatasetError:
    text = str(err).strip().splitlines()
    detail = text[-1] if text else type(err).__name__
    return DatasetError(
        f"The file could not be read as {kind}: {detail[:300]}. It may be damaged or incomplete "
        "(cut off while copying or downloading); export or download it again.",
        path=path,
    )


# --------------------------------------------------------------------- folders


def folder_splits(path: Path) -> dict[str, list[Path]]:
    """The splits of a dataset folder and the files of each, found as `datasets` finds
    them (``data/train-*.parquet``, ``train.jsonl`` + ``test.jsonl``, ``train/*.jsonl``);
    a folder saved with save_to_disk maps each split to itself. {} when there are no data files."""
    path = Path(path)
    if (path / "dataset_dict.json").is_file():
        try:
            names = json.loads((path / "dataset_dict.json").read_text(encoding="utf-8")).get("splits", [])
        except (OSError, ValueError):
            names = []
        return {str(name): [path] for name in names}
    if (path / "state.json").is_file():
        return {"train": [path]}
    from datasets.data_files import DataFilesDict, get_data_patterns
    from datasets.data_files import EmptyDatasetError

    try:
        patterns = get_data_patterns(str(path))
        found = DataFilesDict.from_patterns(patterns, str(path))
    except EmptyDatasetError:
        return {}
    except (OSError, ValueError) as err:
        raise DatasetError(f"The folder cannot be searched: {err}.", path=path) from None
    splits = {}
    for name, files in found.items():
        readable = [Path(f) for f in files if _is_data_file(Path(f), path)]
        if readable:
            splits[str(name)] = readable
    return splits


def _is_data_file(file: Path, folder: Path) -> bool:
    parts = file.relative_to(folder).parts
    return (data_suffix(file) in DATA_SUFFIXES - ARROW_SUFFIXES and not any(p.startswith(".") for p in parts)
            and file.is_file())


def _open_folder(path: Path, stack: contextlib.ExitStack, split: str = "") -> RowSource:
    splits = folder_splits(path)
    saved = (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()
    if saved and not split:
        return _saved_folder_source(path)
    if not splits:
        raise DatasetError(
            "The folder holds no dataset: expected JSON Lines, JSON, CSV or Parquet files (one file, or "
            "a dataset repository's layout such as data/train-*.parquet), or a folder saved with "
            "datasets' save_to_disk.",
            path=path,
        )
    name = split or ("train" if "train" in splits else next(iter(splits)) if len(splits) == 1 else "")
    if name not in splits:
        wanted = f"has no split '{split}'" if split else "has no train split"
        raise DatasetError(f"The folder {wanted}; it has {', '.join(splits)}. Choose one of them.", path=path)
    if saved:
        return _saved_folder_source(path, name)
    files = splits[name]
    others = [s for s in splits if s != name]
    split_note = f" The folder also has the split{'s' if len(others) > 1 else ''} {', '.join(others)}." if others else ""
    if len(files) == 1:
        source = _open(files[0], stack)
        source.notes.insert(0, f"Loaded {files[0].relative_to(path)} from the folder.{split_note}")
        return source
    source = _shards_source(files, path, stack)
    source.notes.insert(0, f"Loaded {len(files)} files as the {name} split ({_list_names(files, path)})."
                           f"{split_note}")
    return source


def _list_names(files: list[Path], folder: Path) -> str:
    names = [str(f.relative_to(folder)) for f in files]
    return ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")


def _shards_source(files: list[Path], folder: Path, stack: contextlib.ExitStack) -> RowSource:
    """One stream of rows from several files of a split, one file open at a time. Positions
    count within each file, so a dropped row names its file as well as its line."""
    sizes = [f.stat().st_size for f in files]
    first = _open(files[0], stack)
    state = {"before": 0, "current": first}

    def items() -> Iterator[Item]:
        for index, file in enumerate(files):
            member = str(file.relative_to(folder))
            with contextlib.ExitStack() as own:
                source = first if index == 0 else _open(file, own)
                state["current"] = source
                if first.columns and source.columns and source.columns != first.columns:
                    raise DatasetError(
                        f"This file's columns ({', '.join(source.columns)}) differ from those of "
                        f"{files[0].relative_to(folder)} ({', '.join(first.columns)}); the files of a split "
                        "must share their columns.",
                        path=file,
                    )
                for item in source.items:
                    if isinstance(item, DroppedRow):
                        item = DroppedRow(item.line, item.field, f"{item.reason} (in {member})", item.code)
                    yield item
                first.notes.extend(n for n in source.notes if source is not first)
            state["before"] += sizes[index]

    return RowSource(
        f"{first.kind} ({len(files)} files)", first.unit, items(), sum(sizes) or 1,
        lambda: state["before"] + state["current"].bytes_done(), columns=list(first.columns), notes=first.notes,
    )


def _file_source(tracked: _TrackedFile, kind: str, unit: str, items: Iterator[Item], notes: list[str],
                 columns: list[str] | None = None) -> RowSource:
    if tracked.compression:
        kind = f"{kind} ({tracked.compression})"
    return RowSource(kind, unit, items, tracked.size, tracked.progress, list(columns or []), notes,
                     origin=tracked.path)
