"""A judge model as a reward function, for a method that samples two answers per prompt.

TRL 1.16's trainer for that (sampled pairs, labelled while training) dropped its ``judge``
parameter: whatever labels a sampled pair is a reward function now. This module wraps a
pairwise judge (the one AI feedback uses, ``backend.generation.preferences.judging``: the
same instruction, the verdict read from the next-token probabilities of "A" and "B") as
one. TRL calls a reward function with every prompt twice (``prompts = 2 * batch``) and the
two answers of prompt ``i`` at ``i`` and ``i + batch``; the judge sees each pair in both
orders, and the answer both orders prefer gets 1 and the other 0. When the orders disagree
the judge is guessing (small judges favour a position more than an answer), so both get
0.5 and the pair teaches nothing rather than noise. Torch-free at import; the judge model
loads in the training worker.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

from backend.generation.preferences.judging import PairwiseJudge, judge_both_orders

WIN, LOSS, TIE = 1.0, 0.0, 0.5
# The worker log gets the running agreement rate on the first call and then every this many.
REPORT_EVERY = 10


def _answer_text(completion: Any) -> str:
    """A completion as text: conversational completions are a list with one assistant message."""
    if isinstance(completion, list):
        return "\n".join(str(m.get("content", "")) if isinstance(m, dict) else str(m) for m in completion)
    return "" if completion is None else str(completion)


def judge_reward_function(judge: PairwiseJudge, log: Callable[[str], None] | None = None):
    """The reward function TRL calls with a batch of pairs, judging each prompt's two answers with ``judge``.

    The function keeps ``pairs`` and ``agreed`` counts; the agreement rate is in the log."""
    log = log or (lambda message: print(message, flush=True))

    def judge_pairs(prompts=None, completions=(), **kwargs) -> list[float]:
        completions = list(completions)
        if len(completions) % 2:
            raise ValueError(f"the judge rewards answers in pairs (two per prompt); got {len(completions)} answers")
        half = len(completions) // 2
        prompts = list(prompts) if prompts is not None else [""] * len(completions)
        rewards = [TIE] * len(completions)
        for i in range(half):
            verdict = judge_both_orders(judge, prompts[i], _answer_text(completions[i]),
                                        _answer_text(completions[i + half]))
            judge_pairs.pairs += 1
            if verdict.winner:
                judge_pairs.agreed += 1
                first_wins = verdict.winner == 1
                rewards[i], rewards[i + half] = (WIN, LOSS) if first_wins else (LOSS, WIN)
        judge_pairs.calls += 1
        if judge_pairs.calls == 1 or judge_pairs.calls % REPORT_EVERY == 0:
            log(f"Judge {judge.label}: both orders agreed on {judge_pairs.agreed} of {judge_pairs.pairs} pairs "
                f"({judge_pairs.agreed / max(1, judge_pairs.pairs):.0%}); the others were scored as ties.")
        return rewards

    judge_pairs.pairs = judge_pairs.agreed = judge_pairs.calls = 0
    judge_pairs.__name__ = "judge"
    return judge_pairs


class JudgeLoadError(ValueError):
    """The judge model could not be loaded or cannot give a verdict; the message says which model and why."""


def check_judge_model(model: str) -> str:
    """Why ``model`` cannot be a judge, without loading it ("" when it may be). Reads files only."""
    from backend.generation.preferences.request import RequestError, check_model

    try:
        check_model(model, "judge_model")
    except RequestError as exc:
        return f"Judge model: {exc}"
    return ""


def load_judge(model: str, quantization: str, log: Callable[[str], None] | None = None) -> PairwiseJudge:
    """The judge ``model`` names (the embedded model, a folder, a .gguf file, a cached hub id, a run or
    adapter folder), loaded as AI feedback loads it, with the launch's permissions. Raises
    JudgeLoadError naming the model when it cannot be loaded or has no single-token "A"/"B"."""
    from backend.generation.preferences.local_model import LocalModel
    from backend.generation.preferences.request import RequestError
    from backend.models.adapter_loading import AdapterLoadError
    from backend.models.source import ModelSourceError

    log = log or (lambda message: print(message, flush=True))
    try:
        judge = LocalModel(model, quantization, threading.Event(), log=log)
        judge.letter_ids()  # a judge without single-token letters is refused now, not at the first step
    except (ModelSourceError, AdapterLoadError, RequestError, OSError, ValueError) as exc:
        raise JudgeLoadError(f"The judge model {model} could not be loaded: {exc}") from exc
    return judge
