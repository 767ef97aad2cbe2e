"""Step 1 of the setup: get a dataset in, show what the engine made of it.

A file or folder arrives by drop, dialog or recent list; the data layer loads
it on the thread pool and the panel shows its report and first rows. When the
detection fails or guesses wrong, the user picks the format and maps columns
by hand; that choice is remembered for the file.
"""

from __future__ import annotations

import html
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QMenu,
    QProgressBar,
    QPushButton,
    QTextBrowser,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.train.dataset_loader import DatasetLoader, DatasetLoadFailure, DatasetLoadResult, FormatInfo
from app.train.hub_dataset_picker import HubDatasetPicker
from app.studio_settings import StudioSettings
from backend.data.report import length_balance_text
from widgets.collapsible_section import CollapsibleSection
from widgets.drop_zone import DropZone
from widgets.notice_banner import NoticeBanner
from widgets.preview_table import PreviewTable
from widgets.wheel_guard import calm_focus

DATA_FILE_FILTER = ("Datasets (*.jsonl *.json *.csv *.tsv *.parquet *.arrow *.ndjson *.gz *.bz2 *.xz *.zst);;"
                    "All files (*)")
_AUTO = "(automatic)"


def report_html(report) -> str:
    """The data report as compact HTML for a QTextBrowser."""
    esc = html.escape
    rows = (f"<b>{report.rows_kept:,}</b> rows kept of {report.rows_total:,}"
            + (f", <span style='color:#b45309'><b>{report.rows_dropped:,}</b> left out</span>"
               if report.rows_dropped else ""))
    from backend.methods import method_label

    methods = ", ".join(method_label(m) for m in report.supported_methods)
    usable = f"usable for {esc(methods)}" if methods else "no method the studio can train uses this data yet"
    parts = [
        f"<div><b>{esc(report.format_label)}</b></div>",
        f"<div style='color:#374151'>{rows} · {usable}</div>",
    ]
    mapped = [f"{esc(src)} → {esc(fld)}" for fld, src in report.column_mapping.items() if src != fld]
    if mapped:
        parts.append(f"<div style='color:#6b7280'>Columns: {', '.join(mapped)}</div>")
    if report.rows_dropped:
        parts.append(_left_out_html(report))
    # The block above already says what the warnings about dropped rows say.
    for warning in (w for w in report.warnings if w not in report.drop_warnings):
        parts.append(
            "<table width='100%' cellpadding='5' style='margin-top:4px; background:#fffbeb'>"
            f"<tr><td style='color:#92400e'>⚠ {esc(warning)}</td></tr></table>"
        )
    if report.lengths:
        unit = esc(report.length_unit)
        head = "".join(f"<th align='right' style='color:#6b7280; font-weight:normal'>{h}</th>"
                       for h in ("min", "mean", "median", "p95", "max"))
        body = ""
        for name, s in report.lengths.items():
            colour = {"chosen": "#15803d", "rejected": "#b91c1c"}.get(name, "#1f2937")
            cells = "".join(f"<td align='right'>{v}</td>" for v in (
                s.min, f"{s.mean:.0f}", f"{s.median:.0f}", f"{s.p95:.0f}", s.max))
            body += f"<tr><td style='color:{colour}'>{esc(name)}</td>{cells}</tr>"
        parts.append(
            f"<div style='margin-top:6px; color:#4b5563'>Lengths ({unit}, {report.rows_measured:,} rows)</div>"
            f"<table cellspacing='0' cellpadding='2' width='100%'><tr><th></th>{head}</tr>{body}</table>"
        )
        extra = []
        if report.suggested_max_length:
            extra.append(f"95% of examples fit in {report.suggested_max_length} {unit}")
        if extra:
            parts.append(f"<div style='color:#4b5563'>{'; '.join(extra)}.</div>")
        balance = length_balance_text(report)
        if balance:
            parts.append(f"<div style='color:#4b5563'>{esc(balance)}</div>")
    if not report.rows_dropped:
        parts.append("<div style='color:#15803d; margin-top:4px'>"
                     "No duplicates, no identical pairs, no dropped rows.</div>")
    for note in report.notes:
        parts.append(f"<div style='color:#6b7280'>• {esc(note)}</div>")
    return "".join(parts)


