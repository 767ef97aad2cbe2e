"""Load and report on a dataset off the GUI thread.

The data layer imports the ``datasets`` library (over a second) and may read a
large file, so every call into it runs on the global thread pool. Results come
back as plain objects through queued signals; a result for a file the user has
since replaced is dropped.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal

METHOD_NAMES = {"sft": "SFT", "dpo": "DPO", "orpo": "ORPO"}


@dataclass
class FormatInfo:
    """A dataset format as the GUI needs it, without importing the data layer."""

    value: str
    label: str
    required: tuple[str, ...]
    optional: tuple[str, ...]


@dataclass
class DatasetLoadResult:
    path: str
    loaded: Any  # backend.dataset_loading.LoadedDataset
    report: Any  # backend.dataset_report.DataReport
    report_text: str
    preview: list[dict[str, str]]
    source_columns: list[str]
    format_value: str
    format_label: str
    supported_methods: list[str]
    unsupported_reasons: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class DatasetLoadFailure:
    path: str
    message: str
    columns: list[str] = field(default_factory=list)
    line: int | None = None
    field: str | None = None
    details: str = ""
    expected: bool = True  # a DatasetError (the file's fault) rather than a bug


class _Signals(QObject):
    """Carries results from pool threads to the GUI thread (queued connections)."""

    loaded = Signal(int, object)
    failed = Signal(int, object)
    formats = Signal(object)


class _Task(QRunnable):
    def __init__(self, fn):
        super().__init__()
        self._fn = fn

    def run(self):
        self._fn()


class DatasetLoader(QObject):
    """Loads one dataset at a time; the newest request wins."""

    sig_loaded = Signal(object)
    """DatasetLoadResult for the latest request."""

    sig_failed = Signal(object)
    """DatasetLoadFailure for the latest request: a clear message, and the file's columns if known."""

    sig_busy = Signal(bool)
    """Loading started (True) or ended (False)."""

    sig_formats_ready = Signal(object)
    """The list of FormatInfo, once the data layer is imported (in the background)."""

    def __init__(self, parent=None, pool: QThreadPool | None = None):
        super().__init__(parent)
        self._pool = pool or QThreadPool.globalInstance()
        self._signals = _Signals(self)  # parented: destroyed with the loader, on the GUI thread
        self._signals.loaded.connect(self._on_loaded)
        self._signals.failed.connect(self._on_failed)
        self._signals.formats.connect(self.sig_formats_ready)
        self._generation = 0
        self._busy = False

    def preload(self) -> None:
        """Import the data layer in the background, so the first drop is quick."""
        signals = self._signals

        def work():
            try:
                signals.formats.emit(format_catalog())
            except Exception:
                traceback.print_exc()

        self._pool.start(_Task(work))

    def is_busy(self) -> bool:
        return self._busy

    def load(self, path: str, data_format: str | None = None, column_map: dict | None = None,
             tokenizer_path: str | None = None) -> None:
        self._generation += 1
        generation = self._generation
        signals = self._signals
        self._set_busy(True)

        def work():
            try:
                result = load_and_report(path, data_format, column_map, tokenizer_path)
            except Exception as exc:
                signals.failed.emit(generation, failure_from_exception(path, exc))
                return
            signals.loaded.emit(generation, result)

        self._pool.start(_Task(work))

    def wait(self, msecs: int = 30000) -> bool:
        return self._pool.waitForDone(msecs)

    def _set_busy(self, busy: bool) -> None:
        if busy != self._busy:
            self._busy = busy
            self.sig_busy.emit(busy)

    def _on_loaded(self, generation: int, result: DatasetLoadResult) -> None:
        if generation != self._generation:
            return
        self._set_busy(False)
        self.sig_loaded.emit(result)

    def _on_failed(self, generation: int, failure: DatasetLoadFailure) -> None:
        if generation != self._generation:
            return
        self._set_busy(False)
        self.sig_failed.emit(failure)


# ------------------------------------------------------ worker-thread code
def format_catalog() -> list[FormatInfo]:
    from backend.dataset_formats import FORMAT_FIELDS, DataFormat

    return [FormatInfo(fmt.value, fmt.label, *FORMAT_FIELDS.get(fmt, ((), ()))) for fmt in DataFormat]


def load_and_report(path: str, data_format: str | None, column_map: dict | None,
                    tokenizer_path: str | None) -> DatasetLoadResult:
    from backend import dataset_loading
    from backend.dataset_report import build_report, format_report_text

    start = time.perf_counter()
    loaded = dataset_loading.load_dataset_file(path, format=data_format or None, column_map=column_map or None)
    report = build_report(loaded, tokenizer_path=tokenizer_path)
    preview = dataset_loading.preview_rows(loaded, 50)
    columns = list(getattr(loaded, "source_columns", None) or [])
    if not columns:
        # Until the data layer reports every source column, offer at least the mapped ones.
        columns = list(dict.fromkeys(loaded.column_mapping.values()))
    reasons = {}
    # The data layer words these reasons; until it exports the helper, use its private one.
    explain = (getattr(dataset_loading, "unsupported_reason", None)
               or getattr(dataset_loading, "_unsupported_reason", None))
    for method in METHOD_NAMES:
        if method in loaded.supported_methods:
            continue
        try:
            reasons[method] = explain(method, loaded.format) if explain else ""
        except Exception:
            reasons[method] = ""
        if not reasons[method]:
            reasons[method] = f"{METHOD_NAMES[method]} cannot train on {loaded.format.label}."
    return DatasetLoadResult(
        path=str(path),
        loaded=loaded,
        report=report,
        report_text=format_report_text(report),
        preview=preview,
        source_columns=columns,
        format_value=loaded.format.value,
        format_label=loaded.format.label,
        supported_methods=list(loaded.supported_methods),
        unsupported_reasons=reasons,
        seconds=time.perf_counter() - start,
    )


def failure_from_exception(path: str, exc: BaseException) -> DatasetLoadFailure:
    try:
        from backend.dataset_formats import DatasetError
    except Exception:  # the data layer itself failed to import
        DatasetError = ()  # noqa: N806
    if DatasetError and isinstance(exc, DatasetError):
        return DatasetLoadFailure(path=str(path), message=str(exc), columns=list(exc.columns or []),
                                  line=exc.line, field=exc.field)
    return DatasetLoadFailure(
        path=str(path),
        message=f"The file could not be read: {type(exc).__name__}: {exc}",
        details="".join(traceback.format_exception(exc)),
        expected=False,
    )
