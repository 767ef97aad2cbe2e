"""Load and report on a dataset off the GUI thread.

The data layer imports the ``datasets`` library (over a second) and may read a
file of gigabytes, so every call into it runs on the global thread pool.
Progress, the first rows and the result come back as plain objects through
queued signals. A newer request replaces the one in progress: the old scan is
asked to stop (it checks about ten times a second) and whatever it still
sends is dropped.
"""

from __future__ import annotations

import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal



@dataclass
class FormatInfo:
    """A dataset format as the GUI needs it, without importing the data layer."""

    value: str
    label: str
    required: tuple[str, ...]
    optional: tuple[str, ...]


@dataclass
class ScanProgress:
    """How far the latest request has read (or downloaded) its data."""

    bytes_done: int  # a download counts thousandths of its whole here
    bytes_total: int  # 0: how much is left is not known
    text: str  # e.g. "Scanning… 43% (1.2 of 2.8 GB)", "Downloading acme/prefs… 12% (…), file 1 of 3"


@dataclass
class DatasetLoadResult:
    path: str
    loaded: Any  # backend.data.loading.LoadedDataset
    report: Any  # backend.data.report.DataReport
    report_text: str
    preview: list[dict[str, str]]
    source_columns: list[str]
    format_value: str
    format_label: str
    supported_methods: list[str]
    unsupported_reasons: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    measuring: bool = False  # lengths estimated from characters; the measured result follows


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
    early = Signal(int, object)
    failed = Signal(int, object)
    progress = Signal(int, object)
    preview = Signal(int, object)
    formats = Signal(object)


class _Request:
    """One load, and whether a newer one (or the loader's end) has replaced it.

    The pool thread checks ``replaced`` before it sends anything, so a load that
    outlives its loader (the window closed during a scan) stops and stays quiet."""

    def __init__(self, generation: int, signals: _Signals) -> None:
        self.generation = generation
        self.replaced = False
        self._signals = signals

    def send_and_wait(self, name: str, payload, timeout: float = 1.0) -> None:
        """Send, then wait (briefly) until the GUI thread has handled it.

        Used before work that holds the GIL for a second (parsing a large
        tokenizer.json): without the wait, the GUI thread would get the early
        report only after that parse."""
        handled = threading.Event()
        self.send(name, (payload, handled))
        handled.wait(timeout)

    def send(self, name: str, *args) -> None:
        if self.replaced:
            return
        try:
            getattr(self._signals, name).emit(self.generation, *args)
        except RuntimeError:
            pass  # the loader was deleted between the check and the emit


class _Requests:
    """The latest request; replaced by the next one or when the loader goes."""

    def __init__(self) -> None:
        self.current: _Request | None = None

    def replace(self, request: _Request | None) -> None:
        if self.current is not None:
            self.current.replaced = True
        self.current = request


class _Task(QRunnable):
    def __init__(self, fn):
        super().__init__()
        self._fn = fn

    def run(self):
        self._fn()


class DatasetLoader(QObject):
    """Loads one dataset at a time; the newest request wins."""

    sig_loaded = Signal(object)
    """DatasetLoadResult for the latest request. When the model's tokenizer is slow to parse, a
    result with ``measuring=True`` (lengths estimated from characters) comes first and the
    measured one follows; the loader stays busy until then."""

    sig_failed = Signal(object)
    """DatasetLoadFailure for the latest request: a clear message, and the file's columns if known."""

    sig_busy = Signal(bool)
    """Loading started (True) or ended (False)."""

    sig_progress = Signal(object)
    """ScanProgress of the latest request, a few times a second while its file is read."""

    sig_preview = Signal(object)
    """The latest request's first rows as text ({column: text} dicts), before the whole file is read."""

    sig_formats_ready = Signal(object)
    """The list of FormatInfo, once the data layer is imported (in the background)."""

    def __init__(self, parent=None, pool: QThreadPool | None = None):
        super().__init__(parent)
        self._pool = pool or QThreadPool.globalInstance()
        self._signals = _Signals(self)  # parented: destroyed with the loader, on the GUI thread
        self._signals.loaded.connect(self._on_loaded)
        self._signals.early.connect(self._on_early)
        self._signals.failed.connect(self._on_failed)
        self._signals.progress.connect(self._on_progress)
        self._signals.preview.connect(self._on_preview)
        self._signals.formats.connect(self.sig_formats_ready)
        self._generation = 0
        requests = self._requests = _Requests()
        # A scan still running when the loader goes stops; the lambda must not use
        # the loader, which is being destroyed.
        self.destroyed.connect(lambda *_: requests.replace(None))
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
             tokenizer_path: str | None = None, split: str = "", subset: str = "", revision: str = "") -> None:
        self._generation += 1
        request = _Request(self._generation, self._signals)
        self._requests.replace(request)
        self._set_busy(True)

        def work():
            try:
                result = load_and_report(
                    path, data_format, column_map, tokenizer_path,
                    progress=lambda progress: request.send("progress", progress),
                    preview=lambda rows: request.send("preview", rows),
                    should_stop=lambda: request.replaced,
                    early=lambda early_result: request.send_and_wait("early", early_result),
                    split=split, subset=subset, revision=revision,
                )
            except Exception as exc:
                request.send("failed", failure_from_exception(path, exc))
                return
            request.send("loaded", result)

        self._pool.start(_Task(work))

    def cancel(self) -> None:
        """Stop the load in progress: its scan or download ends at its next check (a
        tenth of a second, or the next downloaded chunk) and nothing it sends is shown."""
        if not self._busy:
            return
        self._generation += 1
        self._requests.replace(None)
        self._set_busy(False)

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

    def _on_early(self, generation: int, payload) -> None:
        result, handled = payload
        try:
            if generation == self._generation and self._busy:
                self.sig_loaded.emit(result)
        finally:
            handled.set()

    def _on_failed(self, generation: int, failure: DatasetLoadFailure) -> None:
        if generation != self._generation:
            return
        self._set_busy(False)
        self.sig_failed.emit(failure)

    def _on_progress(self, generation: int, progress: ScanProgress) -> None:
        if generation == self._generation and self._busy:
            self.sig_progress.emit(progress)

    def _on_preview(self, generation: int, rows: list[dict[str, str]]) -> None:
        if generation == self._generation and self._busy:
            self.sig_preview.emit(rows)


