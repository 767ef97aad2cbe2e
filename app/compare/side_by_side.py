"""One prompt, two answers: the base model (adapter off) and the aligned model (adapter on)
stream side by side with the same sampling settings and seed, then each answer
is scored under both models.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QKeySequence, QShortcut, QTextCursor
from PySide6.QtWidgets import (
    QComboBox,
    QFrame,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
)

from app.compare.prompts import SOURCE_TITLES, PromptChoice
from app.compare.answer_pane import AnswerPane
from app.compare.request_view import RequestView
from app.compare.text_format import preference_sentence

PANES = (("base", "Base", "adapter off"), ("aligned", "Aligned", "adapter on"))
_PICK_HINT = "Pick a prompt…"


class PromptPicker(QComboBox):
    """Prompts grouped by source (held-out split first); picking one fills the prompt box."""

    sig_picked = Signal(object)
    """A PromptChoice was picked."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self._sources: dict[str, list[PromptChoice]] = {}
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(24)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setToolTip("Prompts from the run's held-out split (rows it did not train on), its training data, "
                        "or the dataset loaded in the Train tab.")
        self.activated.connect(self._on_activated)
        self._rebuild()

    def set_source(self, source: str, choices: list[PromptChoice]) -> None:
        if choices:
            self._sources[source] = list(choices)
        else:
            self._sources.pop(source, None)
        self._rebuild()

    def choices(self, source: str | None = None) -> list[PromptChoice]:
        if source is not None:
            return list(self._sources.get(source, []))
        return [c for s in SOURCE_TITLES if s in self._sources for c in self._sources[s]]

    def _rebuild(self) -> None:
        self.blockSignals(True)
        self.clear()
        total = sum(len(v) for v in self._sources.values())
        self.addItem(_PICK_HINT if total else "No prompts to pick: type one below", None)
        for source, title in SOURCE_TITLES.items():
            choices = self._sources.get(source)
            if not choices:
                continue
            self.insertSeparator(self.count())
            self.addItem(f"{title} ({len(choices)})", None)
            header = self.model().item(self.count() - 1)
            header.setEnabled(False)
            for choice in choices:
                self.addItem(f"   {choice.label}", choice)
        self.setCurrentIndex(0)
        self.setEnabled(bool(total))
        self.blockSignals(False)

    def _on_activated(self, index: int) -> None:
        choice = self.itemData(index)
        self.setCurrentIndex(0)
        if isinstance(choice, PromptChoice):
            self.sig_picked.emit(choice)


