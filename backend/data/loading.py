"""Read a dataset file, recognise its format and normalise it for TRL.

Entry points: ``load_dataset_file`` (any supported file or folder ->
``LoadedDataset``), ``dataset_for_method`` (the columns a given TRL trainer
wants) and ``preview_rows`` (flattened text for a preview table).

Reading is one streaming pass (``dataset_readers``): the format is recognised
from the first rows, then every row is normalised, checked for duplicates and
appended to Arrow record batches, so a bad line costs only that line (with its
number in the report) and memory holds one batch of Python rows at a time. The
batches stay in memory, or for a big file go to a memory-mapped prepared copy
on disk (``dataset_cache``) that later loads of the same file reuse.
JSON is parsed with the standard json module rather than ``Dataset.from_json``
because an Arrow column holds one type: a single number where text belongs
would otherwise decide how the whole column is read.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import time
from array import array
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from backend.data.formats import (
    REASON_HINTS,
    REASON_LABELS,
    DataFormat,
    DatasetError,
    DroppedRow,
    FormatDetection,
    RowProblem,
    detect_format,
    normalise_row,
    data_kind,
    output_schema,
    supported_methods,
)
from backend.data.cache import ArrowCopyWriter, PreparedCopy
from backend.data.readers import RowSource, folder_splits, open_rows

if TYPE_CHECKING:
    from datasets import Dataset

__all__ = [
    "DataFormat",
    "DatasetError",
    "DroppedRow",
    "LoadCancelled",
    "LoadedDataset",
    "dataset_for_method",
    "head_rows",
    "load_dataset_file",
    "preview_rows",
    "supported_methods",
    "unsupported_reason",
]

_SAMPLE_ROWS = 50  # rows whose values decide the format
_HEAD_ROWS = 1000  # rows whose columns decide the format...
_HEAD_BYTES = 8 * 2**20  # ...unless they take more of the file than this
_BATCH_ROWS = 1000
_PROGRESS_SECONDS = 0.1
MAX_DROPPED_KEPT = 1000  # dropped rows kept in full; all of them are counted
# From this size on, the normalised rows (about as big as the file) go to a
# memory-mapped file rather than into memory.
SPILL_BYTES = 256 * 2**20
PREVIEW_ROWS = 50


class LoadCancelled(DatasetError):
    """The caller's ``should_stop`` asked the load to end early."""


@dataclass
class LoadedDataset:
    """A normalised dataset and what happened on the way.

    ``dropped`` holds the first ``MAX_DROPPED_KEPT`` rows left out, in file
    order; ``drop_counts`` counts every one of them by reason code.
    """

    path: str
    format: DataFormat
    # The normalised rows: a pyarrow Table (memory-mapped for a prepared copy), or a
    # `datasets.Dataset` where one was built (a mix). ``table`` and ``dataset`` read them.
    rows: Any
    column_mapping: dict[str, str]
    rows_total: int
    rows_kept: int
    dropped: list[DroppedRow]
    notes: list[str]
    supported_methods: list[str]
    conversational: bool = False
    source_kind: str = ""
    position_unit: str = "line"
    duplicates: int = 0
    identical_pairs: int = 0
    source_columns: list[str] = field(default_factory=list)
    drop_counts: dict[str, int] = field(default_factory=dict)
    split: str = ""  # the split read, for a folder or a hub dataset with several
    splits: list[str] = field(default_factory=list)  # every split the source has
    heldout: "LoadedDataset | None" = None  # the source's test split, held out for evaluation
    hub: dict[str, Any] | None = None  # hub id, subset, split and revision of a hub dataset

    arrow_file: str = ""  # the prepared copy the rows are memory-mapped from, if any

    @property
    def rows_dropped(self) -> int:
        return self.rows_total - self.rows_kept

    @property
    def table(self):
        """The rows as a pyarrow Table: what the report and the preview read, without `datasets`."""
        rows = self.rows
        if hasattr(rows, "flatten_indices"):  # a datasets.Dataset
            return rows.flatten_indices().data.table
        return rows

    @property
    def dataset(self) -> Dataset:
        """The rows as a `datasets.Dataset`, made on first use. Importing `datasets` takes about a
        second, which the window's data report does without; training and mixing pay it here."""
        if not hasattr(self.rows, "flatten_indices"):
            self.rows = _as_dataset(self.rows, self.arrow_file)
        return self.rows

    @property
    def format_label(self) -> str:
        return self.format.label


