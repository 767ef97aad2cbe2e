"""The batch compare's verdict: a headline and a row of figure tiles.

The figures are the ones that say whether a run learned its preference
(preference accuracy before and after, reward accuracy) and whether it also
changed something it was not asked to (answer length).
"""

from __future__ import annotations

from PySide6.QtWidgets import QFrame, QGridLayout, QLabel, QVBoxLayout, QWidget

from app.compare.text_format import is_verbosity_shift, length_change_text, percent, signed

_STYLE = """
QFrame#figureTile { background: #f9fafb; border: 1px solid #e5e7eb; border-radius: 8px; }
QFrame#figureTile[tone="good"] { background: #f0fdf4; border-color: #bbf7d0; }
QFrame#figureTile[tone="warning"] { background: #fffbeb; border-color: #fde68a; }
QFrame#figureTile[tone="bad"] { background: #fef2f2; border-color: #fecaca; }
QLabel#figureValue { font-size: 15pt; font-weight: 600; color: #111827; }
QLabel#figureCaption { color: #4b5563; }
QLabel#figureNote { color: #6b7280; font-size: 8.5pt; }
QLabel#summaryHeadline { font-size: 10.5pt; color: #1f2937; }
"""

# key, caption, tooltip
TILES = [
    ("aligned_accuracy", "Aligned prefers chosen",
     ("Held-out pairs where the aligned model gives the chosen response a higher likelihood than the rejected "
      "one. Compare it with the base model's figure: the difference is what training taught.")),
    ("base_accuracy", "Base prefers chosen",
     "The same for the base model (adapter off): where the run started from."),
    ("reward_accuracy", "Reward ranks chosen first",
     ("Pairs where the chosen response has the higher implicit reward β·(log p aligned − log p base): the "
      "reward accuracy, measured on rows the run did not train on.")),
    ("mean_reward_margin", "Mean reward margin",
     "Average of reward(chosen) − reward(rejected) over the pairs; positive means the preference was learned."),
    ("length", "Answer length, tokens",
     ("Mean answer length of the base model → the aligned model. A large change is a verbosity shift: the run "
      "changed how much the model says, not only what it prefers.")),
    ("win_rate", "Aligned answer out-rewards base",
     "Prompts where the aligned model's own answer gets a higher implicit reward than the base model's answer."),
]


class _Tile(QFrame):
    def __init__(self, caption: str, tooltip: str, parent=None):
        super().__init__(parent)
        self.setObjectName("figureTile")
        self.setToolTip(tooltip)
        self.value = QLabel("–")
        self.value.setObjectName("figureValue")
        self.caption = QLabel(caption)
        self.caption.setObjectName("figureCaption")
        self.caption.setWordWrap(True)
        self.note = QLabel()
        self.note.setObjectName("figureNote")
        self.note.setWordWrap(True)
        self.note.setVisible(False)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(10, 6, 10, 8)
        layout.setSpacing(1)
        layout.addWidget(self.value)
        layout.addWidget(self.caption)
        layout.addWidget(self.note)

    def set(self, value: str, tone: str = "", note: str = "") -> None:
        self.value.setText(value)
        self.note.setText(note)
        self.note.setVisible(bool(note))
        if self.property("tone") != tone:
            self.setProperty("tone", tone)
            self.style().unpolish(self)
            self.style().polish(self)


class CompareSummaryPanel(QWidget):
    """Headline plus figure tiles; ``show_summary(None)`` empties it."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setStyleSheet(_STYLE)
        self.headline = QLabel()
        self.headline.setObjectName("summaryHeadline")
        self.headline.setWordWrap(True)
        grid = QGridLayout()
        grid.setContentsMargins(0, 0, 0, 0)
        grid.setHorizontalSpacing(8)
        grid.setVerticalSpacing(8)
        self.tiles: dict[str, _Tile] = {}
        for i, (key, caption, tip) in enumerate(TILES):
            tile = _Tile(caption, tip)
            grid.addWidget(tile, 0, i)
            grid.setColumnStretch(i, 1)
            self.tiles[key] = tile
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(8)
        layout.addWidget(self.headline)
        layout.addLayout(grid)
        self._summary = None
        self.show_summary(None)

    def summary(self):
        return self._summary

    def show_summary(self, summary, headline: str = "", running: bool = False) -> None:
        """``summary`` is a CompareSummary (or None). ``running`` marks figures as partial."""
        self._summary = summary
        if summary is None:
            self.headline.setText(headline or "Run a batch to see how often each model prefers the chosen "
                                              "response of a held-out pair, and whether answers got longer.")
            for tile in self.tiles.values():
                tile.set("–")
            return
        text = headline or summary.headline()
        if running:
            text = f"So far ({summary.n_rows} prompt{'s' if summary.n_rows != 1 else ''}): {text}"
        self.headline.setText(text)
        base, aligned = summary.base_accuracy, summary.aligned_accuracy
        learned = aligned is not None and base is not None
        tone = "" if not learned else ("good" if aligned > base else ("bad" if aligned < base else ""))
        note = ""
        if learned:
            change = (aligned - base) * 100
            note = f"{signed(change, 0)} points vs base" if abs(change) >= 0.5 else "same as base"
        pairs = f"{summary.n_pairs} pair{'s' if summary.n_pairs != 1 else ''}" if summary.n_pairs else "no pairs"
        self.tiles["aligned_accuracy"].set(percent(aligned), tone, note)
        self.tiles["base_accuracy"].set(percent(base), "", pairs)
        reward = summary.reward_accuracy
        self.tiles["reward_accuracy"].set(percent(reward),
                                          "" if reward is None else ("good" if reward > 0.5 else "bad"))
        margin = summary.mean_reward_margin
        self.tiles["mean_reward_margin"].set(signed(margin), "" if margin is None else
                                             ("good" if margin > 0 else "bad"))
        shift = is_verbosity_shift(summary.length_ratio)
        length_note = ""
        if shift:
            word = "longer" if summary.length_ratio > 1 else "shorter"
            length_note = f"Verbosity shift: answers got {abs(summary.length_ratio - 1) * 100:.0f}% {word}"
        elif summary.length_ratio is not None:
            length_note = "no verbosity shift"
        self.tiles["length"].set(
            length_change_text(summary.base_mean_tokens, summary.aligned_mean_tokens, None),
            "warning" if shift else "", length_note)
        win = summary.aligned_reward_win_rate
        self.tiles["win_rate"].set(percent(win), "", f"{summary.n_answered} answered" if summary.n_answered else "")

    def tile_text(self, key: str) -> str:
        return self.tiles[key].value.text()

    def tile_note(self, key: str) -> str:
        return self.tiles[key].note.text()
