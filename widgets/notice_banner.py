"""An inline message strip (info, success, warning, error) with optional details.

Errors are shown in place instead of in modal dialogs: the window stays usable,
and tests can read what the user would read.
"""

from __future__ import annotations

import html

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPlainTextEdit, QPushButton, QToolButton, QVBoxLayout

SEVERITIES = ("info", "success", "warning", "error")


class NoticeBanner(QFrame):
    """Title, message, an optional action button and folded details."""

    sig_action = Signal()
    """The banner's action button was pressed."""

    sig_dismissed = Signal()
    """The user closed the banner."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("noticeBanner")
        self.setProperty("severity", "info")
        self._title = QLabel()
        self._title.setObjectName("noticeTitle")
        self._title.setWordWrap(True)
        self._title.setTextFormat(Qt.TextFormat.PlainText)
        self._text = QLabel()
        self._text.setObjectName("noticeText")
        self._text.setWordWrap(True)
        self._text.setTextFormat(Qt.TextFormat.RichText)
        self._text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self._details = QPlainTextEdit()
        self._details.setObjectName("noticeDetails")
        self._details.setReadOnly(True)
        self._details.setMaximumHeight(160)
        self._details.setVisible(False)
        self._details_button = QToolButton()
        self._details_button.setText("Details")
        self._details_button.setCheckable(True)
        self._details_button.toggled.connect(self._details.setVisible)
        self._action = QPushButton()
        self._action.setVisible(False)
        self._action.clicked.connect(self.sig_action)
        close = QToolButton()
        close.setObjectName("noticeClose")
        close.setText("✕")
        close.setToolTip("Dismiss")
        close.clicked.connect(self._dismiss)

        head = QHBoxLayout()
        head.setSpacing(8)
        head.addWidget(self._title, 1)
        head.addWidget(self._details_button)
        head.addWidget(self._action)
        head.addWidget(close)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 8, 8, 8)
        layout.setSpacing(4)
        layout.addLayout(head)
        layout.addWidget(self._text)
        layout.addWidget(self._details)
        self.setVisible(False)

    def show_notice(self, severity: str, title: str, text: str = "", details: str = "", action: str = "",
                    open_details: bool = False) -> None:
        """``open_details`` unfolds the details at once, for when they are the message
        (the last lines of a crashed worker's log)."""
        assert severity in SEVERITIES, severity
        self.setProperty("severity", severity)
        self.style().unpolish(self)
        self.style().polish(self)
        self._title.setText(title)
        self._text.setText(html.escape(text).replace("\n", "<br>"))
        self._text.setVisible(bool(text))
        self._details.setPlainText(details)
        self._details_button.setVisible(bool(details))
        self._details_button.setChecked(open_details and bool(details))
        if open_details and details:
            # The last lines matter most; the scroll range exists once the pane is laid out.
            bar = self._details.verticalScrollBar()
            QTimer.singleShot(0, self._details, lambda: bar.setValue(bar.maximum()))
        self._action.setText(action)
        self._action.setVisible(bool(action))
        self.setVisible(True)

    def severity(self) -> str:
        return self.property("severity")

    def title(self) -> str:
        return self._title.text()

    def text(self) -> str:
        return html.unescape(self._text.text().replace("<br>", "\n"))

    def details(self) -> str:
        return self._details.toPlainText()

    def details_open(self) -> bool:
        return self._details.isVisibleTo(self)

    def hide_notice(self) -> None:
        self.setVisible(False)

    def _dismiss(self) -> None:
        self.setVisible(False)
        self.sig_dismissed.emit()