class SideBySideView(RequestView):
    start_tip = "Answer with both models, same settings and seed (Ctrl+Enter)."

    def __init__(self, host, parent=None):
        super().__init__(host, "Stop both answers now; what was generated stays.", parent)
        self._picked: PromptChoice | None = None
        self._scores: dict[str, Any] = {}
        self._token_counts: dict[str, int] = {}

        # ---- prompt
        prompt_card = QFrame()
        prompt_card.setObjectName("card")
        title = QLabel("Prompt")
        title.setObjectName("cardTitle")
        self.picker = PromptPicker()
        self.picker.sig_picked.connect(self.use_choice)
        head = QHBoxLayout()
        head.setSpacing(10)
        head.addWidget(title)
        head.addWidget(self.picker, 1)
        self.prompt_edit = QPlainTextEdit()
        self.prompt_edit.setObjectName("promptEdit")
        self.prompt_edit.setPlaceholderText("Type a prompt, or pick one from the run's held-out split above.")
        self.prompt_edit.setFixedHeight(84)
        self.prompt_edit.textChanged.connect(self._on_prompt_edited)
        self.style_hint = QLabel()
        self.style_hint.setObjectName("mutedText")
        self.style_hint.setWordWrap(True)
        self.generate_button = QPushButton("Generate")
        self.generate_button.setObjectName("primaryButton")
        self.generate_button.setToolTip(self.start_tip)
        self.generate_button.clicked.connect(self.generate)
        actions = QHBoxLayout()
        actions.setSpacing(8)
        actions.addWidget(self.style_hint, 1)
        actions.addWidget(self.stop_button)
        actions.addWidget(self.generate_button)
        pl = QVBoxLayout(prompt_card)
        pl.setContentsMargins(14, 12, 14, 12)
        pl.setSpacing(8)
        pl.addLayout(head)
        pl.addWidget(self.prompt_edit)
        pl.addLayout(actions)
        for keys in ("Ctrl+Return", "Ctrl+Enter"):
            QShortcut(QKeySequence(keys), self.prompt_edit, activated=self.generate)

        # ---- answers
        self.panes: dict[str, AnswerPane] = {}
        row = QHBoxLayout()
        row.setSpacing(12)
        for side, name, note in PANES:
            pane = AnswerPane(name, f"({note})", side)
            self.panes[side] = pane
            row.addWidget(pane, 1)
        self.verdict = QLabel()
        self.verdict.setObjectName("phaseLabel")
        self.verdict.setWordWrap(True)
        self.verdict.setAlignment(Qt.AlignmentFlag.AlignCenter)

        self.lay_out(prompt_card, row).addWidget(self.verdict)

        self.link.sig_token.connect(self._on_token)
        self.link.sig_done.connect(self._on_done)
        self.link.sig_scored.connect(self._on_scored)
        self.link.sig_error.connect(self._on_error)
        self.set_ready(None)
        self._clear_panes()

    # ------------------------------------------------------------------ prompt
    def set_prompt(self, text: str) -> None:
        self._picked = None
        self.prompt_edit.setPlainText(text)

    def use_choice(self, choice: PromptChoice) -> None:
        self.prompt_edit.setPlainText(choice.text)
        self.prompt_edit.moveCursor(QTextCursor.MoveOperation.End)
        self._picked = choice  # after setPlainText: editing the text forgets the pick

    def _on_prompt_edited(self) -> None:
        if self._picked is not None and self.prompt_edit.toPlainText() != self._picked.text:
            self._picked = None

    def prompt_to_send(self) -> Any:
        """The prompt as the worker takes it: a picked prompt as the run stored it; typed
        text as-is for a run trained on plain text, else as one user message."""
        text = self.prompt_edit.toPlainText()
        if self._picked is not None and text == self._picked.text:
            return self._picked.prompt
        return self.typed_prompt(text)

    def set_ready(self, ready) -> None:
        if ready is None:
            self.style_hint.setText("The model loads when you pick a run (a few seconds), then stays loaded.")
        elif ready.prompt_style == "chat":
            self.style_hint.setText("Typed text is sent as a user message through the model's chat template.")
        else:
            self.style_hint.setText("Typed text is sent exactly as written (no chat template), as the run's "
                                    "plain-text prompts were in training.")
        has_adapter = ready is None or ready.has_adapter
        if not has_adapter and not self._request_id:
            self.panes["aligned"].clear("No adapter is loaded: only the base model answers.")

    # --------------------------------------------------------------- generate
    def start_button(self) -> QPushButton:
        return self.generate_button

    def generate(self) -> None:
        if self._request_id or not self.generate_button.isEnabled():
            return
        if not self.prompt_edit.toPlainText().strip():
            self.host.show_problem("Type a prompt first", "Or pick one from the list above the prompt box.")
            return
        sampling = self.sampling_or_problem()
        if sampling is not None:
            self.host.run_when_ready(lambda: self._send(sampling), "Generate")

    def _send(self, sampling: dict) -> None:
        ready = self.link.ready_event()
        prompt = self.prompt_to_send()
        if ready is None or prompt is None:
            return
        side = "both" if ready.has_adapter else "base"
        if not self.begin(self.link.generate(prompt, side, sampling)):
            return
        self._scores = {}
        self._token_counts = {"base": 0, "aligned": 0}
        self.verdict.setText("")
        for pane_side, pane in self.panes.items():
            if side == "both" or pane_side == side:
                pane.begin()
            else:
                pane.clear("No adapter is loaded: only the base model answers.")

    def on_stopping(self) -> None:
        for pane in self.panes.values():
            if pane.state_label.text():
                pane.set_state("Stopping…")

    # ----------------------------------------------------------------- events
    def _on_token(self, event) -> None:
        if event.request_id != self._request_id or event.side not in self.panes:
            return
        self._token_counts[event.side] = event.index + 1
        self.panes[event.side].append(event.text, event.index + 1)

    def _on_done(self, event) -> None:
        if event.request_id != self._request_id or event.side not in self.panes:
            return
        self.panes[event.side].finish(event.text, event.n_tokens, event.finish_reason, event.seconds,
                                      event.stop_string)

    def _on_scored(self, event) -> None:
        if event.request_id != self._request_id:
            return
        by_label = event.by_label()
        for side, pane in self.panes.items():
            score = by_label.get(side)
            if score is not None:
                pane.set_score(score, event.beta)
                self._scores[side] = score
        base, aligned = self._scores.get("base"), self._scores.get("aligned")
        if base is not None and aligned is not None:
            self.verdict.setText(preference_sentence(base.implicit_reward, aligned.implicit_reward))

    def _on_error(self, event) -> None:
        if event.request_id and event.request_id == self._request_id:
            for pane in self.panes.values():
                pane.set_state("Failed")

    def on_request_finished(self, event) -> None:
        for pane in self.panes.values():
            if pane.state_label.text() in ("Generating…", "Scoring…", "Stopping…"):
                pane.set_state("Stopped" if event.cancelled else "")

    def _clear_panes(self) -> None:
        for pane in self.panes.values():
            pane.clear("The answer appears here, token by token.")