def _left_out_html(report) -> str:
    """Rows left out: how many for each reason, then each one by line and field."""
    esc = html.escape
    left_out = f"{report.rows_dropped:,} row{'s' if report.rows_dropped != 1 else ''} left out"
    reasons = " · ".join(f"{esc(reason)}: {count:,}" for reason, count in report.drop_reasons.items())
    lines = []
    for d in report.dropped_examples:
        where = f"{esc(report.position_unit)} {d['line']}"
        if d.get("field"):
            where += f" · {esc(str(d['field']))}"
        lines.append(f"<tr><td style='color:#9a3412' nowrap>{where}</td><td>{esc(d['reason'])}</td></tr>")
    hidden = report.rows_dropped - len(report.dropped_examples)
    more = f"<div style='color:#6b7280'>… and {hidden:,} more.</div>" if hidden > 0 else ""
    return (
        "<table width='100%' cellpadding='5' style='margin-top:4px; background:#fff7ed'><tr><td>"
        f"<div style='color:#9a3412'><b>{left_out}</b> — {reasons}</div>"
        f"<table cellspacing='0' cellpadding='1'>{''.join(lines)}</table>{more}"
        "</td></tr></table>"
    )


def _source_name(path: str) -> str:
    """A file by its name; a hub dataset by its whole id (its name alone could be anyone's)."""
    from backend.data.hub import is_hub_id

    return path if is_hub_id(path) else Path(path).name


