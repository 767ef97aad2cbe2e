"""Best-of-N in Compare: N answers to a prompt, ranked by a reward model or graders, the
winner highlighted; and a batch report over held-out prompts of what best-of-N buys over
the model's single answer, and what it costs.

The worker samples the N answers in one batched generation and scores them there
(``backend.generation.best_of_n``); this view only sends the request and shows the ranked answers.
"""

from __future__ import annotations

import math
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.compare.request_view import RequestView, offer_sides, split
from app.compare.sampling import keep_spin_text_visible
from app.compare.text_format import finish_text
from backend.generation.best_of_n import BASELINE_TEXT, MAX_N
from app.compare.summary import _STYLE as TILE_STYLE
from app.compare.summary import _Tile

SIDES = {"aligned": "the aligned model (adapter on)", "base": "the base model (adapter off)"}
DEFAULT_N = 4
DEFAULT_REPORT_PROMPTS = 16

_STYLE = TILE_STYLE + """
QFrame#rankedAnswer { background: #ffffff; border: 1px solid #e5e7eb; border-radius: 8px; }
QFrame#rankedAnswer[winner="true"] { background: #f0fdf4; border: 2px solid #16a34a; }
QLabel#rankBadge { font-weight: 600; color: #111827; }
QLabel#winnerBadge { background: #16a34a; color: #ffffff; border-radius: 4px; padding: 1px 6px; font-weight: 600; }
QLabel#singleBadge { background: #e0e7ff; color: #3730a3; border-radius: 4px; padding: 1px 6px; }
QLabel#answerText { color: #111827; }
"""


def reward_text(value: float | None) -> str:
    return "no score" if value is None or not math.isfinite(value) else f"{value:.3f}"


def parse_graders(text: str) -> list[dict]:
    """The graders field: entries as ``--reward`` takes them, separated by ';'.
    ValueError names the entry that does not parse."""
    from backend.cli.rewards import parse_reward

    return [parse_reward(part) for part in (p.strip() for p in text.split(";")) if part]


class RankedAnswerCard(QFrame):
    """One of the N answers: its rank, reward, the parts of the reward, and its text."""

    def __init__(self, answer, winner: bool, parent=None):
        super().__init__(parent)
        self.answer = answer
        self.setObjectName("rankedAnswer")
        self.setProperty("winner", "true" if winner else "false")
        rank = QLabel(f"#{answer.rank}  ·  reward {reward_text(answer.reward)}")
        rank.setObjectName("rankBadge")
        head = QHBoxLayout()
        head.setSpacing(8)
        head.addWidget(rank)
        if winner:
            badge = QLabel("Best of N")
            badge.setObjectName("winnerBadge")
            head.addWidget(badge)
        if answer.sample == 0:
            single = QLabel("first sample: the single answer")
            single.setObjectName("singleBadge")
            single.setToolTip("What the model answers when asked once; best-of-N is measured against it.")
            head.addWidget(single)
        head.addStretch(1)
        parts = ", ".join(f"{name} {reward_text(value)}" for name, value in answer.scores.items())
        detail = QLabel(f"sample {answer.sample} · {answer.n_tokens} tokens · "
                        f"{finish_text(answer.finish_reason) or 'ended'}"
                        + (f" · {parts}" if len(answer.scores) > 1 else ""))
        detail.setObjectName("mutedText")
        detail.setWordWrap(True)
        self.text = QLabel(answer.text or "(empty answer)")
        self.text.setObjectName("answerText")
        self.text.setWordWrap(True)
        self.text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 8, 12, 10)
        layout.setSpacing(4)
        layout.addLayout(head)
        layout.addWidget(detail)
        layout.addWidget(self.text)

    @property
    def is_winner(self) -> bool:
        return self.property("winner") == "true"


