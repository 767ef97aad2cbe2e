"""Read a dataset file, recognise its format and normalise it for TRL.

Entry points: ``load_dataset_file`` (any supported file or folder ->
``LoadedDataset``), ``dataset_for_method`` (the columns a given TRL trainer
wants) and ``preview_rows`` (flattened text for a preview table).

JSON and JSON Lines are parsed here with the standard json module rather than
``Dataset.from_json``: a bad line must cost only that line (with its number
in the report), and an Arrow column holds one type, so a single number where
text belongs would otherwise decide how the whole column is read. CSV,
Parquet and saved Arrow folders are read by the ``datasets`` library, which
is imported on first use (see ``dataset_formats``).
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import io
import json
import os
import re
import tempfile
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from backend.dataset_formats import (
    ALL_METHODS,
    METHOD_NAMES,
    REASON_LABELS,
    DataFormat,
    DatasetError,
    FormatDetection,
    RowProblem,
    detect_format,
    normalise_row,
    output_features,
    supported_methods,
)

if TYPE_CHECKING:
    from datasets import Dataset

__all__ = [
    "DataFormat",
    "DatasetError",
    "DroppedRow",
    "LoadedDataset",
    "dataset_for_method",
    "load_dataset_file",
    "preview_rows",
    "supported_methods",
    "unsupported_reason",
]

JSON_LINES_SUFFIXES = {".jsonl", ".ndjson", ".jsonlines"}
JSON_SUFFIXES = {".json"}
CSV_SUFFIXES = {".csv", ".tsv"}
PARQUET_SUFFIXES = {".parquet", ".pq"}
ARROW_SUFFIXES = {".arrow"}
DATA_SUFFIXES = JSON_LINES_SUFFIXES | JSON_SUFFIXES | CSV_SUFFIXES | PARQUET_SUFFIXES | ARROW_SUFFIXES

# Keys under which JSON files commonly nest their list of rows.
_JSON_ROW_KEYS = ("data", "train", "rows", "examples", "records", "items", "instances", "dataset")
_SAMPLE_ROWS = 50


@dataclass
class DroppedRow:
    """A source row left out, and why.

    ``line`` is the 1-based line in the file for JSON Lines and CSV, and the
    1-based row number for JSON, Parquet and Arrow (``LoadedDataset.position_unit``).
    ``code`` is a stable reason key (see ``dataset_formats.REASON_LABELS``).
    """

    line: int
    field: str | None
    reason: str
    code: str = "other"


@dataclass
class LoadedDataset:
    path: str
    format: DataFormat
    dataset: Dataset
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

    @property
    def rows_dropped(self) -> int:
        return self.rows_total - self.rows_kept

    @property
    def format_label(self) -> str:
        return self.format.label


@dataclass
class _Source:
    """Raw rows of a file before any format is applied."""

    kind: str
    unit: str
    columns: list[str]
    rows: list[tuple[int, dict[str, Any]]] | None = None  # JSON/JSONL: (position, row)
    table: Dataset | None = None  # CSV/Parquet/Arrow
    positions: list[int] | None = None  # per table row, when lines are known
    dropped: list[DroppedRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        parsed = len(self.rows) if self.rows is not None else len(self.table)
        return parsed + len(self.dropped)

    def sample(self, n: int = _SAMPLE_ROWS) -> list[dict[str, Any]]:
        if self.rows is not None:
            return [row for _, row in self.rows[:n]]
        return self.table.select(range(min(n, len(self.table)))).to_list()

    def iter_rows(self) -> Iterator[tuple[int, dict[str, Any]]]:
        if self.rows is not None:
            yield from self.rows
            return
        index = 0
        for batch in self.table.iter(batch_size=1000):
            names = list(batch)
            for values in zip(*(batch[n] for n in names)):
                pos = self.positions[index] if self.positions else index + 1
                yield pos, dict(zip(names, values))
                index += 1


# -------------------------------------------------------------------- public


def load_dataset_file(
    path: str | os.PathLike,
    format: DataFormat | str | None = None,
    column_map: dict[str, str] | None = None,
) -> LoadedDataset:
    """Load, recognise and normalise a dataset file or saved-dataset folder.

    ``format`` forces a format instead of recognising it; ``column_map``
    assigns source columns to canonical fields by hand, e.g.
    ``{"prompt": "question", "chosen": "good", "rejected": "bad"}``.
    Raises DatasetError for anything that cannot be used.
    """
    path = Path(path).expanduser()
    forced = _as_format(format, path)
    with _quiet_datasets():
        source = _read_source(path)
        if source.count == 0:
            raise DatasetError("The file holds no rows.", path=path)
        if not source.columns:
            raise DatasetError(_nothing_usable(source.dropped, source.count, source.unit), path=path)
        detection = detect_format(
            source.columns, source.sample(), forced=forced, column_map=column_map, path=path
        )
        rows, dropped, duplicates, identical = _normalise(source, detection)
        if not rows:
            message = _nothing_usable(dropped, source.count, source.unit)
            unused = [c for c in source.columns if c not in detection.column_mapping.values()]
            used = ", ".join(f"{src} as {fld}" for fld, src in detection.column_mapping.items())
            message += f" The file was read as {detection.format.label}, using {used}."
            if unused:
                message += (
                    f" Not used: {', '.join(map(str, unused))}; map them by hand if they hold the data."
                )
            raise DatasetError(message, path=path, columns=list(source.columns))
        dataset = _build_dataset(rows, output_features(detection))

    notes = source.notes + detection.notes
    return LoadedDataset(
        path=str(path),
        format=detection.format,
        dataset=dataset,
        column_mapping=dict(detection.column_mapping),
        rows_total=source.count,
        rows_kept=len(rows),
        dropped=dropped,
        notes=notes,
        supported_methods=supported_methods(detection.format),
        conversational=detection.conversational,
        source_kind=source.kind,
        position_unit=source.unit,
        duplicates=duplicates,
        identical_pairs=identical,
        source_columns=list(source.columns),
    )


def dataset_for_method(loaded: LoadedDataset, method: str) -> Dataset:
    """The normalised dataset in the columns TRL's trainer for ``method`` reads.

    sft: prompt/completion, messages or text; dpo/orpo/reward:
    prompt/chosen/rejected; kto: prompt/completion/label.
    """
    method = method.strip().lower()
    if method not in ALL_METHODS:
        raise DatasetError(
            f"'{method}' is not a training method AlignStudio knows; choose one of {', '.join(ALL_METHODS)}.",
            path=loaded.path,
        )
    if method not in loaded.supported_methods:
        raise DatasetError(unsupported_reason(method, loaded.format), path=loaded.path)

    ds = loaded.dataset
    if loaded.format.is_paired_preference:
        if method == "sft":
            return ds.select_columns(["prompt", "chosen"]).rename_column("chosen", "completion")
        if method == "kto":
            return _unpair(ds)
        return ds.select_columns(["prompt", "chosen", "rejected"])
    return ds


def preview_rows(loaded: LoadedDataset, n: int = 50) -> list[dict[str, str]]:
    """The first ``n`` normalised rows as text, keyed by the dataset's columns
    (prompt/chosen/rejected, prompt/completion, messages or text); chat
    messages become "role: content" lines."""
    ds = loaded.dataset
    rows = ds.select(range(min(n, len(ds)))).to_list()
    return [{k: flatten_value(v) for k, v in row.items()} for row in rows]


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
    # Progress bars from `datasets` would spill into the CLI and the GUI's log.
    import datasets

    was_disabled = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            datasets.enable_progress_bars()


def _normalise(source: _Source, detection: FormatDetection):
    rows: list[dict[str, Any]] = []
    dropped = list(source.dropped)
    first_seen: dict[tuple, int] = {}
    duplicates = identical = 0
    for pos, raw in source.iter_rows():
        try:
            row = normalise_row(detection, raw)
        except RowProblem as problem:
            dropped.append(DroppedRow(pos, problem.field, problem.reason, problem.code))
            identical += problem.code == "identical_pair"
            continue
        key = _row_key(row)
        if key in first_seen:
            duplicates += 1
            dropped.append(
                DroppedRow(pos, None, f"duplicate of {source.unit} {first_seen[key]}", "duplicate")
            )
            continue
        first_seen[key] = pos
        rows.append(row)
    dropped.sort(key=lambda d: d.line)
    return rows, dropped, duplicates, identical


def _row_key(row: dict[str, Any]) -> tuple:
    # Hashable and cheap; holds references to strings the rows keep anyway.
    return tuple(
        tuple((m["role"], m["content"]) for m in v) if isinstance(v, list) else v for v in row.values()
    )


def _build_dataset(rows_or_columns: list[dict[str, Any]] | dict[str, list], features) -> "Dataset":
    """Rows already in the final types go straight to Arrow: ``Dataset.from_list``
    would re-encode every value in Python (four times slower on 100k rows)."""
    import pyarrow as pa
    from datasets import Dataset

    if isinstance(rows_or_columns, dict):
        table = pa.Table.from_pydict(rows_or_columns, schema=features.arrow_schema)
    else:
        table = pa.Table.from_pylist(rows_or_columns, schema=features.arrow_schema)
    # Without a fingerprint `datasets` hashes the whole table (pickling it);
    # an in-memory dataset never reuses cached results, so a random one does.
    return Dataset(table, fingerprint=uuid.uuid4().hex)


def _nothing_usable(dropped: list[DroppedRow], total: int, unit: str) -> str:
    counts = Counter(d.code for d in dropped)
    parts = []
    for code, count in counts.most_common(3):
        first = next(d for d in dropped if d.code == code)
        where = f"{unit} {first.line}" + (f", '{first.field}'" if first.field else "")
        parts.append(f"{REASON_LABELS.get(code, code)}: {count} ({where}: {first.reason})")
    lead = "The only row could not be used." if total == 1 else f"None of the {total} rows could be used."
    return f"{lead} Most common problems: " + "; ".join(parts) + "."


def unsupported_reason(method: str, fmt: DataFormat) -> str:
    """Why ``method`` cannot train on data in ``fmt``, for a tooltip or error."""
    name = METHOD_NAMES[method]
    if method in ("dpo", "orpo", "reward"):
        if fmt is DataFormat.UNPAIRED_PREFERENCE:
            return (
                f"{name} needs pairs of a chosen and a rejected answer to the same prompt; "
                f"this file has single answers labelled good or bad ({fmt.label}). Use KTO instead."
            )
        return (
            f"{name} needs pairs of a chosen and a rejected answer; this file has single answers "
            f"({fmt.label}). Use SFT, or provide a file with prompt, chosen and rejected columns."
        )
    if method == "kto":
        return (
            f"KTO needs answers marked good or bad; this file has single answers without such a "
            f"judgement ({fmt.label}). Use SFT, or provide preference pairs."
        )
    return (
        f"{name} learns from good examples only; this file mixes good and bad answers ({fmt.label}). Use KTO."
    )


def _unpair(ds: "Dataset") -> "Dataset":
    """Each pair becomes a good and a bad example, kept next to each other so
    every batch sees both labels."""
    from datasets import Features, Value

    columns = ds.select_columns(["prompt", "chosen", "rejected"]).to_dict()
    prompts, completions, labels = [], [], []
    for prompt, chosen, rejected in zip(columns["prompt"], columns["chosen"], columns["rejected"]):
        prompts += [prompt, prompt]
        completions += [chosen, rejected]
        labels += [True, False]
    features = Features(
        {"prompt": ds.features["prompt"], "completion": ds.features["chosen"], "label": Value("bool")}
    )
    return _build_dataset({"prompt": prompts, "completion": completions, "label": labels}, features)


# ----------------------------------------------------------------- reading


def _read_source(path: Path) -> _Source:
    if not path.exists():
        raise DatasetError("The file does not exist.", path=path)
    if path.is_dir():
        return _read_folder(path)
    suffix = path.suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        return _read_parquet(path)
    if suffix in ARROW_SUFFIXES:
        return _read_arrow_file(path)

    data = path.read_bytes()
    if not data.strip():
        raise DatasetError("The file is empty.", path=path)
    if data.startswith(b"PAR1"):
        return _read_parquet(path)
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise DatasetError(
            "The file is saved as UTF-16 text. Save it as UTF-8 (in most editors: "
            "'Save as…' → encoding UTF-8) and load it again.",
            path=path,
        )
    if b"\x00" in data[:8192]:
        raise DatasetError(
            "This is not a text dataset: the file contains binary data. Supported are "
            "JSON Lines, JSON, CSV, Parquet and folders saved with datasets' save_to_disk.",
            path=path,
        )
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]

    if suffix in CSV_SUFFIXES:
        return _read_csv(path, data)
    if suffix in JSON_LINES_SUFFIXES | JSON_SUFFIXES or data.lstrip()[:1] in (b"[", b"{"):
        return _read_json_or_lines(path, data, suffix)
    raise DatasetError(
        f"AlignStudio cannot read '{suffix or 'extension-less'}' files. Supported are JSON Lines "
        "(.jsonl), JSON (.json), CSV (.csv/.tsv), Parquet (.parquet) and folders saved with "
        "datasets' save_to_disk.",
        path=path,
    )


def _decode(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise DatasetError(
            f"The file is not UTF-8 text (byte 0x{data[err.start]:02x} on line {line}). "
            "It was probably saved in another encoding such as Windows-1252 or Latin-1; "
            "save it as UTF-8 and load it again.",
            path=path,
            line=line,
        ) from None


def _read_json_or_lines(path: Path, data: bytes, suffix: str) -> _Source:
    text = _decode(path, data)
    looks_like_array = text.lstrip().startswith("[")
    if suffix in JSON_LINES_SUFFIXES and not looks_like_array:
        return _read_json_lines(path, text)
    try:
        document = json.loads(text)
    except json.JSONDecodeError as err:
        if err.msg == "Extra data" and not looks_like_array:
            source = _read_json_lines(path, text)
            source.notes.insert(0, "The file holds one JSON object per line, so it was read as JSON Lines.")
            return source
        raise DatasetError(
            f"The file is not valid JSON: {err.msg} (line {err.lineno}, column {err.colno}).",
            path=path,
            line=err.lineno,
        ) from None
    return _rows_from_json(path, document)


def _read_json_lines(path: Path, text: str) -> _Source:
    rows: list[tuple[int, dict[str, Any]]] = []
    dropped: list[DroppedRow] = []
    columns: dict[str, None] = {}
    blank = 0
    # split("\n") rather than splitlines(): JSON strings may legally hold
    # U+2028 and similar separators, which splitlines() would break on.
    lines = text.split("\n")
    if lines and not lines[-1].strip():
        lines.pop()  # the newline that ends the last line
    for lineno, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            blank += 1
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            dropped.append(
                DroppedRow(lineno, None, f"not valid JSON: {err.msg} at column {err.colno}", "invalid_json")
            )
            continue
        if not isinstance(obj, dict):
            kind = type(obj).__name__.replace("dict", "object").replace("list", "list [...]")
            dropped.append(DroppedRow(lineno, None, f"is a JSON {kind}, not an object {{...}}", "not_object"))
            continue
        columns.update(dict.fromkeys(obj))
        rows.append((lineno, obj))
    source = _Source("JSON Lines", "line", list(columns), rows=rows, dropped=dropped)
    if rows and blank:
        source.notes.append(f"Skipped {blank} blank line{'s' if blank > 1 else ''}.")
    return source


def _rows_from_json(path: Path, document: Any) -> _Source:
    notes = []
    rows = document
    if isinstance(document, dict):
        rows = None
        lowered = {str(k).lower(): k for k in document}
        for key in _JSON_ROW_KEYS:
            if key in lowered and isinstance(document[lowered[key]], list):
                rows = document[lowered[key]]
                notes.append(f'Read the rows listed under "{lowered[key]}".')
                if key == "train" and len(document) > 1:
                    notes.append("The file has several splits; the train split was used.")
                break
        if rows is None:
            lists = [k for k, v in document.items() if isinstance(v, list) and v and isinstance(v[0], dict)]
            equal_columns = (
                document
                and all(isinstance(v, list) for v in document.values())
                and len({len(v) for v in document.values()}) == 1
            )
            if len(lists) == 1:
                rows = document[lists[0]]
                notes.append(f'Read the rows listed under "{lists[0]}".')
            elif equal_columns:
                keys = list(document)
                rows = [dict(zip(keys, values)) for values in zip(*document.values())]
                notes.append("The file stores columns as lists; they were read as rows.")
            else:
                raise DatasetError(
                    "The JSON file holds an object, but no list of rows was found in it "
                    f"(looked for a list under {', '.join(_JSON_ROW_KEYS[:4])}, ...).",
                    path=path,
                )
    if not isinstance(rows, list):
        raise DatasetError("The JSON file holds a single value, not a list of rows.", path=path)

    kept, dropped, columns = [], [], {}
    for index, row in enumerate(rows, 1):
        if isinstance(row, dict):
            columns.update(dict.fromkeys(row))
            kept.append((index, row))
        else:
            dropped.append(
                DroppedRow(index, None, f"is a {type(row).__name__}, not an object {{...}}", "not_object")
            )
    return _Source("JSON", "row", list(columns), rows=kept, dropped=dropped, notes=notes)


def _read_csv(path: Path, data: bytes) -> _Source:
    text = _decode(path, data)
    sep = "\t" if path.suffix.lower() == ".tsv" else ","
    first_line = text.split("\n", 1)[0]
    if sep == "," and first_line.count(";") > first_line.count(","):
        sep = ";"  # spreadsheet exports in locales that use a decimal comma
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep)
    try:
        header = next(r for r in reader if r)
        starts, end = [], reader.line_num
        for record in reader:
            if record:
                starts.append(end + 1)
            end = reader.line_num
    except (StopIteration, csv.Error) as err:
        raise DatasetError(f"The file could not be read as CSV ({err}).", path=path) from None
    # pandas' names for blank headers, so the two readers agree
    header = [h if h.strip() else f"Unnamed: {i}" for i, h in enumerate(header)]
    repeated = [h for h, n in Counter(header).items() if n > 1]
    if repeated:
        raise DatasetError(f"The column '{repeated[0]}' appears twice in the header.", path=path, line=1)

    from datasets import Dataset, Features, Value

    # Every column is read as text: empty cells stay "" and words such as
    # "NA" or "None" stay words instead of pandas turning them into nulls.
    features = Features({h: Value("string") for h in header})
    try:
        table = _via_cache(
            lambda cache: Dataset.from_csv(
                str(path),
                features=features,
                cache_dir=cache,
                keep_in_memory=True,
                sep=sep,
                encoding="utf-8-sig",
                keep_default_na=False,
                na_filter=False,
            )
        )
    except Exception as err:  # pandas/pyarrow raise many types for bad CSV
        raise _library_error(path, "CSV", err) from None
    positions = starts if len(starts) == len(table) else None
    unit = "line" if positions else "row"
    return _Source("CSV", unit, list(table.column_names), table=table, positions=positions)


def _read_parquet(path: Path) -> _Source:
    from datasets import Dataset

    try:
        table = _via_cache(
            lambda cache: Dataset.from_parquet(str(path), cache_dir=cache, keep_in_memory=True)
        )
    except Exception as err:
        raise _library_error(path, "Parquet", err) from None
    return _Source("Parquet", "row", list(table.column_names), table=table)


def _read_arrow_file(path: Path) -> _Source:
    if (path.parent / "state.json").is_file():
        source = _read_saved_folder(path.parent)
        source.notes.insert(0, f"Loaded the saved dataset folder that contains {path.name}.")
        return source
    from datasets import Dataset

    try:
        table = Dataset.from_file(str(path), in_memory=True)
    except Exception as err:
        raise _library_error(path, "Arrow", err) from None
    return _Source("Arrow", "row", list(table.column_names), table=table)


def _read_folder(path: Path) -> _Source:
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        return _read_saved_folder(path)
    candidates = sorted(
        p
        for p in path.rglob("*")
        if p.is_file()
        and p.suffix.lower() in DATA_SUFFIXES - ARROW_SUFFIXES
        and not p.name.startswith(".")
        and len(p.relative_to(path).parts) <= 3
    )
    if len(candidates) > 1:
        train = [p for p in candidates if "train" in p.name.lower()]
        candidates = train if len(train) == 1 else candidates
    if len(candidates) == 1:
        source = _read_source(candidates[0])
        source.notes.insert(0, f"Loaded {candidates[0].relative_to(path)} from the folder.")
        return source
    if candidates:
        names = ", ".join(str(p.relative_to(path)) for p in candidates[:6])
        raise DatasetError(f"The folder holds several data files ({names}); choose one of them.", path=path)
    raise DatasetError(
        "The folder holds no dataset: expected a folder saved with datasets' save_to_disk, "
        "or a folder with one JSON Lines, JSON, CSV or Parquet file.",
        path=path,
    )


def _read_saved_folder(path: Path) -> _Source:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as err:
        raise _library_error(path, "saved dataset", err) from None
    notes = []
    if isinstance(loaded, datasets.DatasetDict):
        splits = list(loaded)
        if not splits:
            raise DatasetError("The saved dataset has no splits.", path=path)
        split = "train" if "train" in loaded else splits[0]
        loaded = loaded[split]
        others = [s for s in splits if s != split]
        notes.append(
            f"The folder holds the splits {', '.join(splits)}; the {split} split was used."
            if others
            else f"Took the {split} split."
        )
    return _Source("saved dataset (Arrow)", "row", list(loaded.column_names), table=loaded, notes=notes)


def _via_cache(build):
    # `datasets` always writes an Arrow copy to a cache folder, even with
    # keep_in_memory; a private temporary folder keeps the user's cache clean.
    with tempfile.TemporaryDirectory(prefix="alignstudio-data-") as cache:
        return build(cache)


def _library_error(path: Path, kind: str, err: Exception) -> DatasetError:
    text = str(err).strip().splitlines()
    detail = text[-1] if text else type(err).__name__
    line = None
    found = re.search(r"line (\d+)", str(err))
    if found:
        line = int(found.group(1))
    return DatasetError(f"The file could not be read as {kind}: {detail[:300]}", path=path, line=line)