class DataPanel(QWidget):
    """Drop zone, report, preview and the format/column override."""

    sig_dataset_changed = Signal(object)
    """The usable dataset changed: a DatasetLoadResult, or None after a failed load."""

    sig_recent_changed = Signal(list)
    """The list of recently opened files changed."""

    def __init__(self, settings: StudioSettings, tokenizer_provider=None, parent=None):
        super().__init__(parent)
        self._settings = settings
        # Where the chosen model's tokenizer.json is, if on disk: lengths are then counted
        # in that model's tokens instead of estimated from characters.
        self._tokenizer_provider = tokenizer_provider or (lambda: None)
        self._tokenizer_used: str | None = None
        self._remeasuring = False
        self._result: DatasetLoadResult | None = None
        self._failure: DatasetLoadFailure | None = None
        self._path = ""
        self._formats: list[FormatInfo] = []
        self._columns: list[str] = []
        self._override: dict = {}
        self._hub_choice: dict = {}

        self.loader = DatasetLoader(self)
        self.loader.sig_loaded.connect(self._on_loaded)
        self.loader.sig_failed.connect(self._on_failed)
        self.loader.sig_busy.connect(self._on_busy)
        self.loader.sig_progress.connect(self._on_progress)
        self.loader.sig_preview.connect(self._on_preview)
        self.loader.sig_formats_ready.connect(self._on_formats)

        self.drop_zone = DropZone(
            "Drop a dataset here",
            "JSON Lines, JSON, CSV, Parquet (also .gz, .zst…) or a dataset folder — anywhere on the window works too.",
            DATA_FILE_FILTER,
        )
        self.drop_zone.sig_path_chosen.connect(self.load_path)
        self.recent_button = QToolButton()
        self.recent_button.setText("Recent")
        self.recent_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.recent_menu = QMenu(self.recent_button)
        self.recent_button.setMenu(self.recent_menu)
        self.drop_zone.add_button(self.recent_button)

        self.banner = NoticeBanner()
        self.busy_label = QLabel("Reading the file…")
        self.busy_label.setObjectName("phaseLabel")
        self.busy_label.setWordWrap(True)
        self.busy_bar = QProgressBar()
        self.busy_bar.setTextVisible(False)
        self.busy_bar.setFixedWidth(140)
        self.busy_bar.setRange(0, 0)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("Stop reading or downloading; the dataset loaded before stays.")
        self.stop_button.clicked.connect(self.stop_loading)
        self.busy_row = QWidget()
        busy_layout = QHBoxLayout(self.busy_row)
        busy_layout.setContentsMargins(0, 0, 0, 0)
        busy_layout.addWidget(self.busy_label, 1)
        busy_layout.addWidget(self.busy_bar)
        busy_layout.addWidget(self.stop_button)
        self.busy_row.setVisible(False)
        # What was on screen before the load in progress, for when it is stopped.
        self._settled = ("", {}, {}, None)

        self.report_view = QTextBrowser()
        self.report_view.setObjectName("reportView")
        self.report_view.setOpenLinks(False)
        self.report_view.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.report_view.setMinimumHeight(150)
        self.report_view.setMaximumHeight(230)
        self.report_view.setVisible(False)

        self.preview = PreviewTable(placeholder="Select a cell to read it in full; hover a cell for a quick look.")
        self.preview.setMinimumHeight(240)
        self.preview.setVisible(False)

        self.format_combo = QComboBox()
        self.format_combo.addItem("Detect automatically", "")
        self.format_combo.currentIndexChanged.connect(self._rebuild_mapping_rows)
        self._mapping_host = QWidget()
        self._mapping_form = QFormLayout(self._mapping_host)
        self._mapping_form.setContentsMargins(0, 0, 0, 0)
        self._mapping_combos: dict[str, QComboBox] = {}
        self.apply_override_button = QPushButton("Apply and reload")
        self.apply_override_button.clicked.connect(self._apply_override)
        self.forget_override_button = QPushButton("Back to automatic")
        self.forget_override_button.clicked.connect(self._forget_override)
        override_box = QWidget()
        ol = QVBoxLayout(override_box)
        ol.setContentsMargins(0, 0, 0, 0)
        hint = QLabel("If the format was guessed wrong, pick it and say which column holds what. "
                      "The choice is remembered for this file.")
        hint.setObjectName("mutedText")
        hint.setWordWrap(True)
        ol.addWidget(hint)
        form = QFormLayout()
        form.addRow("Format", self.format_combo)
        ol.addLayout(form)
        ol.addWidget(self._mapping_host)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.forget_override_button)
        buttons.addWidget(self.apply_override_button)
        ol.addLayout(buttons)
        self.override_section = CollapsibleSection("Format and columns", override_box, expanded=False)
        self.hub_picker = HubDatasetPicker()
        self.hub_picker.sig_load.connect(self.load_hub)
        self.hub_section = CollapsibleSection("From the Hugging Face Hub", self.hub_picker, expanded=False)
        self.override_section.setVisible(False)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(8)
        layout.addWidget(self.drop_zone)
        layout.addWidget(self.hub_section)
        layout.addWidget(self.busy_row)
        layout.addWidget(self.banner)
        layout.addWidget(self.report_view)
        layout.addWidget(self.preview)
        layout.addWidget(self.override_section)
        self._refresh_recent(self._settings.recent_files())

    # ---------------------------------------------------------------- loading
    def preload(self) -> None:
        self.loader.preload()

    def load_path(self, path: str, data_format: str | None = None, column_map: dict | None = None) -> None:
        """Load ``path``, applying the override remembered for it unless one is given."""
        from backend.data.hub import is_hub_id

        path = path.strip() if is_hub_id(path) else str(Path(path).expanduser())
        if data_format is None and column_map is None:
            remembered = self._settings.data_override(path)
            data_format, column_map = remembered.get("format"), remembered.get("column_map")
        if not self.loader.is_busy():
            self._settled = (self._path, dict(self._override), dict(self._hub_choice), self._tokenizer_used)
        self._path = path
        self._override = {"format": data_format or None, "column_map": column_map or None}
        self.drop_zone.set_current(_source_name(path))
        self.banner.hide_notice()
        self._tokenizer_used = self._tokenizer_provider()
        self._remeasuring = False
        # A hub dataset's split and subset (from the hub picker) hold while the same id is reloaded.
        choice = self._hub_choice if self._hub_choice.get("id") == path else {}
        self._hub_choice = choice
        self.loader.load(path, data_format, column_map, tokenizer_path=self._tokenizer_used,
                         split=choice.get("split", ""), subset=choice.get("subset", ""),
                         revision=choice.get("revision", ""))

    def load_hub(self, repo_id: str, subset: str, split: str, revision: str = "") -> None:
        """Load one split of a Hugging Face dataset chosen in the hub picker."""
        self._hub_choice = {"id": repo_id, "subset": subset, "split": split, "revision": revision}
        self.load_path(repo_id)

    def load_source(self, source: str, data_format: str | None = None, column_map: dict | None = None,
                    split: str = "", subset: str = "", revision: str = "") -> None:
        """Load the data a run config names: a hub id goes back into the hub picker with its
        subset, split and revision (and loads from the cache when offline); a file or folder is loaded
        when it is still there, and otherwise named in the banner."""
        from backend.data.hub import is_hub_id

        if is_hub_id(source):
            self.hub_section.set_expanded(True)
            self.hub_picker.show_choice(source, subset, split, revision)
            self._hub_choice = {"id": source, "subset": subset, "split": split, "revision": revision}
            self.load_path(source, data_format, column_map)
        elif Path(source).expanduser().exists():
            self.load_path(source, data_format, column_map)
        else:
            self.banner.show_notice("warning", "The run's data is not there any more",
                                    f"{source} does not exist. Drop the file, or a copy of it, to train again.")

    def refresh_for_tokenizer(self) -> None:
        """Measure the loaded file again if the model (hence the tokenizer) changed.

        The rows stay the same, so the current dataset stays usable meanwhile."""
        if self._path and self._result is not None and self._tokenizer_provider() != self._tokenizer_used:
            self.load_path(self._path, self._override.get("format") or "", self._override.get("column_map") or {})
            self._remeasuring = True

    def is_reading(self) -> bool:
        """True while a new file (or a new format for it) is being read; a mere re-measure
        with another tokenizer does not count."""
        return self.loader.is_busy() and not self._remeasuring

    def current(self) -> DatasetLoadResult | None:
        return self._result

    def failure(self) -> DatasetLoadFailure | None:
        return self._failure

    def current_path(self) -> str:
        return self._path

    def override(self) -> dict:
        """{"format": value or None, "column_map": dict or None} as used for the current file."""
        return dict(self._override)

    def stop_loading(self) -> None:
        """Stop the read or download in progress; what was loaded before it stays the dataset."""
        if not self.loader.is_busy():
            return
        stopped = self._path
        self.loader.cancel()
        self._path, self._override, self._hub_choice, self._tokenizer_used = self._settled
        self._remeasuring = False
        previous = self._result
        if previous is not None:
            self._show_result(previous)
            text = f"{_source_name(stopped)} was not loaded; {_source_name(previous.path)} is still the dataset."
        else:
            self.drop_zone.set_current(_source_name(self._path) if self._path else "")
            self.preview.set_rows([])
            self.preview.setVisible(False)
            text = f"{_source_name(stopped)} was not loaded."
        self.banner.show_notice("info", "Loading stopped", text)

    def _on_busy(self, busy: bool) -> None:
        if busy:
            self.busy_label.setText("Reading the file…")
            self.busy_bar.setRange(0, 0)
        self.busy_row.setVisible(busy)

    def _on_progress(self, progress) -> None:
        self.busy_label.setText(progress.text)
        if progress.bytes_total:
            self.busy_bar.setRange(0, 1000)
            self.busy_bar.setValue(min(1000, 1000 * progress.bytes_done // progress.bytes_total))
        else:
            self.busy_bar.setRange(0, 0)  # how much is left is not known: a moving busy bar

    def _on_preview(self, rows: list[dict[str, str]]) -> None:
        """The first rows of a file still being read: shown at once, the report follows."""
        if self._remeasuring:
            return  # the same rows are on screen already
        self.banner.hide_notice()
        self.report_view.setVisible(False)
        self.preview.set_rows(rows)
        self.preview.setVisible(True)

    def _on_loaded(self, result: DatasetLoadResult) -> None:
        if self._result is not None and self._result.measuring and result.loaded is self._result.loaded:
            # The same rows, now measured with the model's tokenizer: only the report changes
            # (the loader's end of busy revalidates the settings against it).
            self._result = result
            self.report_view.setHtml(report_html(result.report))
            return
        self._result = result
        self._failure = None
        self._columns = list(result.source_columns)
        recent = self._settings.add_recent_file(result.path)
        self._refresh_recent(recent)
        self.banner.hide_notice()
        self._show_result(result)
        self._select_format(self._override.get("format") or "")
        self.sig_dataset_changed.emit(result)

    def _show_result(self, result: DatasetLoadResult) -> None:
        self.drop_zone.set_current(f"{_source_name(result.path)} · {result.format_label}")
        self.report_view.setHtml(report_html(result.report))
        self.report_view.setVisible(True)
        self.preview.set_rows(result.preview)
        self.preview.setVisible(True)
        self.override_section.setVisible(True)

    def _on_failed(self, failure: DatasetLoadFailure) -> None:
        self._result = None
        self._failure = failure
        if failure.columns:
            self._columns = list(failure.columns)
        self.drop_zone.set_current(_source_name(failure.path))
        title = "This dataset cannot be used yet" if failure.expected else "Reading the dataset failed"
        self.banner.show_notice("error", title, failure.message, details=failure.details)
        self.report_view.setVisible(False)
        self.preview.set_rows([])
        self.preview.setVisible(False)
        self.override_section.setVisible(True)
        if failure.columns:
            self.override_section.set_expanded(True)
        self._select_format(self._override.get("format") or "")
        self.sig_dataset_changed.emit(None)

    # ------------------------------------------------------------- override
    def _on_formats(self, formats: list[FormatInfo]) -> None:
        self._formats = list(formats)
        current = self.format_combo.currentData()
        self.format_combo.blockSignals(True)
        self.format_combo.clear()
        self.format_combo.addItem("Detect automatically", "")
        for info in self._formats:
            self.format_combo.addItem(info.label, info.value)
        self.format_combo.blockSignals(False)
        self._select_format(current or "")

    def _select_format(self, value: str) -> None:
        idx = self.format_combo.findData(value or "")
        self.format_combo.setCurrentIndex(max(idx, 0))
        self._rebuild_mapping_rows()

    def _format_info(self, value: str) -> FormatInfo | None:
        return next((f for f in self._formats if f.value == value), None)

    def _rebuild_mapping_rows(self, *_args) -> None:
        while self._mapping_form.rowCount():
            self._mapping_form.removeRow(0)
        self._mapping_combos.clear()
        value = self.format_combo.currentData() or (self._result.format_value if self._result else "")
        info = self._format_info(value)
        if info is None:
            return
        chosen = dict(self._override.get("column_map") or {})
        detected = dict(self._result.loaded.column_mapping) if self._result else {}
        for name in info.required + info.optional:
            combo = QComboBox()
            combo.setEditable(True)
            calm_focus(combo)  # built per file, after the window's guard calmed the first fields
            combo.addItem(_AUTO, "")
            for column in self._columns:
                combo.addItem(column, column)
            current = chosen.get(name) or ""
            if current and combo.findData(current) < 0:
                combo.addItem(current, current)
            combo.setCurrentIndex(max(combo.findData(current), 0))
            if not current and detected.get(name):
                combo.setItemText(0, f"{_AUTO}: {detected[name]}")
            label = name + ("" if name in info.required else " (optional)")
            self._mapping_form.addRow(label, combo)
            self._mapping_combos[name] = combo

    def chosen_override(self) -> tuple[str | None, dict | None]:
        fmt = self.format_combo.currentData() or None
        mapping = {}
        for name, combo in self._mapping_combos.items():
            text = combo.currentText().strip()
            if not text or text.startswith(_AUTO):
                continue
            mapping[name] = text
        return fmt, (mapping or None)

    def set_override(self, data_format: str | None, column_map: dict | None) -> None:
        """Programmatic equivalent of picking a format and mapping columns (tests, scripts)."""
        self._override = {"format": data_format, "column_map": column_map}
        self._select_format(data_format or "")

    def _apply_override(self) -> None:
        if not self._path:
            return
        fmt, mapping = self.chosen_override()
        self._settings.set_data_override(self._path, fmt, mapping)
        self.load_path(self._path, fmt or "", mapping or {})

    def _forget_override(self) -> None:
        if not self._path:
            return
        self._settings.set_data_override(self._path, None, None)
        self.format_combo.setCurrentIndex(0)
        self.load_path(self._path, "", {})

    # ---------------------------------------------------------------- recent
    def _refresh_recent(self, files: list[str]) -> None:
        self.recent_menu.clear()
        for path in files:
            action = self.recent_menu.addAction(Path(path).name)
            action.setToolTip(path)
            action.setData(path)
            action.triggered.connect(lambda _checked=False, p=path: self.load_path(p))
        self.recent_button.setEnabled(bool(files))
        self.sig_recent_changed.emit(files)