# ------------------------------------------------------ worker-thread code
def format_catalog() -> list[FormatInfo]:
    from backend.data.formats import FORMAT_FIELDS, DataFormat

    return [FormatInfo(fmt.value, fmt.label, *FORMAT_FIELDS.get(fmt, ((), ()))) for fmt in DataFormat]


def load_and_report(path: str, data_format: str | None, column_map: dict | None,
                    tokenizer_path: str | None, *, progress=None, preview=None,
                    should_stop=None, early=None, split: str = "", subset: str = "",
                    revision: str = "") -> DatasetLoadResult:
    """Load ``path`` and measure it. While the file is read, ``progress`` gets
    ScanProgress, ``preview`` the first rows as text, and ``should_stop()``
    returning True ends the work with LoadCancelled. When parsing the tokenizer
    would hold the report back (a large vocabulary, not parsed yet in this
    process), ``early`` first gets a result whose lengths are estimated from
    characters, so the report is on screen while the tokenizer loads."""
    from backend.data import loading as dataset_loading
    from backend.data.hub import reporting_downloads
    from backend.models import tokenizer_cache
    from backend.data.report import build_report, format_report_text, scan_progress_text

    def report_progress(done: int, total: int) -> None:
        progress(ScanProgress(done, total, scan_progress_text(done, total)))

    def report_preview(rows: list[dict]) -> None:
        preview([{k: dataset_loading.flatten_value(v) for k, v in row.items()} for row in rows])

    def report_download(step) -> None:
        # A download's share in thousandths (by bytes, or by files when the sizes are not
        # known); none while `datasets` prepares the files, which it does not measure.
        share = None if step.preparing else step.fraction()
        progress(ScanProgress(0, 0, step.text()) if share is None else ScanProgress(round(1000 * share), 1000,
                                                                                    step.text()))

    start = time.perf_counter()
    with reporting_downloads(report_download if progress else (lambda _step: None), should_stop):
        loaded = dataset_loading.load_dataset_file(
            path, format=data_format or None, column_map=column_map or None, split=split, subset=subset,
            revision=revision,
            progress=report_progress if progress else None,
            on_preview=report_preview if preview else None,
            should_stop=should_stop,
        )
    if should_stop is not None and should_stop():
        raise dataset_loading.LoadCancelled("Loading was cancelled.")
    from backend.methods import method_keys

    reasons = {method: dataset_loading.unsupported_reason(method, loaded.format)
               for method in method_keys() if method not in loaded.supported_methods}
    preview_rows = dataset_loading.preview_rows(loaded, dataset_loading.PREVIEW_ROWS)

    def result(report, measuring: bool = False) -> DatasetLoadResult:
        return DatasetLoadResult(
            path=str(path),
            loaded=loaded,
            report=report,
            report_text=format_report_text(report),
            preview=preview_rows,
            source_columns=list(loaded.source_columns),
            format_value=loaded.format.value,
            format_label=loaded.format.label,
            supported_methods=list(loaded.supported_methods),
            unsupported_reasons=reasons,
            seconds=time.perf_counter() - start,
            measuring=measuring,
        )

    if early is not None and tokenizer_path and tokenizer_cache.loading_is_slow(tokenizer_path):
        early(result(build_report(loaded, tokenizer_path=None), measuring=True))
    if progress:
        progress(ScanProgress(1, 1, "Measuring the rows…"))
    return result(build_report(loaded, tokenizer_path=tokenizer_path))


def failure_from_exception(path: str, exc: BaseException) -> DatasetLoadFailure:
    try:
        from backend.data.formats import DatasetError
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