# -------------------------------------------------------------------- public


def load_dataset_file(
    path: str | os.PathLike,
    format: DataFormat | str | None = None,
    column_map: dict[str, str] | None = None,
    *,
    split: str = "",
    subset: str = "",
    revision: str = "",
    eval_split: str = "",
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_preview: Callable[[list[dict[str, Any]]], None] | None = None,
    spill_bytes: int | None = None,
) -> LoadedDataset:
    """Load, recognise and normalise a dataset file, folder or Hugging Face dataset id.

    ``format`` forces a format instead of recognising it; ``column_map``
    assigns source columns to canonical fields by hand, e.g.
    ``{"prompt": "question", "chosen": "good", "rejected": "bad"}``.
    ``split`` picks the split of a folder or hub dataset (train by default),
    ``subset`` and ``revision`` a hub dataset's configuration and commit.
    ``eval_split`` names the split held out for evaluation (``heldout``):
    empty takes the source's test (or validation) split when it has one,
    ``none`` takes none.
    While the file is read, ``progress(bytes_done, bytes_total)`` is called
    about ten times a second, ``should_stop()`` is asked as often (True ends
    the load with LoadCancelled), and ``on_preview`` receives the first
    normalised rows as soon as there are ``PREVIEW_ROWS`` of them.
    A source of ``spill_bytes`` (default ``SPILL_BYTES``) or more is
    normalised into a memory-mapped prepared copy (``dataset_cache``), which
    later loads of the same file reuse.
    Raises DatasetError for anything that cannot be used.
    """
    from backend.data.hub import is_hub_id

    hub = is_hub_id(path)
    where: str | Path = str(path).strip() if hub else Path(path).expanduser()
    forced = _as_format(format, where)
    options = dict(column_map=column_map, subset=subset, revision=revision, progress=progress,
                   should_stop=should_stop, spill_bytes=spill_bytes)
    loaded = _load_split(where, hub, forced, split=split, on_preview=on_preview, **options)
    held = _heldout_name(loaded, eval_split, where)
    if held:
        # The held-out rows are read as the training rows were, so their columns agree.
        try:
            loaded.heldout = _load_split(where, hub, forced or loaded.format, split=held, on_preview=None,
                                         **options)
        except LoadCancelled:
            raise
        except DatasetError as err:
            raise DatasetError(
                f"The {held} split, which would be held out for evaluation, cannot be used: {err.message} "
                "Fix it, or set the held-out split to none to hold out a share of the training rows.",
                path=err.path, line=err.line, field=err.field, columns=err.columns) from None
        _check_same_shape(loaded, loaded.heldout, where)
        loaded.notes.append(f"The {held} split ({loaded.heldout.rows_kept} rows) is held out for "
                            "evaluation and the Compare tab.")
    return loaded


_HELDOUT_SPLITS = ("test", "validation", "valid", "eval", "dev")


def _heldout_name(loaded: LoadedDataset, eval_split: str, where) -> str:
    eval_split = (eval_split or "").strip()
    if eval_split.lower() == "none":
        return ""
    if eval_split:
        if eval_split not in loaded.splits:
            have = ", ".join(loaded.splits) if loaded.splits else "no splits (it is a single file)"
            raise DatasetError(f"The held-out split '{eval_split}' does not exist; the dataset has {have}.",
                               path=where)
        if eval_split == loaded.split:
            raise DatasetError(f"The held-out split '{eval_split}' is the split being trained on; choose "
                               "another, or none.", path=where)
        return eval_split
    return next((s for s in _HELDOUT_SPLITS if s in loaded.splits and s != loaded.split), "")


def _check_same_shape(train: LoadedDataset, held: LoadedDataset, where) -> None:
    if not train.table.schema.equals(held.table.schema, check_metadata=False):
        raise DatasetError(
            f"The {held.split} split is written differently from the {train.split} split "
            f"({held.format_label}{', chat messages' if held.conversational else ''} against "
            f"{train.format_label}{', chat messages' if train.conversational else ''}), so it cannot be "
            "held out for it; set the held-out split to none.", path=where)


