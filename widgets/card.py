"""A white rounded panel with a numbered title, used to lay the setup out as steps."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QVBoxLayout, QWidget


class Card(QFrame):
    def __init__(self, title: str, step: str = "", subtitle: str = "", parent=None):
        super().__init__(parent)
        self.setObjectName("card")
        head = QHBoxLayout()
        head.setSpacing(8)
        if step:
            badge = QLabel(step)
            badge.setObjectName("cardStep")
            badge.setAlignment(Qt.AlignmentFlag.AlignCenter)
            head.addWidget(badge)
        self.title_label = QLabel(title)
        self.title_label.setObjectName("cardTitle")
        head.addWidget(self.title_label)
        head.addStretch(1)
        self.header = head
        self.body = QVBoxLayout(self)
        self.body.setContentsMargins(14, 12, 14, 14)
        self.body.setSpacing(8)
        self.body.addLayout(head)
        if subtitle:
            sub = QLabel(subtitle)
            sub.setObjectName("mutedText")
            sub.setWordWrap(True)
            self.body.addWidget(sub)

    def add(self, widget: QWidget, stretch: int = 0) -> QWidget:
        self.body.addWidget(widget, stretch)
        return widget

    def add_header_widget(self, widget: QWidget) -> None:
        self.header.addWidget(widget)
