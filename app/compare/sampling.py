"""The sampling settings form, generated from ``SamplingSettings`` and its field metadata.

The protocol's dataclass is the one source of truth for labels, help texts,
ranges and defaults; this panel only parses and flags what was typed. Both
sides always use the same settings and seed.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QLabel, QSpinBox, QVBoxLayout, QWidget

from backend.generation.protocol import (SamplingSettings, parse_stop_strings, stop_string_problems,
                                         stop_strings_text)
from widgets.config_form import ConfigForm, keep_spin_text_visible

# Ignored by greedy decoding; greyed out while it is on so the form says so.
SAMPLING_ONLY = ("temperature", "top_p", "top_k")


class SamplingPanel(QWidget):
    sig_changed = Signal()
    """A sampling setting was edited."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.form = ConfigForm(advanced_title="More sampling settings", group_titles=False)
        self.form.build(dataclasses.fields(SamplingSettings), SamplingSettings().to_dict())
        self.form.editor("seed").setPlaceholderText("random")
        stops = self.form.editor("stop_strings")
        stops.setPlaceholderText("none: only the end-of-text token")
        # Until edited, the field shows the loaded run's default and sends "the run's default"
        # (None), so a request made while the model still loads stops where the run's should.
        self._stops_edited = False
        self._default_stops: list[str] = []
        stops.textEdited.connect(self._on_stops_edited)
        for name in self.form.field_names():
            editor = self.form.editor(name)
            if isinstance(editor, QSpinBox):
                keep_spin_text_visible(editor)
        self.form.sig_values_changed.connect(self._on_edit)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.form)
        # What "auto" chose for the loaded model, and why not llama.cpp when it did not.
        self.backend_status = QLabel("")
        self.backend_status.setWordWrap(True)
        self.backend_status.setVisible(False)
        layout.addWidget(self.backend_status)
        self._sync_greedy()

    def set_backend_status(self, backend: str, note: str = "") -> None:
        """The loaded model's generation backend (ModelReady.generation_backend and backend_note)."""
        self.backend_status.setText(note or f"Generating with {backend}.")  # a note says which, and why
        self.backend_status.setVisible(bool(backend))

    def _on_stops_edited(self, _text: str) -> None:
        self._stops_edited = True

    def set_default_stops(self, stops: list[str]) -> None:
        """The loaded run's default stop strings; shown unless the user typed their own."""
        self._default_stops = list(stops)
        if not self._stops_edited:
            self.form.set_values({"stop_strings": stop_strings_text(stops)})
            self.form.set_problems(self.problems())

    def _on_edit(self) -> None:
        self._sync_greedy()
        self.form.set_problems(self.problems())
        self.sig_changed.emit()

    def _sync_greedy(self) -> None:
        greedy = self.form.editor("greedy").isChecked()
        for name in SAMPLING_ONLY:
            self.form.editor(name).setEnabled(not greedy)

    def set_values(self, values: dict[str, Any]) -> None:
        shown = dict(values)
        if "seed" in shown and shown["seed"] is None:
            shown["seed"] = ""
        if "stop_strings" in shown:
            self._stops_edited = shown["stop_strings"] is not None
            stops = self._default_stops if shown["stop_strings"] is None else shown["stop_strings"]
            shown["stop_strings"] = stop_strings_text(stops)
        self.form.set_values(shown)
        self._sync_greedy()
        self.form.set_problems(self.problems())

    def _parsed(self) -> tuple[dict[str, Any], dict[str, str]]:
        problems = dict(self.form.parse_problems())
        values = self.form.values()
        seed_text = str(values.get("seed") or "").strip()
        if not seed_text:
            values["seed"] = None
        else:
            try:
                values["seed"] = int(seed_text)
            except ValueError:
                problems["seed"] = f"Seed: '{seed_text}' is not a whole number"
        try:
            stops = parse_stop_strings(str(values.get("stop_strings") or ""))
            values["stop_strings"] = stops if self._stops_edited else None
            found = stop_string_problems(stops)
            if found:
                problems["stop_strings"] = found[0]
        except ValueError as exc:
            problems["stop_strings"] = f"Stop at: {exc}"
        for f in dataclasses.fields(SamplingSettings):
            value = values.get(f.name)
            if f.name in problems or value is None or isinstance(value, (bool, str, list)):
                continue
            lo, hi = f.metadata.get("min"), f.metadata.get("max")
            if (lo is not None and value < lo) or (hi is not None and value > hi):
                problems[f.name] = f"Between {lo:g} and {hi:g}"
        return values, problems

    def problems(self) -> dict[str, str]:
        return self._parsed()[1]

    def settings(self) -> dict[str, Any] | None:
        """The settings as the worker takes them, or None (with the fields flagged) when some do not parse."""
        values, problems = self._parsed()
        self.form.set_problems(problems)
        if problems:
            return None
        return SamplingSettings.from_dict(values).to_dict()


