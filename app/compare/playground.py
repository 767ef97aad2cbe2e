"""Playground: a plain multi-turn chat with one model, base or aligned.

The whole conversation goes to the worker on every turn and through the
model's chat template (AlignStudio's default template for a base model that
has none), so it is a chat even when the run was trained on plain text.
"""

from __future__ import annotations

from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QComboBox,
    QFrame,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
)

from app.compare.chat_view import ChatView
from app.compare.request_view import RequestView, offer_sides
from app.compare.text_format import finish_text

SPEAKERS = {"aligned": "Aligned (adapter on)", "base": "Base (adapter off)"}


class PlaygroundView(RequestView):
    start_tip = "Send your message (Ctrl+Enter)."

    def __init__(self, host, parent=None):
        super().__init__(host, parent=parent)
        self._messages: list[dict[str, str]] = []

        card = QFrame()
        card.setObjectName("card")
        title = QLabel("Chat with")
        title.setObjectName("cardTitle")
        self.side = QComboBox()
        for side, text in SPEAKERS.items():
            self.side.addItem(text, side)
        self.side.setToolTip("Which model answers the next turn; you can switch in the middle of a chat.")
        self.new_button = QPushButton("New chat")
        self.new_button.setToolTip("Forget the conversation and start again.")
        self.new_button.clicked.connect(self.new_chat)
        self.template_note = QLabel()
        self.template_note.setObjectName("mutedText")
        self.template_note.setWordWrap(True)
        head = QHBoxLayout()
        head.setSpacing(10)
        head.addWidget(title)
        head.addWidget(self.side)
        head.addWidget(self.template_note, 1)
        head.addWidget(self.new_button)

        self.chat = ChatView()
        self.chat.set_empty_text("Say something to start a chat. Every turn is sent with the whole conversation.")
        self.input = QPlainTextEdit()
        self.input.setObjectName("chatInput")
        self.input.setPlaceholderText("Your message (Ctrl+Enter sends)")
        self.input.setFixedHeight(70)
        for keys in ("Ctrl+Return", "Ctrl+Enter"):
            QShortcut(QKeySequence(keys), self.input, activated=self.send)
        self.send_button = QPushButton("Send")
        self.send_button.setObjectName("primaryButton")
        self.send_button.clicked.connect(self.send)
        buttons = QVBoxLayout()
        buttons.setSpacing(6)
        buttons.addWidget(self.send_button)
        buttons.addWidget(self.stop_button)
        buttons.addStretch(1)
        entry = QHBoxLayout()
        entry.setSpacing(8)
        entry.addWidget(self.input, 1)
        entry.addLayout(buttons)

        cl = QVBoxLayout(card)
        cl.setContentsMargins(14, 12, 14, 12)
        cl.setSpacing(8)
        cl.addLayout(head)
        cl.addWidget(self.chat, 1)
        cl.addLayout(entry)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 10, 0, 0)
        layout.addWidget(card, 1)

        self.link.sig_token.connect(self._on_token)
        self.link.sig_done.connect(self._on_done)
        self.set_ready(None)

    def start_button(self) -> QPushButton:
        return self.send_button

    def set_ready(self, ready) -> None:
        offer_sides(self.side, ready)
        if ready is not None and ready.chat_template_added:
            self.template_note.setText("This model has no chat template of its own; AlignStudio's plain one is "
                                       "used, so a base model may answer roughly.")
        elif ready is not None:
            self.template_note.setText("Turns go through the model's own chat template.")
        else:
            self.template_note.setText("")

    def messages(self) -> list[dict[str, str]]:
        return [dict(m) for m in self._messages]

    def new_chat(self) -> None:
        self.stop()
        self._messages = []
        self.chat.clear_turns()

    def send(self) -> None:
        text = self.input.toPlainText().strip()
        if not text or self._request_id or not self.send_button.isEnabled():
            return
        sampling = self.sampling_or_problem()
        if sampling is not None:
            self.host.run_when_ready(lambda: self._send(text, sampling), "Send")

    def _send(self, text: str, sampling: dict) -> None:
        side = self.side.currentData()
        messages = self._messages + [{"role": "user", "content": text}]
        if not self.begin(self.link.chat(messages, side, sampling)):
            return
        self._messages = messages
        self.input.clear()
        self.chat.add_turn("user", text)
        self.chat.add_turn("assistant", "", SPEAKERS[side], pending=True)

    def _on_token(self, event) -> None:
        if event.request_id == self._request_id:
            self.chat.append_to_last(event.text)

    def _on_done(self, event) -> None:
        if event.request_id != self._request_id:
            return
        note = f"{event.n_tokens} tokens, {finish_text(event.finish_reason, event.stop_string)}"
        self.chat.finish_last(event.text, note)
        if event.text:
            self._messages.append({"role": "assistant", "content": event.text})

    def on_request_finished(self, event) -> None:
        turns = self.chat.turns()
        if turns and turns[-1].pending:
            # No answer came (an error, or the worker was released): the user's turn stays, unanswered.
            self.chat.finish_last(turns[-1].text, "no answer" if not event.cancelled else "stopped")
        if self._messages and self._messages[-1]["role"] == "user":
            # Chat templates want user and assistant turns to alternate; an unanswered turn is not resent.
            self._messages.pop()
