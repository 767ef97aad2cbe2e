"""A read-only chat transcript: user turns on the right, model turns on the left.

Rendered as escaped HTML in a QTextBrowser. The transcript is re-rendered on
every change; a playground chat is a few dozen turns at most, and the owner
feeds it at most one update per tick.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

from PySide6.QtWidgets import QTextBrowser

_BUBBLE = {
    "user": ("#eef2ff", "#c7d2fe", "right"),
    "assistant": ("#ffffff", "#e5e7eb", "left"),
    "error": ("#fef2f2", "#fecaca", "left"),
}


@dataclass
class ChatTurn:
    role: str  # user | assistant
    text: str
    speaker: str = ""  # who answered, e.g. "Aligned (adapter on)"
    note: str = ""  # shown small under the turn (length, finish reason)
    pending: bool = False


class ChatView(QTextBrowser):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("chatView")
        self.setOpenLinks(False)
        self.setStyleSheet("QTextBrowser#chatView { background: #f9fafb; border: 1px solid #e5e7eb; "
                           "border-radius: 8px; padding: 8px; }")
        self._turns: list[ChatTurn] = []
        self._empty_text = ""
        self.render()

    def set_empty_text(self, text: str) -> None:
        self._empty_text = text
        if not self._turns:
            self.render()

    # ------------------------------------------------------------ contents
    def clear_turns(self) -> None:
        self._turns = []
        self.render()

    def add_turn(self, role: str, text: str, speaker: str = "", pending: bool = False) -> ChatTurn:
        turn = ChatTurn(role, text, speaker, pending=pending)
        self._turns.append(turn)
        self.render()
        return turn

    def append_to_last(self, text: str) -> None:
        if self._turns:
            self._turns[-1].text += text
            self.render()

    def finish_last(self, text: str, note: str = "") -> None:
        if self._turns:
            last = self._turns[-1]
            last.text, last.note, last.pending = text, note, False
            self.render()

    def drop_last(self) -> None:
        if self._turns:
            self._turns.pop()
            self.render()

    def turns(self) -> list[ChatTurn]:
        return list(self._turns)

    # ------------------------------------------------------------ drawing
    def render(self) -> None:
        if not self._turns:
            self.setHtml(f"<p style='color:#9ca3af; margin-top:24px' align='center'>"
                         f"{html.escape(self._empty_text)}</p>")
            return
        parts = []
        for turn in self._turns:
            background, border, align = _BUBBLE.get(turn.role, _BUBBLE["assistant"])
            body = html.escape(turn.text).replace("\n", "<br>")
            if turn.pending and not turn.text:
                body = "<span style='color:#9ca3af'>…</span>"
            who = "You" if turn.role == "user" else (turn.speaker or "Model")
            note = f" · {html.escape(turn.note)}" if turn.note else ""
            width = "78%"
            side_cell = "<td width='22%'></td>"
            bubble = (f"<td width='{width}' style='background:{background}; border:1px solid {border}; "
                      f"padding:8px 10px;'>"
                      f"<div style='color:#6b7280; font-size:8.5pt; margin-bottom:3px'>{html.escape(who)}{note}"
                      f"</div><div style='color:#111827'>{body}</div></td>")
            cells = side_cell + bubble if align == "right" else bubble + side_cell
            parts.append("<table width='100%' cellspacing='0' cellpadding='0' style='margin-bottom:10px'>"
                         f"<tr>{cells}</tr></table>")
        self.setHtml("".join(parts))
        bar = self.verticalScrollBar()
        bar.setValue(bar.maximum())