def _load_split(where, hub: bool, forced: DataFormat | None, *, column_map, split: str, subset: str,
                revision: str, progress, should_stop, on_preview, spill_bytes) -> LoadedDataset:
    spill_at = SPILL_BYTES if spill_bytes is None else spill_bytes
    with contextlib.ExitStack() as stack:
        info = None
        if hub or where.is_dir() or where.suffix.lower() == ".arrow":
            stack.enter_context(_quiet_datasets())  # these sources are read through `datasets`
        if hub:
            from backend.data.hub import open_hub_rows

            source, info = open_hub_rows(where, subset, split, revision, stack)
            splits, used = info.splits, info.split
        else:
            if subset or revision:
                raise DatasetError("A subset or revision applies to a Hugging Face dataset id only, "
                                   "not to a file or folder.", path=where)
            source = stack.enter_context(open_rows(where, split))
            splits = list(folder_splits(where)) if where.is_dir() else []
            used = split or ("train" if "train" in splits else splits[0] if len(splits) == 1 else "")
        try:
            loaded = _load_source(where, source, forced, column_map, progress, should_stop, on_preview, spill_at)
        except DatasetError as err:
            if source.origin is None or err.path != str(where):
                raise
            # A split that is one file of a folder: name that file, not the folder.
            raise type(err)(err.message, path=source.origin, line=err.line, field=err.field,
                            columns=err.columns) from None
    loaded.split, loaded.splits = used, splits
    if info is not None:
        loaded.hub = info.to_dict()
    return loaded


def _load_source(path, source: RowSource, forced, column_map, progress, should_stop, on_preview,
                 spill_at: int) -> LoadedDataset:
    copy = None
    if source.bytes_total >= spill_at:
        choice = {"format": forced.value if forced else None, "column_map": column_map or {}}
        copy = PreparedCopy.for_source(source.origin, choice)
        prepared = copy.open()
        if prepared is not None:
            if progress:
                progress(source.bytes_total, source.bytes_total)
            return _loaded_from_description(path, *prepared)
    watch = _Watch(source, progress, should_stop)
    loaded = _scan(path, source, watch, forced, column_map, copy, on_preview)
    if copy is not None:
        copy.describe(_description(loaded))
    return loaded


def dataset_for_method(loaded: LoadedDataset, method: str) -> Dataset:
    """The normalised dataset in the columns TRL's trainer for ``method`` reads: the
    data as loaded when the method accepts its kind as it is, else through the
    conversion the method's spec names for that kind (``CONVERSIONS``)."""
    from backend.methods import find_method, method_keys

    spec = find_method(method)
    if spec is None:
        raise DatasetError(
            f"'{method}' is not a training method AlignStudio knows; choose one of {', '.join(method_keys())}.",
            path=loaded.path,
        )
    if spec.key not in loaded.supported_methods:
        raise DatasetError(unsupported_reason(spec.key, loaded.format), path=loaded.path)
    kind = data_kind(loaded.format)
    ds = loaded.dataset
    if kind == "pairs":
        ds = ds.select_columns(["prompt", "chosen", "rejected"])
    conversion = spec.data.convert.get(kind)
    if not conversion:
        return ds
    try:
        return CONVERSIONS[conversion](ds)
    except DatasetError as err:
        if err.path:
            raise
        raise DatasetError(f"{spec.label}: {err.message}", path=loaded.path) from None


def head_rows(loaded: LoadedDataset, n: int) -> list[dict[str, Any]]:
    """The first ``n`` normalised rows as Python values, read from Arrow: the window's
    GUI thread calls this when a dataset arrives, where importing `datasets` would
    freeze it for a second or more."""
    rows = loaded.rows
    if hasattr(rows, "flatten_indices"):  # a datasets.Dataset (a mix): `datasets` is imported already
        return rows.select(range(min(n, len(rows)))).to_list()
    return rows.slice(0, min(n, rows.num_rows)).to_pylist()


def preview_rows(loaded: LoadedDataset, n: int = 50) -> list[dict[str, str]]:
    """The first ``n`` normalised rows as text, keyed by the dataset's columns
    (prompt/chosen/rejected, prompt/completion, messages or text); chat
    messages become "role: content" lines."""
    return [{k: flatten_value(v) for k, v in row.items()} for row in head_rows(loaded, n)]


def flatten_value(value: Any) -> str:
    if isinstance(value, list):
        return "\n".join(
            f"{m.get('role', '?')}: {m.get('content', '')}" if isinstance(m, dict) else str(m) for m in value
        )
    if isinstance(value, bool):
        return "good" if value else "bad"
    return "" if value is None else str(value)


