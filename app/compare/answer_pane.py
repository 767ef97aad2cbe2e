"""One model's answer in the Compare tab: the text as it streams, then its numbers.

The pane knows nothing about workers: its owner feeds it text deltas, the final
text and the scores, and reads back what it shows.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QTextCursor
from PySide6.QtWidgets import QFrame, QGridLayout, QHBoxLayout, QLabel, QPlainTextEdit, QVBoxLayout

from app.compare.text_format import finish_text, likelihood_sentence, number, signed

_STYLE = """
QPlainTextEdit#answerText { background: #fbfbfd; border: 1px solid #e5e7eb; border-radius: 6px; padding: 6px;
                            font-size: 10.5pt; }
QLabel#paneSide { color: #6b7280; }
QLabel#scoreKey { color: #6b7280; }
QLabel#scoreValue { font-weight: 600; color: #111827; }
QLabel#paneState { color: #4338ca; font-weight: 600; }
"""


class AnswerPane(QFrame):
    """Title, streaming text, length and finish reason, log-probs and implicit reward."""

    def __init__(self, title: str, side_note: str, side: str, parent=None):
        super().__init__(parent)
        self.setObjectName("card")
        self.setStyleSheet(_STYLE)
        self.side = side
        self._tokens = 0
        self._score = None

        title_label = QLabel(title)
        title_label.setObjectName("cardTitle")
        note = QLabel(side_note)
        note.setObjectName("paneSide")
        self.state_label = QLabel()
        self.state_label.setObjectName("paneState")
        head = QHBoxLayout()
        head.setSpacing(8)
        head.addWidget(title_label)
        head.addWidget(note)
        head.addStretch(1)
        head.addWidget(self.state_label)

        self.text_view = QPlainTextEdit()
        self.text_view.setObjectName("answerText")
        self.text_view.setReadOnly(True)
        self.text_view.setMinimumHeight(120)

        self.length_label = QLabel()
        self.length_label.setObjectName("statLine")
        grid = QGridLayout()
        grid.setContentsMargins(0, 2, 0, 0)
        grid.setHorizontalSpacing(10)
        grid.setVerticalSpacing(3)
        self._values: dict[str, QLabel] = {}
        rows = [
            ("logp_base", "Mean log-prob under the base model",
             "Average log-probability per answer token when the adapter is off. Closer to 0 is more likely."),
            ("logp_aligned", "Mean log-prob under the aligned model",
             "Average log-probability per answer token when the adapter is on."),
            ("reward", "Implicit reward β·(log p aligned − log p base)",
             ("The reward that preference methods with a reference model optimise, for this answer: positive "
              "when training made the answer more likely. Summed over the answer's tokens. Shown as – for a "
              "run whose method has no such reward (supervised, reward model, RL).")),
        ]
        for i, (key, text, tip) in enumerate(rows):
            k = QLabel(text)
            k.setObjectName("scoreKey")
            k.setToolTip(tip)
            v = QLabel("–")
            v.setObjectName("scoreValue")
            v.setToolTip(tip)
            v.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            v.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            grid.addWidget(k, i, 0)
            grid.addWidget(v, i, 1)
            self._values[key] = v
        grid.setColumnStretch(0, 1)
        self.explanation = QLabel()
        self.explanation.setObjectName("mutedText")
        self.explanation.setWordWrap(True)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(14, 12, 14, 12)
        layout.setSpacing(6)
        layout.addLayout(head)
        layout.addWidget(self.text_view, 1)
        layout.addWidget(self.length_label)
        layout.addLayout(grid)
        layout.addWidget(self.explanation)
        self.clear()

    # ------------------------------------------------------------------ feed
    def clear(self, placeholder: str = "") -> None:
        self.text_view.clear()
        self.text_view.setPlaceholderText(placeholder)
        self._tokens = 0
        self._score = None
        self.state_label.setText("")
        self.length_label.setText(" ")
        for v in self._values.values():
            v.setText("–")
        self.explanation.setText("")

    def begin(self, state: str = "Generating…") -> None:
        self.clear()
        self.state_label.setText(state)

    def append(self, text: str, tokens_so_far: int | None = None) -> None:
        cursor = self.text_view.textCursor()
        cursor.movePosition(QTextCursor.MoveOperation.End)
        cursor.insertText(text)
        if tokens_so_far is not None:
            self._tokens = tokens_so_far
            self.length_label.setText(f"{tokens_so_far} tokens so far")
        self.text_view.verticalScrollBar().setValue(self.text_view.verticalScrollBar().maximum())

    def finish(self, text: str, n_tokens: int, finish_reason: str, seconds: float = 0.0,
               stop_string: str = "") -> None:
        """The worker's final text replaces the streamed deltas (detokenising can revise the tail,
        and a stop string is cut off)."""
        if self.text_view.toPlainText() != text:
            self.text_view.setPlainText(text)
        self._tokens = n_tokens
        parts = [f"{n_tokens} token{'s' if n_tokens != 1 else ''}", finish_text(finish_reason, stop_string)]
        if seconds > 0 and n_tokens:
            parts.append(f"{n_tokens / seconds:.0f} tokens/s")
        self.length_label.setText(" · ".join(p for p in parts if p))
        self.state_label.setText("Scoring…" if finish_reason in ("stop", "length") else "")
        if not text:
            self.text_view.setPlaceholderText("(empty answer)")

    def set_score(self, score, beta: float) -> None:
        """``score`` is a ResponseScore for this pane's answer."""
        self._score = score
        self._values["logp_base"].setText(number(score.logp_base_mean, 3))
        self._values["logp_aligned"].setText(number(score.logp_aligned_mean, 3))
        self._values["reward"].setText(signed(score.implicit_reward))
        self._values["reward"].setToolTip(f"β = {beta:g}; summed over {score.n_tokens} tokens "
                                          "(the stop token included when the model ended its answer).")
        self.explanation.setText(likelihood_sentence(score.logp_aligned_sum, score.logp_base_sum))
        self.state_label.setText("")

    def set_state(self, text: str) -> None:
        self.state_label.setText(text)

    # ------------------------------------------------------------------ read
    def text(self) -> str:
        return self.text_view.toPlainText()

    def tokens(self) -> int:
        return self._tokens

    def score(self):
        return self._score

    def score_texts(self) -> dict[str, str]:
        return {key: label.text() for key, label in self._values.items()}
