"""What every Compare view shares: one request at a time on the tab's worker, a Stop
button, the worker's status lines for that request, and the same checks before a start.

The four views (side by side, batch, playground, best-of-N) differ in what they
send and show; this base owns the request id and the busy/idle bookkeeping, so a
view cannot forget to re-enable its buttons when a request ends, is stopped, or is
cut short by a release of the worker (the link then answers with a cancelled
``RequestFinished``, which ends the request here like any other).
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QComboBox, QLayout, QPushButton, QSplitter, QVBoxLayout, QWidget


class RequestView(QWidget):
    sig_busy_changed = Signal(bool)
    """A request of this view started (True) or ended (False)."""

    # Subclasses name the button that starts a request and what it does when nothing blocks it.
    start_tip = ""

    def __init__(self, host, stop_tip: str = "", parent=None):
        """``host`` is the Compare tab: the worker link, the sampling settings, problem
        messages, and ``run_when_ready`` (loads the picked run first when needed)."""
        super().__init__(parent)
        self.host = host
        self.link = host.link
        self._request_id = ""
        self.stop_button = QPushButton("Stop")
        self.stop_button.setObjectName("stopButton")
        self.stop_button.setEnabled(False)
        if stop_tip:
            self.stop_button.setToolTip(stop_tip)
        self.stop_button.clicked.connect(self.stop)
        self.link.sig_status.connect(self._on_request_status)
        self.link.sig_finished.connect(self._on_request_finished)

    # ------------------------------------------------------------- for subclasses
    def start_button(self) -> QPushButton:
        raise NotImplementedError

    def locked_while_running(self) -> tuple[QWidget, ...]:
        """Fields that shape a request and must not change while it runs."""
        return ()

    def can_start_here(self) -> tuple[bool, str]:
        """What this view itself needs before a start (a source of prompts...): (ok, why not)."""
        return True, ""

    def show_status(self, text: str) -> None:
        """A status line from the worker about this view's request."""

    def on_stopping(self) -> None:
        """Stop was pressed; the request ends when the worker answers."""

    def on_request_finished(self, event) -> None:
        """The request ended (done, failed, stopped or released); ``_request_id`` is already clear."""

    # ------------------------------------------------------------------ shared
    def is_running(self) -> bool:
        return bool(self._request_id)

    def lay_out(self, controls: QWidget, body: QWidget | QLayout) -> QVBoxLayout:
        """The controls card above what the view shows, spaced alike in every view."""
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 10, 0, 0)
        layout.setSpacing(10)
        layout.addWidget(controls)
        if isinstance(body, QLayout):
            layout.addLayout(body, 1)
        else:
            layout.addWidget(body, 1)
        return layout

    def sampling_or_problem(self) -> dict | None:
        """The sampling settings, or None with the problem shown."""
        sampling = self.host.sampling()
        if sampling is None:
            self.host.show_problem("A sampling setting is not valid", "Fix the setting marked in red.")
        return sampling

    def typed_prompt(self, text: str) -> Any:
        """Typed text as the worker takes it: as-is for a run trained on plain text, else as one
        user message (the model's chat template then applies). None when it is blank."""
        if not text.strip():
            return None
        ready = self.link.ready_event()
        if ready is not None and ready.prompt_style == "chat":
            return [{"role": "user", "content": text}]
        return text

    def begin(self, request_id: str | None) -> bool:
        """Track a request the link accepted (a None id was refused; the link said why)."""
        if request_id is None:
            return False
        self._request_id = request_id
        self.sync_buttons()
        self.sig_busy_changed.emit(True)
        return True

    def stop(self) -> None:
        if self._request_id:
            self.link.cancel(self._request_id)
            self.on_stopping()

    def set_can_start(self, can: bool, why: str = "") -> None:
        here, why_not_here = self.can_start_here()
        button = self.start_button()
        button.setEnabled(can and not self._request_id and here)
        button.setToolTip(why or (self.start_tip if here else why_not_here))

    def sync_buttons(self) -> None:
        running = bool(self._request_id)
        self.stop_button.setEnabled(running)
        for widget in self.locked_while_running():
            widget.setEnabled(not running)
        self.host.refresh_actions()

    def _on_request_status(self, event) -> None:
        if event.request_id and event.request_id == self._request_id and event.message:
            self.show_status(event.message)

    def _on_request_finished(self, event) -> None:
        if not self._request_id or event.request_id != self._request_id:
            return
        self._request_id = ""
        self.on_request_finished(event)
        self.sync_buttons()
        self.sig_busy_changed.emit(False)


def offer_sides(combo: QComboBox, ready) -> None:
    """The "aligned" entry is only pickable when an adapter is loaded; without one the
    combo falls back to "base" (nothing loaded yet counts as "may have one")."""
    has_adapter = ready is None or ready.has_adapter
    combo.model().item(combo.findData("aligned")).setEnabled(has_adapter)
    if not has_adapter and combo.currentData() == "aligned":
        combo.setCurrentIndex(combo.findData("base"))


def split(orientation: Qt.Orientation, first: QWidget, second: QWidget, stretch: tuple[int, int]) -> QSplitter:
    """Two parts that share the space by ``stretch`` and can be resized but never collapsed."""
    splitter = QSplitter(orientation)
    splitter.addWidget(first)
    splitter.addWidget(second)
    splitter.setStretchFactor(0, stretch[0])
    splitter.setStretchFactor(1, stretch[1])
    splitter.setChildrenCollapsible(False)
    return splitter