# ---------------------------------------------------------------- internals


def _as_format(format: DataFormat | str | None, path: Path) -> DataFormat | None:
    if format is None or isinstance(format, DataFormat):
        return format
    try:
        return DataFormat(str(format).strip().lower())
    except ValueError:
        names = ", ".join(f.value for f in DataFormat)
        raise DatasetError(f"Unknown format '{format}'; choose one of {names}.", path=path) from None


@contextlib.contextmanager
def _quiet_datasets():
    # Progress bars from `datasets` would spill into the CLI and the GUI's log. A local file
    # is read without `datasets`, so only sources read through it import it here.
    import datasets

    was_disabled = datasets.are_progress_bars_disabled()
    verbosity = datasets.logging.get_verbosity()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()  # "Using the latest cached version..." said in our notes instead
    try:
        yield
    finally:
        datasets.logging.set_verbosity(verbosity)
        if not was_disabled:
            datasets.enable_progress_bars()


def _scan(path: Path, source: RowSource, watch: "_Watch", forced: DataFormat | None,
          column_map: dict[str, str] | None, copy: PreparedCopy | None, on_preview) -> LoadedDataset:
    """Recognise the format from the first rows, then normalise every row."""
    items = watch.items()
    drops = _DropLog(source.unit)
    head = _take_head(items, source, drops)
    rows = [item[1] for item in head if not isinstance(item, DroppedRow)]
    if not rows:
        raise DatasetError(_nothing_usable(drops, source.unit), path=path, columns=source.columns or None)
    columns = source.columns or _columns_of(rows)
    detection = detect_format(columns, rows[:_SAMPLE_ROWS], forced=forced, column_map=column_map, path=path)
    del rows
    schema = output_schema(detection)
    sink = _ArrowRows(schema, copy.writer(schema) if copy else None)
    scan = _Normaliser(detection, source.unit, drops, sink, on_preview)
    try:
        scan.run(itertools.chain(head, items))
        watch.finish()
        all_columns = list(dict.fromkeys([*columns, *scan.columns]))
        if not scan.kept:
            raise DatasetError(_nothing_usable_after_detection(drops, source.unit, detection, all_columns),
                               path=path, columns=all_columns)
        table = sink.finish()
    except BaseException:
        sink.discard()
        raise

    notes = source.notes + detection.notes + _late_column_notes(columns, all_columns, detection)
    if copy is not None:
        notes.append(
            f"The normalised rows are kept on disk in {copy.arrow} and read as needed, "
            "so memory holds only what is in use."
        )
    return LoadedDataset(
        path=str(path),
        format=detection.format,
        rows=table,
        arrow_file=str(copy.arrow) if copy is not None else "",
        column_mapping=dict(detection.column_mapping),
        rows_total=scan.kept + drops.total,
        rows_kept=scan.kept,
        dropped=drops.examples(),
        notes=notes,
        supported_methods=supported_methods(detection.format),
        conversational=detection.conversational,
        source_kind=source.kind,
        position_unit=source.unit,
        duplicates=drops.counts["duplicate"],
        identical_pairs=drops.counts["identical_pair"],
        source_columns=all_columns,
        drop_counts=dict(drops.counts),
    )


# What a prepared copy's description records, besides the format and the dropped rows.
_DESCRIBED = ("column_mapping", "rows_total", "rows_kept", "notes", "conversational", "source_kind",
              "position_unit", "duplicates", "identical_pairs", "source_columns", "drop_counts")


def _description(loaded: LoadedDataset) -> dict[str, Any]:
    description = {name: getattr(loaded, name) for name in _DESCRIBED}
    description["format"] = loaded.format.value
    description["dropped"] = [vars(d) for d in loaded.dropped]
    return description


def _loaded_from_description(path: Path, description: dict[str, Any], table, arrow_file: str) -> LoadedDataset:
    fmt = DataFormat(description["format"])
    return LoadedDataset(
        path=str(path),
        format=fmt,
        rows=table,
        arrow_file=arrow_file,
        dropped=[DroppedRow(**d) for d in description["dropped"]],
        supported_methods=supported_methods(fmt),
        **{name: description[name] for name in _DESCRIBED},
    )


