"""A column of short notes (title, explanation, what to try), newest problems first."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFrame, QLabel, QScrollArea, QVBoxLayout, QWidget

_ORDER = {"error": 0, "warning": 1, "info": 2}


class _NoteCard(QFrame):
    def __init__(self, severity: str, title: str, text: str, advice: str):
        super().__init__()
        self.setObjectName("noteCard")
        self.setProperty("severity", severity)
        self.severity = severity
        self.title = title
        heading = QLabel(title)
        heading.setObjectName("noteTitle")
        heading.setWordWrap(True)
        body = QLabel(text)
        body.setObjectName("noteText")
        body.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(10, 8, 10, 8)
        layout.setSpacing(4)
        layout.addWidget(heading)
        layout.addWidget(body)
        if advice:
            tip = QLabel(f"<b>Try:</b> {advice}")
            tip.setObjectName("noteAdvice")
            tip.setWordWrap(True)
            tip.setTextFormat(Qt.TextFormat.RichText)
            layout.addWidget(tip)
        self.text = text
        self.advice = advice


class NotesPanel(QWidget):
    """Notes keyed by a code, so a note can be replaced or withdrawn."""

    def __init__(self, title: str, empty_text: str, parent=None):
        super().__init__(parent)
        self._cards: dict[str, _NoteCard] = {}
        heading = QLabel(title)
        heading.setObjectName("panelTitle")
        self._empty = QLabel(empty_text)
        self._empty.setObjectName("mutedText")
        self._empty.setWordWrap(True)
        self._host = QWidget()
        self._list = QVBoxLayout(self._host)
        self._list.setContentsMargins(0, 0, 0, 0)
        self._list.setSpacing(8)
        self._list.addWidget(self._empty)
        self._list.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setWidget(self._host)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(6)
        layout.addWidget(heading)
        layout.addWidget(scroll, 1)

    def add_note(self, code: str, severity: str, title: str, text: str, advice: str = "") -> None:
        self.remove_note(code)
        card = _NoteCard(severity, title, text, advice)
        self._cards[code] = card
        position = sum(1 for c in self._cards.values() if c is not card and _ORDER[c.severity] <= _ORDER[severity])
        self._list.insertWidget(position, card)
        self._empty.setVisible(False)

    def remove_note(self, code: str) -> None:
        card = self._cards.pop(code, None)
        if card is not None:
            self._list.removeWidget(card)
            card.deleteLater()
        self._empty.setVisible(not self._cards)

    def clear_notes(self) -> None:
        for code in list(self._cards):
            self.remove_note(code)

    def notes(self) -> dict[str, tuple[str, str]]:
        """code -> (severity, title), for tests and summaries."""
        return {code: (card.severity, card.title) for code, card in self._cards.items()}
