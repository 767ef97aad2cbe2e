"""Step 4 of the setup: will this run fit in memory, and if not, what to change.

The estimator lives in ``backend.training.memory_estimate``. It may read a model's
config from disk, so it runs on the thread pool, debounced while the user types.
"""

from __future__ import annotations

import html
import traceback

from PySide6.QtCore import QTimer, Signal
from PySide6.QtWidgets import QLabel, QProgressBar, QVBoxLayout, QWidget

from app.background_call import call_in_background
from backend.training.memory_estimate import PART_LABELS, estimate_memory


def _mb(value: float | None) -> str:
    if value is None:
        return "?"
    return f"{value / 1024:.1f} GB" if value >= 1024 else f"{value:.0f} MB"


class MemoryPanel(QWidget):
    sig_estimate_ready = Signal(object)
    """A fresh MemoryEstimate for the current settings."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self._estimate_fn = estimate_memory
        self._generation = 0
        self._pending = None
        self.last_estimate = None
        self.headline = QLabel()
        self.headline.setWordWrap(True)
        self.fits_label = QLabel()
        self.bar = QProgressBar()
        self.bar.setRange(0, 100)
        self.bar.setTextVisible(False)
        self.bar.setMaximumHeight(10)
        self.parts = QLabel()
        self.parts.setWordWrap(True)
        self.suggestions = QLabel()
        self.suggestions.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(6)
        for w in (self.headline, self.fits_label, self.bar, self.parts, self.suggestions):
            layout.addWidget(w)
        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(250)
        self._debounce.timeout.connect(self._run)
        for w in (self.fits_label, self.bar, self.parts, self.suggestions):
            w.setVisible(False)
        self.headline.setText("Estimating…")

    def request(self, config, device_info: dict | None, answer_tokens: int | None = None) -> None:
        """Estimate for ``config`` on ``device_info`` soon (later calls replace earlier ones).
        ``answer_tokens``: the data's longest answer, when its report has measured it."""
        if config is None:
            return
        self._pending = (config, dict(device_info or {"kind": "cpu"}), answer_tokens)
        self._debounce.start()

    def estimate_now(self, config, device_info: dict | None, answer_tokens: int | None = None):
        """Synchronous estimate (for the run record); None without a config or on error.
        An error does not stop the launch (the estimate is advice), but it is said on the
        card and its traceback goes to the console, not swallowed."""
        if config is None:
            return None
        try:
            return self._estimate(config, dict(device_info or {"kind": "cpu"}), answer_tokens)
        except Exception as exc:  # noqa: BLE001 - any failure of the estimator is a bug to show, not to hide
            traceback.print_exc()
            self._generation += 1  # a pending background estimate must not paint over the failure
            self._on_error(self._generation, exc)
            return None

    def _estimate(self, config, device: dict, answer_tokens: int | None):
        return self._estimate_fn(config, device, answer_tokens=answer_tokens)

    def _run(self) -> None:
        if self._pending is None:
            return
        config, device, answer_tokens = self._pending
        self._pending = None
        self._generation += 1
        generation = self._generation
        call_in_background(lambda: self._estimate(config, device, answer_tokens),
                           lambda est: self._on_estimate(generation, est),
                           lambda exc, tb: self._on_error(generation, exc), owner=self)

    def _on_error(self, generation: int, exc: BaseException) -> None:
        if generation != self._generation:
            return
        self.last_estimate = None
        self.headline.setText(f"The memory estimate failed: {exc}")
        for w in (self.fits_label, self.bar, self.parts, self.suggestions):
            w.setVisible(False)

    def _on_estimate(self, generation: int, est) -> None:
        if generation != self._generation:
            return
        self.last_estimate = est
        notes = list(getattr(est, "notes", []) or [])
        if est.total_mb is None:
            self.headline.setText("Peak memory: unknown for this model yet.")
            self.parts.setText("<br>".join(html.escape(n) for n in notes))
            self.parts.setVisible(bool(notes))
            for w in (self.fits_label, self.bar, self.suggestions):
                w.setVisible(False)
            self.sig_estimate_ready.emit(est)
            return
        device_mb = est.device_mb
        kind = {"cuda": "GPU memory", "cpu": "RAM"}.get(getattr(est, "device_kind", ""), "memory")
        where = f" of {_mb(device_mb)} {kind}" if device_mb else ""
        self.headline.setText(f"Peak memory ≈ <b>{_mb(est.total_mb)}</b>{where}")
        for w in (self.fits_label, self.bar, self.parts):
            w.setVisible(True)
        if est.fits is None:
            self.fits_label.setObjectName("mutedText")
            self.fits_label.setText("Waiting to learn the device's memory…")
        else:
            self.fits_label.setObjectName("fitsOk" if est.fits else "fitsBad")
            self.fits_label.setText("Fits on this device" if est.fits else "Will probably not fit on this device")
        self.fits_label.style().unpolish(self.fits_label)
        self.fits_label.style().polish(self.fits_label)
        share = est.total_mb / device_mb if device_mb else 0.0
        self.bar.setVisible(bool(device_mb))
        self.bar.setValue(int(min(1.0, share) * 100))
        colour = "#22c55e" if share < 0.75 else ("#f59e0b" if est.fits else "#ef4444")
        self.bar.setStyleSheet(f"QProgressBar::chunk {{ background: {colour}; border-radius: 4px; }}")
        labels = getattr(est, "part_labels", {}) or {}
        rows = "".join(
            f"<tr><td style='color:#4b5563'>{html.escape(labels.get(name) or PART_LABELS.get(name, name))}</td>"
            f"<td align='right'>{_mb(mb)}</td></tr>"
            # A part that rounds to "0 MB" (a reference pass that costs almost nothing) reads as noise.
            for name, mb in sorted(est.parts.items(), key=lambda kv: -kv[1]) if (mb or 0) >= 0.5
        )
        foot = "".join(f"<div style='color:#6b7280'>{html.escape(n)}</div>" for n in notes)
        self.parts.setText(f"<table width='100%' cellspacing='0' cellpadding='1'>{rows}</table>{foot}")
        tips = list(getattr(est, "suggestions", []) or [])
        self.suggestions.setVisible(bool(tips))
        self.suggestions.setText("<b>To make it fit:</b><ul style='margin:0'>" +
                                 "".join(f"<li>{html.escape(t)}</li>" for t in tips) + "</ul>" if tips else "")
        self.sig_estimate_ready.emit(est)