class _Watch:
    """Reports progress and honours ``should_stop`` while rows stream past."""

    def __init__(self, source: RowSource, progress, should_stop) -> None:
        self._source = source
        self._progress = progress
        self._should_stop = should_stop
        self._next_look = 0.0

    def items(self) -> Iterator[Any]:
        clock = time.monotonic
        for item in self._source.items:
            # One look at the clock per row: a row may be one line or 16 MB.
            if clock() >= self._next_look:
                self._look()
            yield item

    def finish(self) -> None:
        if self._progress:
            self._progress(self._source.bytes_total, self._source.bytes_total)

    def _look(self) -> None:
        self._next_look = time.monotonic() + _PROGRESS_SECONDS
        if self._should_stop and self._should_stop():
            raise LoadCancelled("Loading was cancelled.")
        if self._progress:
            self._progress(self._source.bytes_done(), self._source.bytes_total)


def _take_head(items: Iterator[Any], source: RowSource, drops: "_DropLog") -> list[Any]:
    """The first rows (and the problems between them), to recognise the format
    from; they are normalised with the rest afterwards. Problems before the
    first row go straight to ``drops``."""
    head: list[Any] = []
    rows = 0
    for item in items:
        if isinstance(item, DroppedRow) and not rows:
            drops.add(item)
            continue
        head.append(item)
        if not isinstance(item, DroppedRow):
            rows += 1
            if rows >= _HEAD_ROWS or source.bytes_done() >= _HEAD_BYTES:
                break
    return head


def _columns_of(rows: list[dict[str, Any]]) -> list[str]:
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    return list(columns)


class _Normaliser:
    """Normalises rows, leaves out duplicates and hands the rest to ``sink``."""

    def __init__(self, detection: FormatDetection, unit: str, drops: "_DropLog", sink: "_ArrowRows",
                 on_preview: Callable[[list[dict[str, Any]]], None] | None) -> None:
        self.detection = detection
        self.unit = unit
        self.drops = drops
        self.sink = sink
        self.kept = 0
        self.columns: dict[str, None] = {}
        self._on_preview = on_preview
        self._preview: list[dict[str, Any]] | None = [] if on_preview else None

    def run(self, items: Iterator[Any]) -> None:
        detection, drops, sink, columns = self.detection, self.drops, self.sink, self.columns
        seen = _SeenRows()
        for item in items:
            if isinstance(item, DroppedRow):
                drops.add(item)
                continue
            position, raw = item
            for key in raw:
                if key not in columns:
                    columns[key] = None
            try:
                row = normalise_row(detection, raw)
            except RowProblem as problem:
                drops.add(DroppedRow(position, problem.field, problem.reason, problem.code))
                continue
            first = seen.first_position(_row_digest(row), position)
            if first is not None:
                repeat = f"repeats an earlier {self.unit} (first seen at {self.unit} {first})"
                drops.add(DroppedRow(position, None, repeat, "duplicate"))
                continue
            sink.add(row)
            self.kept += 1
            if self._preview is not None:
                self._collect_preview(row)

    def _collect_preview(self, row: dict[str, Any]) -> None:
        self._preview.append(row)
        if len(self._preview) == PREVIEW_ROWS:
            self._on_preview(self._preview)
            self._preview = None


_DIGEST_MASK = 2**64 - 1


def _row_digest(row: dict[str, Any]) -> int:
    """A 64-bit hash of a normalised row, never 0 (the empty slot in _SeenRows).

    Python's string hash is salted per process, which is fine for finding
    duplicates within one load; two different rows share a digest with odds
    of about n²/2⁶⁵ (one in 300,000 for ten million rows)."""
    key = tuple(
        tuple((m["role"], m["content"]) if isinstance(m, dict) else m for m in v) if isinstance(v, list) else v
        for v in row.values()
    )
    return hash(key) & _DIGEST_MASK or 1


