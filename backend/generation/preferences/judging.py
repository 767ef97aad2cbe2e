"""The pairwise judge, asked in both orders.

A judge sees the prompt and two answers labelled A and B and is asked which is better; its
verdict is read from its next-token probabilities for "A" and "B" (no free text to parse, and a
probability rather than a coin flip). Small judges favour a position more than an answer, so every
pair is judged twice with the answers swapped, and kept only when both orders prefer the same
answer. How often they agree is the agreement rate: a low one says the judge is mostly guessing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from backend.data.prompt_rendering import display_text

JUDGE_INSTRUCTION = (
    "You are comparing two answers to the same request. Which answer is better: more helpful, more "
    "correct, and more polite and harmless?\n\n"
    "Request:\n{prompt}\n\n"
    "Answer A:\n{first}\n\n"
    "Answer B:\n{second}\n\n"
    "Reply with one letter: A if answer A is better, B if answer B is better."
)


class PairwiseJudge(Protocol):
    label: str

    def prob_first_better(self, prompt: Any, first: str, second: str) -> float:
        """Probability that the answer shown as A (``first``) is the better one."""


def judge_messages(prompt: Any, first: str, second: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": JUDGE_INSTRUCTION.format(prompt=display_text(prompt).strip(),
                                                                 first=first.strip(), second=second.strip())}]


@dataclass
class Verdict:
    """Both orders of one pair. ``p_ab``: P(answer 1 better) with answer 1 shown first;
    ``p_ba``: P(answer 1 better) with answer 1 shown second."""

    p_ab: float
    p_ba: float

    @property
    def first_order_prefers(self) -> int:
        return _side(self.p_ab)

    @property
    def second_order_prefers(self) -> int:
        return _side(self.p_ba)

    @property
    def agree(self) -> bool:
        return self.first_order_prefers != 0 and self.first_order_prefers == self.second_order_prefers

    @property
    def winner(self) -> int:
        """1 or 2 when both orders agree; 0 otherwise."""
        return self.first_order_prefers if self.agree else 0

    @property
    def position_pick(self) -> str:
        """"first" or "second" when both orders preferred whichever answer sat in that
        place: the judge chose by position, not by answer. "" otherwise."""
        sides = (_side(self.p_ab), _side(self.p_ba))
        if sides == (1, 2):  # answer 1 won when shown first, answer 2 won when it was shown first
            return "first"
        if sides == (2, 1):
            return "second"
        return ""

    @property
    def confidence(self) -> float:
        """The judge's mean probability for the winner over both orders (0 without a winner)."""
        if not self.agree:
            return 0.0
        mean_first = (self.p_ab + self.p_ba) / 2
        return mean_first if self.winner == 1 else 1.0 - mean_first


def _side(p_first: float) -> int:
    return 1 if p_first > 0.5 else 2 if p_first < 0.5 else 0


def judge_both_orders(judge: PairwiseJudge, prompt: Any, answer1: str, answer2: str) -> Verdict:
    p_ab = float(judge.prob_first_better(prompt, answer1, answer2))
    p_ba = 1.0 - float(judge.prob_first_better(prompt, answer2, answer1))
    return Verdict(p_ab=p_ab, p_ba=p_ba)