class BestOfNView(RequestView):
    start_tip = "Sample N answers to the prompt in one batched generation, score them and rank them."

    def __init__(self, host, parent=None):
        super().__init__(host, "Stop after the batch being sampled now; the prompts already ranked are kept.",
                         parent)
        self._kind = ""  # "one" (a prompt) or "batch" (the report)
        self._results: list = []
        self._report = None
        self._heldout = 0
        self._scorer_label = ""
        self.setStyleSheet(_STYLE)

        # ---- controls
        controls = QFrame()
        controls.setObjectName("card")
        self.n = QSpinBox()
        self.n.setRange(2, MAX_N)
        self.n.setValue(DEFAULT_N)
        self.n.setToolTip("Answers sampled per prompt, in one batched generation.")
        keep_spin_text_visible(self.n)
        self.side = QComboBox()
        for key, text in SIDES.items():
            self.side.addItem(text, key)
        self.reward_model = QLineEdit()
        self.reward_model.setPlaceholderText("reward model run or folder")
        self.reward_model.setToolTip("A run trained with the reward model method, or a model folder with a "
                                     "one-output classification head. It loads in the generation worker.")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse_reward_model)
        self.graders = QLineEdit()
        self.graders.setPlaceholderText("graders, e.g. length_target:unit=words,target=30; required_words:words=please")
        self.graders.setToolTip("Built-in graders as --reward takes them, separated by ';' (`alignstudio graders` "
                                "lists them). Their weighted sum, plus the reward model's score, ranks the answers.")
        for field in (self.reward_model, self.graders):
            # Text set from outside (not typed) shows from its start, where the names are.
            field.textChanged.connect(lambda _text, f=field: f.hasFocus() or f.setCursorPosition(0))
        self.prompt_edit = QPlainTextEdit()
        self.prompt_edit.setPlaceholderText("The prompt to answer N times")
        self.prompt_edit.setFixedHeight(56)
        self.sample_button = QPushButton("Sample N")
        self.sample_button.setObjectName("primaryButton")
        self.sample_button.clicked.connect(self.sample)
        self.report_count = QSpinBox()
        self.report_count.setRange(1, 10_000)
        self.report_count.setValue(DEFAULT_REPORT_PROMPTS)
        keep_spin_text_visible(self.report_count)
        self.baseline = QComboBox()
        for key, text in BASELINE_TEXT.items():
            self.baseline.addItem(text, key)
        self.baseline.setToolTip("The single answer best-of-N must beat: the first of the N samples (free), or "
                                 "the greedy answer (one more batched generation).")
        self.report_button = QPushButton("Batch report")
        self.report_button.clicked.connect(self.run_report)
        self.status = QLabel()
        self.status.setObjectName("mutedText")
        self.status.setWordWrap(True)

        grid = QGridLayout(controls)
        grid.setContentsMargins(14, 12, 14, 12)
        grid.setHorizontalSpacing(8)
        grid.setVerticalSpacing(8)
        row1 = QHBoxLayout()
        row1.addWidget(QLabel("Sample"))
        row1.addWidget(self.n)
        row1.addWidget(QLabel("answers from"))
        row1.addWidget(self.side)
        row1.addStretch(1)
        grid.addLayout(row1, 0, 0, 1, 3)
        # The scorer gets a row of its own: a grader entry is long and must read in full.
        row2 = QHBoxLayout()
        row2.addWidget(QLabel("Score them with a reward model"))
        row2.addWidget(self.reward_model, 2)
        row2.addWidget(browse)
        row2.addWidget(QLabel("and/or graders"))
        row2.addWidget(self.graders, 3)
        grid.addLayout(row2, 1, 0, 1, 3)
        grid.addWidget(self.prompt_edit, 2, 0)
        buttons = QVBoxLayout()
        buttons.addWidget(self.sample_button)
        buttons.addWidget(self.stop_button)
        grid.addLayout(buttons, 2, 1)
        row3 = QHBoxLayout()
        row3.addWidget(QLabel("Report over"))
        row3.addWidget(self.report_count)
        row3.addWidget(QLabel("held-out prompts, against"))
        row3.addWidget(self.baseline)
        row3.addWidget(self.report_button)
        row3.addWidget(self.status, 1)
        grid.addLayout(row3, 3, 0, 1, 3)
        grid.setColumnStretch(0, 1)

        # ---- ranked answers (left) and the batch report (right)
        self.answers_title = QLabel("Ranked answers")
        self.answers_title.setObjectName("cardTitle")
        self.answers_title.setWordWrap(True)
        self.cards_box = QWidget()
        self.cards_layout = QVBoxLayout(self.cards_box)
        self.cards_layout.setContentsMargins(0, 0, 0, 0)
        self.cards_layout.setSpacing(8)
        self.cards_layout.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setWidget(self.cards_box)
        left = QWidget()
        ll = QVBoxLayout(left)
        ll.setContentsMargins(0, 0, 6, 0)
        ll.addWidget(self.answers_title)
        ll.addWidget(scroll, 1)

        self.headline = QLabel("Run a batch report to see what best-of-N buys over the single answer.")
        self.headline.setObjectName("summaryHeadline")
        self.headline.setWordWrap(True)
        self.tiles = {
            "best": _Tile("Best-of-N mean reward", "Mean reward of the winning answer per prompt."),
            "single": _Tile("Single answer mean reward", "Mean reward of the answer the model gives when asked "
                                                         "once (its first sample, or its greedy answer)."),
            "gain": _Tile("Gain", "Best-of-N minus the single answer: what sampling N and keeping the best buys."),
            "won": _Tile("Prompts won", "Prompts where the winner scored strictly higher than the single answer."),
            "cost": _Tile("Samples", "Answers generated (and scored) for best-of-N against the single answer."),
            "time": _Tile("Time", "Seconds spent sampling and scoring, in batched calls; tokens/s counts every "
                                  "row of a batched call."),
        }
        tiles = QGridLayout()
        tiles.setSpacing(8)
        for i, tile in enumerate(self.tiles.values()):
            tiles.addWidget(tile, i // 3, i % 3)
        self.table = QTableWidget(0, 4)
        self.table.setHorizontalHeaderLabels(["Prompt", "Best-of-N", "Single", "Gain"])
        self.table.verticalHeader().setVisible(False)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for column in (1, 2, 3):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)
        self.table.setToolTip("Select a prompt to read its N answers, ranked, on the left.")
        self.table.currentCellChanged.connect(lambda row, *_: self._show_result_at(row))
        right = QWidget()
        rl = QVBoxLayout(right)
        rl.setContentsMargins(6, 0, 0, 0)
        rl.setSpacing(8)
        title = QLabel("Batch report")
        title.setObjectName("cardTitle")
        rl.addWidget(title)
        rl.addWidget(self.headline)
        rl.addLayout(tiles)
        rl.addWidget(self.table, 1)

        self.lay_out(controls, split(Qt.Orientation.Horizontal, left, right, (3, 2)))

        self.link.sig_best_of_n_row.connect(self._on_row)
        self.link.sig_best_of_n_report.connect(self._on_report)
        self._show_answers(None)

    # ------------------------------------------------------------ state
    def set_ready(self, ready) -> None:
        self._heldout = ready.heldout_rows if ready is not None else 0
        offer_sides(self.side, ready)
        if self._heldout:
            self.report_count.setMaximum(self._heldout)
            self.report_count.setValue(min(self._heldout, DEFAULT_REPORT_PROMPTS))
        self.host.refresh_actions()

    def start_button(self) -> QPushButton:
        return self.sample_button

    def locked_while_running(self) -> tuple[QWidget, ...]:
        return self.n, self.side, self.reward_model, self.graders, self.report_count, self.baseline

    def set_can_start(self, can: bool, why: str = "") -> None:
        super().set_can_start(can, why)
        self.report_button.setEnabled(can and not self._request_id and self._heldout > 0)
        self.report_button.setToolTip(why or ("Best-of-N against the single answer over the run's held-out "
                                              "prompts." if self._heldout else "This run held out no prompts."))

    # ------------------------------------------------------------ requests
    def scorer_fields(self) -> dict[str, Any] | None:
        """The scorer part of the request, or None (with the reason shown) when it is unusable."""
        try:
            graders = parse_graders(self.graders.text())
        except ValueError as exc:
            self.host.show_problem("A grader entry does not parse", str(exc))
            return None
        reward_model = self.reward_model.text().strip()
        if not graders and not reward_model:
            self.host.show_problem("Nothing scores the answers",
                                   "Name a reward model run (or folder), or graders, to rank the N answers.")
            return None
        return {"reward_model": reward_model, "graders": graders}

    def _sampling(self) -> dict | None:
        sampling = self.sampling_or_problem()
        if sampling is None:
            return None
        if sampling.get("greedy"):
            self.host.show_problem("Greedy decoding gives the same answer N times",
                                   "Turn Greedy off in Sampling: best-of-N needs varied samples.")
            return None
        return sampling

    def prompt_to_send(self) -> Any:
        return self.typed_prompt(self.prompt_edit.toPlainText())

    def sample(self) -> None:
        if self._request_id or not self.sample_button.isEnabled():
            return
        scorer, sampling = self.scorer_fields(), self._sampling()
        if scorer is None or sampling is None:
            return
        if self.prompt_edit.toPlainText().strip() == "":
            self.host.show_problem("No prompt", "Type the prompt to answer N times.")
            return
        self.host.run_when_ready(lambda: self._send("one", dict(scorer, sampling=sampling)), "Sample N")

    def run_report(self) -> None:
        if self._request_id or not self.report_button.isEnabled():
            return
        scorer, sampling = self.scorer_fields(), self._sampling()
        if scorer is None or sampling is None:
            return
        self.host.run_when_ready(lambda: self._send("batch", dict(scorer, sampling=sampling)), "Batch report")

    def _send(self, kind: str, fields: dict) -> None:
        side = self.side.currentData()
        if kind == "one":
            prompt = self.prompt_to_send()
            if prompt is None:
                return
            fields.update(prompt=prompt)
        else:
            fields.update(limit=self.report_count.value(), baseline=self.baseline.currentData())
        request_id = self.link.best_of_n(n=self.n.value(), side=side, **fields)
        if request_id is None:
            return
        self._kind = kind
        self._scorer_label = scorer_label(fields)
        if kind == "batch":
            self._results = []
            self._report = None
            self.table.setRowCount(0)
            self._show_report(None, "Sampling…")
        self._show_answers(None, "Sampling and scoring…")
        self.status.setText("Loading the scorer…")
        self.begin(request_id)

    def on_stopping(self) -> None:
        self.status.setText("Stopping after the batch in progress…")

    # ------------------------------------------------------------ events
    def show_status(self, text: str) -> None:
        self.status.setText(text)

    def _on_row(self, event) -> None:
        if event.request_id != self._request_id:
            return
        result = event.result
        if self._kind == "one":
            self._show_answers(result)
            return
        self._results.append(result)
        row = self.table.rowCount()
        self.table.insertRow(row)
        values = [result.prompt.replace("\n", " "), reward_text(result.winner.reward),
                  reward_text(result.single.reward if result.single else None), _signed(result.gain)]
        for column, value in enumerate(values):
            item = QTableWidgetItem(value)
            if column:
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            self.table.setItem(row, column, item)
        self.status.setText(f"{len(self._results)} of {event.total} prompts")
        if row == 0:
            self.table.selectRow(0)

    def _on_report(self, event) -> None:
        if event.request_id != self._request_id or self._kind != "batch":
            return
        self._report = event.report
        self._show_report(event.report, event.headline)

    def on_request_finished(self, event) -> None:
        if not event.ok and not event.cancelled:
            self.status.setText("Failed: see the message above.")
            if self._kind == "one":
                self._show_answers(None)
        else:
            self.status.setText("Stopped." if event.cancelled else "Done.")
            if self._kind == "one" and event.cancelled and not self.cards():
                self._show_answers(None, "Stopped before the answers were scored.")

    # ------------------------------------------------------------ showing
    def cards(self) -> list[RankedAnswerCard]:
        return [self.cards_layout.itemAt(i).widget() for i in range(self.cards_layout.count())
                if isinstance(self.cards_layout.itemAt(i).widget(), RankedAnswerCard)]

    def _show_answers(self, result, waiting: str = "") -> None:
        for card in self.cards():
            card.setParent(None)
            card.deleteLater()
        if result is None:
            self.answers_title.setText(waiting or "Ranked answers: sample N answers to a prompt, or pick a prompt "
                                                  "of the batch report.")
            return
        gain = "" if result.single is None else f"; the best is {_signed(result.gain)} over the single answer"
        ranked_by = f", ranked by {self._scorer_label}" if self._scorer_label else ""
        self.answers_title.setText(f"{_short(result.prompt)}\n{result.n} answers from the {result.side} model"
                                   f"{ranked_by}, best first{gain}")
        for answer in result.answers:
            self.cards_layout.insertWidget(self.cards_layout.count() - 1,
                                           RankedAnswerCard(answer, winner=answer.rank == 1))

    def _show_result_at(self, row: int) -> None:
        if 0 <= row < len(self._results):
            self._show_answers(self._results[row])

    def _show_report(self, report, headline: str = "") -> None:
        self.headline.setText(headline or "")
        if report is None or not report.prompts:
            for tile in self.tiles.values():
                tile.set("–")
            return
        gain_tone = "good" if report.gain > 0 else ("bad" if report.gain < 0 else "")
        self.tiles["best"].set(reward_text(report.mean_best), "good" if report.gain > 0 else "")
        self.tiles["single"].set(reward_text(report.mean_single), note=BASELINE_TEXT.get(report.baseline, ""))
        self.tiles["gain"].set(_signed(report.gain), gain_tone)
        won = "–" if math.isnan(report.win_rate) else f"{report.win_rate:.0%}"
        self.tiles["won"].set(won, note=f"of {report.prompts} prompts")
        self.tiles["cost"].set(f"{report.samples} vs {report.single_samples}",
                               note=f"{report.n}x the answers; {report.generation_calls} batched "
                                    f"call{'' if report.generation_calls == 1 else 's'}")
        speed = tokens_per_second(self._results, report)
        self.tiles["time"].set(f"{report.seconds:.1f} s", note=f"{report.generation_seconds:.1f} s sampling"
                                                               + (f" ({speed:.{1 if speed < 10 else 0}f} "
                                                                  "tokens/s)" if speed else "")
                                                               + f", {report.scoring_seconds:.1f} s scoring")

    def report(self):
        return self._report

    def _browse_reward_model(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Pick a reward model run or folder",
                                                  self.reward_model.text() or "")
        if folder:
            self.reward_model.setText(folder)


def scorer_label(fields: dict) -> str:
    """What ranks the answers, in a few words: the reward model's folder name and the graders' names."""
    from pathlib import Path

    names = [Path(fields["reward_model"]).name] if fields.get("reward_model") else []
    names += [g.get("grader", "?") for g in fields.get("graders") or []]
    return " + ".join(names)


def tokens_per_second(results: list, report) -> float:
    """Tokens generated per second of sampling, all rows of a batched call counted (the greedy
    answers too when they are the baseline); 0 when nothing was timed."""
    tokens = sum(a.n_tokens for r in results for a in r.answers)
    if report.baseline == "greedy":
        tokens += sum(r.single.n_tokens for r in results if r.single is not None)
    return tokens / report.generation_seconds if report.generation_seconds > 0 else 0.0


def _signed(value: float | None) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:+.3f}"


def _short(text: str, limit: int = 90) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[:limit - 1] + "…"