class _SeenRows:
    """Row digests and where each was first seen, in an open-addressing table
    of two flat arrays: 32 bytes a row at most, where a dict of Python ints
    would take over 100, which on a file of tens of millions of rows decides
    whether the scan fits in memory."""

    def __init__(self, capacity: int = 4096) -> None:
        self._digests = array("Q", bytes(8 * capacity))
        self._positions = array("Q", bytes(8 * capacity))
        self._mask = capacity - 1
        self._count = 0

    def first_position(self, digest: int, position: int) -> int | None:
        """Where a row with ``digest`` was first seen; None (and remember it) if never."""
        digests, mask = self._digests, self._mask
        slot = digest & mask
        while True:
            found = digests[slot]
            if found == digest:
                return self._positions[slot]
            if not found:
                break
            slot = (slot + 1) & mask
        digests[slot] = digest
        self._positions[slot] = position
        self._count += 1
        if self._count * 2 > len(digests):
            self._grow()
        return None

    def _grow(self) -> None:
        old = zip(self._digests, self._positions)
        capacity = len(self._digests) * 2
        self._digests = array("Q", bytes(8 * capacity))
        self._positions = array("Q", bytes(8 * capacity))
        self._mask = capacity - 1
        self._count = 0
        for digest, position in old:
            if digest:
                self.first_position(digest, position)


class _DropLog:
    """Rows left out: exact counts by reason, the first of each reason, and the
    first ``MAX_DROPPED_KEPT`` in file order (millions of bad lines must not
    fill memory)."""

    def __init__(self, unit: str) -> None:
        self.unit = unit
        self.total = 0
        self.counts: Counter[str] = Counter()
        self.first: dict[str, DroppedRow] = {}
        self._kept: list[DroppedRow] = []

    def add(self, dropped: DroppedRow) -> None:
        self.total += 1
        self.counts[dropped.code] += 1
        self.first.setdefault(dropped.code, dropped)
        if len(self._kept) < MAX_DROPPED_KEPT:
            self._kept.append(dropped)

    def examples(self) -> list[DroppedRow]:
        return list(self._kept)


class _ArrowRows:
    """Kept rows, converted to Arrow a batch at a time and held in memory or,
    through ``writer``, written to a prepared copy on disk."""

    def __init__(self, schema, writer: ArrowCopyWriter | None = None) -> None:
        import pyarrow as pa

        from backend.data.arrow_batches import record_batch

        self._pa = pa
        self._record_batch = record_batch
        self._schema = schema
        self._writer = writer
        self._rows: list[dict[str, Any]] = []
        self._batches: list[Any] = []

    def add(self, row: dict[str, Any]) -> None:
        self._rows.append(row)
        if len(self._rows) >= _BATCH_ROWS:
            self._flush()

    def finish(self):
        """The kept rows as a pyarrow Table (memory-mapped from the prepared copy when written to one)."""
        self._flush()
        if self._writer is not None:
            return self._writer.finish()
        return self._pa.Table.from_batches(self._batches, schema=self._schema)

    def discard(self) -> None:
        if self._writer is not None:
            self._writer.discard()

    def _flush(self) -> None:
        if not self._rows:
            return
        batch = self._record_batch(self._rows, self._schema)
        self._rows = []
        if self._writer is not None:
            self._writer.write(batch)
        else:
            self._batches.append(batch)


def _as_dataset(table, arrow_file: str = "") -> "Dataset":
    import uuid

    from datasets import Dataset

    if arrow_file:
        return Dataset.from_file(arrow_file)  # stays memory-mapped, as the table was
    # Without a fingerprint `datasets` hashes the whole table (pickling it);
    # an in-memory dataset never reuses cached results, so a random one does.
    return Dataset(table, fingerprint=uuid.uuid4().hex)


def _build_dataset(rows_or_columns: list[dict[str, Any]] | dict[str, list], features) -> "Dataset":
    """Rows already in the final types go straight to Arrow: ``Dataset.from_list``
    would re-encode every value in Python (four times slower on 100k rows)."""
    import uuid

    import pyarrow as pa
    from datasets import Dataset

    if isinstance(rows_or_columns, dict):
        table = pa.Table.from_pydict(rows_or_columns, schema=features.arrow_schema)
    else:
        table = pa.Table.from_pylist(rows_or_columns, schema=features.arrow_schema)
    return Dataset(table, fingerprint=uuid.uuid4().hex)


def _nothing_usable(drops: _DropLog, unit: str) -> str:
    if not drops.total:
        return "The file holds no rows."
    parts = []
    for code, count in drops.counts.most_common(3):
        first = drops.first[code]
        where = f"{unit} {first.line}" + (f", '{first.field}'" if first.field else "")
        parts.append(f"{REASON_LABELS.get(code, code)}: {count} ({where}: {first.reason})")
    if drops.total == 1:
        lead = "The only row could not be used."
    else:
        lead = f"None of the {drops.total} rows could be used."
    hint = REASON_HINTS.get(drops.counts.most_common(1)[0][0], "")
    return f"{lead} Most common problems: " + "; ".join(parts) + "." + (f" {hint}" if hint else "")


def _nothing_usable_after_detection(drops: _DropLog, unit: str, detection: FormatDetection,
                                    columns: list[str]) -> str:
    message = _nothing_usable(drops, unit)
    renamed = ", ".join(f"{src} as {fld}" for fld, src in detection.column_mapping.items() if src != fld)
    message += f" The file was read as {detection.format.label}" + (f", using {renamed}." if renamed else ".")
    unused = [c for c in columns if c not in detection.column_mapping.values()]
    if unused:
        message += f" Not used: {', '.join(map(str, unused))}; map them by hand if they hold the data."
    return message


def _late_column_notes(head_columns: list[str], all_columns: list[str], detection: FormatDetection) -> list[str]:
    late = [c for c in all_columns if c not in head_columns and c not in detection.column_mapping.values()]
    if not late:
        return []
    return [f"Columns that first appear further down the file were not used: {', '.join(map(str, late))}."]


def unsupported_reason(method: str, fmt: DataFormat) -> str:
    """Why ``method`` cannot train on data in ``fmt``, for a tooltip or error."""
    from backend.methods import get_method

    spec = get_method(method)
    return spec.data.refusal(data_kind(fmt), spec.label, fmt.label)


def _chosen_as_completion(ds: "Dataset") -> "Dataset":
    return ds.select_columns(["prompt", "chosen"]).rename_column("chosen", "completion")


def _desirable_only(ds: "Dataset") -> "Dataset":
    """The answers labelled good, as prompt and completion: imitating the thumbs-down
    answers too would teach exactly what the labels say to avoid."""
    labels = ds["label"]
    keep = [i for i, good in enumerate(labels) if good]
    if not keep:
        raise DatasetError(f"none of the {len(labels)} answers is labelled good, so there is nothing to imitate.")
    return ds.select(keep).flatten_indices().select_columns(["prompt", "completion"])


def _unpair(ds: "Dataset") -> "Dataset":
    """Each pair becomes a good and a bad answer. Good and bad alternate, so every batch
    sees both, and the bad answer beside a good one comes from the pair half the dataset
    away: a trainer that estimates its KL term from neighbouring rows (answer i against
    prompt i+1) then pairs answers with prompts they were not written for."""
    from datasets import Features, Value

    columns = ds.select_columns(["prompt", "chosen", "rejected"]).to_dict()
    prompts_in, chosen_in, rejected_in = columns["prompt"], columns["chosen"], columns["rejected"]
    n = len(prompts_in)
    offset = max(2, n // 2)  # neither 0 nor 1 apart, so no neighbour shares a prompt (from 3 pairs on)
    prompts, completions, labels = [], [], []
    for i in range(n):
        j = (i + offset) % n
        prompts += [prompts_in[i], prompts_in[j]]
        completions += [chosen_in[i], rejected_in[j]]
        labels += [True, False]
    features = Features(
        {"prompt": ds.features["prompt"], "completion": ds.features["chosen"], "label": Value("bool")}
    )
    return _build_dataset({"prompt": prompts, "completion": completions, "label": labels}, features)


def _prompts_from_pairs(ds: "Dataset") -> "Dataset":
    """The prompts of preference pairs, for a method that samples and grades its own
    answers. Each prompt once (the first pair's row): a prompt with four pairs would
    otherwise be trained on four times as often. chosen and rejected stay as columns,
    so a grader can read them by name."""
    seen: set = set()
    keep = []
    for index, prompt in enumerate(ds["prompt"]):
        key = tuple((m["role"], m["content"]) for m in prompt) if isinstance(prompt, list) else prompt
        if key not in seen:
            seen.add(key)
            keep.append(index)
    return ds if len(keep) == len(ds) else ds.select(keep).flatten_indices()


# How a method's spec turns one kind of data into the kind it trains on (DataNeed.convert).
CONVERSIONS = {"chosen_as_completion": _chosen_as_completion, "unpair": _unpair,
               "prompts_from_pairs": _prompts_from_pairs, "desirable_only": _desirable_only}
