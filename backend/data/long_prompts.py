"""Examples whose prompt leaves too little room for the answer within Max length, and the
one place that decides what happens to them, for every method.

TRL 1.16 cuts a sequence that is longer than ``max_length`` at its end
(``truncation_mode="keep_start"``; its ``keep_end`` is deprecated and would cut
the prompt's start and the answer's start alike, and no ``max_prompt_length``
exists any more). So a long prompt eats the answer: some trainers drop an example
whose prompt alone fills ``max_length``; others keep it with an empty answer,
whose log-probability is an average over zero tokens: NaN at the first batch
that holds one. The ``long_prompts`` setting chooses instead:

* ``truncate_left`` (default): cut the prompt from its start, keeping its end
  (the question nearest the answer), so the answer keeps at least
  ``ANSWER_SHARE`` of Max length, or all of it when it is shorter;
* ``drop``: leave out every example that would lose any part of its answer;
* ``refuse``: do not train, and name the Max length at which every example fits.

The arithmetic (``plan_row``, ``LengthFit``) is pure and shared with the
pre-flight check, which counts with the data report's lengths; ``fit_dataset``
applies it in the worker with the model's tokenizer, rendering each example the
way TRL does (``backend.data.prompt_rendering``). Nothing here imports torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from backend.data.prompt_rendering import common_prefix_length, display_text, is_messages, response_token_ids

POLICIES = ("truncate_left", "drop", "refuse")
# The minimum answer budget: the share of Max length a cut prompt leaves to the answer.
ANSWER_SHARE = 0.5
# Dropping more than this share of the data is refused: what is left is not the dataset the user chose.
MAX_DROPPED_SHARE = 0.5
ANSWER_COLUMNS = ("chosen", "rejected", "completion")


def answer_floor(max_length: int) -> int:
    return max(1, int(max_length * ANSWER_SHARE))


def kept_prompt_tokens(prompt_len: int, answer_len: int, max_length: int) -> int:
    """How many tokens of the prompt's end stay under ``truncate_left``: all of them when the
    example fits; otherwise as many as leave the answer whole, but never so many that the
    answer gets less than its budget."""
    if prompt_len + answer_len <= max_length:
        return prompt_len
    answer_room = min(answer_len, max(answer_floor(max_length), max_length - prompt_len))
    return max(0, min(prompt_len, max_length - answer_room))


@dataclass
class LengthFit:
    """How a set of (prompt, longest answer) lengths fits in ``max_length``.

    ``answer_cut``: the prompt fits but the answer loses its end; ``answer_lost``: the
    prompt alone fills Max length, nothing of the answer would be left."""

    max_length: int
    rows: int = 0
    fits: int = 0
    answer_cut: int = 0
    answer_lost: int = 0
    prompt_cut: int = 0  # prompts truncate_left shortens
    answer_still_cut: int = 0  # answers longer than their budget, cut at the end even after truncate_left
    longest: int = 0  # prompt + answer of the longest example
    longest_answer: int = 0  # the longest answer, at most Max length (what a head scoring only answers projects)

    @property
    def affected(self) -> int:
        return self.answer_cut + self.answer_lost

    def length_that_fits_all(self) -> int:
        return round_up(max(self.longest, 1), 64)

    def add(self, prompt_len: int, answer_len: int) -> None:
        self.rows += 1
        self.longest = max(self.longest, prompt_len + answer_len)
        self.longest_answer = max(self.longest_answer, min(answer_len, self.max_length))
        if prompt_len + answer_len <= self.max_length:
            self.fits += 1
            return
        if prompt_len >= self.max_length:
            self.answer_lost += 1
        else:
            self.answer_cut += 1
        keep = kept_prompt_tokens(prompt_len, answer_len, self.max_length)
        if keep < prompt_len:
            self.prompt_cut += 1
        if keep + answer_len > self.max_length:
            self.answer_still_cut += 1


def measure_fit(lengths: list[tuple[int, int]], max_length: int) -> LengthFit:
    fit = LengthFit(max_length=max_length)
    for prompt_len, answer_len in lengths:
        fit.add(prompt_len, answer_len)
    return fit


def round_up(value: float, step: int) -> int:
    return int(math.ceil(value / step) * step)


def _share(n: int, total: int) -> str:
    return f"{n} of {total} ({n / max(total, 1):.0%})"


def describe_loss(fit: LengthFit, unit: str = "tokens", where: str = "examples") -> str:
    """What Max length would do to these examples without the long-prompt policy."""
    parts = []
    if fit.answer_lost:
        parts.append(f"{_share(fit.answer_lost, fit.rows)} {where} would lose all of their answer (the prompt "
                     f"alone is {fit.max_length} {unit} or longer)")
    if fit.answer_cut:
        parts.append(f"{_share(fit.answer_cut, fit.rows)} would lose the end of their answer")
    return "; ".join(parts)


def refusal(fit: LengthFit, policy: str, unit: str = "tokens", name: str = "the dataset") -> str | None:
    """Why training must not start with this policy, or None. The message names the setting,
    the count and the Max length at which every example fits."""
    if not fit.affected:
        return None
    fits_all = fit.length_that_fits_all()
    loss = describe_loss(fit, unit, where=f"examples in {name}")
    if policy == "refuse":
        return (f"At Max length {fit.max_length}, {loss}. Long prompts is set to refuse: raise Max length to "
                f"{fits_all} (every example fits), or set Long prompts to truncate_left (cut prompts from the "
                "start, keep the answers) or drop (leave those examples out).")
    if policy == "drop" and fit.affected > fit.rows * MAX_DROPPED_SHARE:
        return (f"At Max length {fit.max_length}, {loss}. Long prompts is set to drop, which would leave out "
                f"{_share(fit.affected, fit.rows)} examples: most of the data. Raise Max length to {fits_all} "
                "(every example fits), or set Long prompts to truncate_left.")
    return None


def outcome_text(fit: LengthFit, policy: str, unit: str = "tokens", where: str = "examples") -> str | None:
    """What the policy will do (or did) to these examples, in one sentence; None when all fit."""
    if not fit.affected:
        return None
    loss = describe_loss(fit, unit, where)
    if policy == "drop":
        return f"At Max length {fit.max_length}, {loss}: those {fit.affected} are left out (Long prompts: drop)."
    if policy == "refuse":
        return f"At Max length {fit.max_length}, {loss}."
    text = f"At Max length {fit.max_length}, {loss}: "
    if fit.prompt_cut:
        text += (f"{fit.prompt_cut} prompts are cut from the start so that each answer keeps at least "
                 f"{answer_floor(fit.max_length)} {unit} (Long prompts: truncate_left)")
    still = fit.answer_still_cut
    if still:
        text += ("; " if fit.prompt_cut else "") + f"{still} answers longer than that still lose their end"
    return text + ". No example trains on an empty answer."


# --------------------------------------------------------------------- worker side
@dataclass
class FitResult:
    """What ``fit_dataset`` did: the lengths before, and the rows it changed or left out."""

    fit: LengthFit
    policy: str
    truncated_rows: list[int] = field(default_factory=list)
    dropped_rows: list[int] = field(default_factory=list)


def _answers(row: dict[str, Any]) -> list[Any]:
    return [row[c] for c in ANSWER_COLUMNS if c in row and row[c] is not None]


def _split_messages(row: dict[str, Any]) -> tuple[Any, list[Any]] | None:
    """(prompt, [answer]) of a row; a ``messages`` conversation splits at its last assistant
    turn. None for rows with no prompt (plain text), which long prompts cannot affect."""
    if "prompt" in row:
        return row["prompt"], _answers(row)
    messages = row.get("messages")
    if is_messages(messages):
        last = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=None)
        if last:
            return messages[:last], [messages[last:]]
    return None


def row_lengths(tokenizer, prompt: Any, answers: list[Any]) -> tuple[int, int]:
    """(prompt tokens, longest answer's tokens) as TRL renders them (answers with their EOS)."""
    prompt_len, longest = 0, 0
    for answer in answers:
        prompt_ids, answer_ids = response_token_ids(tokenizer, prompt, answer)
        prompt_len = max(prompt_len, len(prompt_ids))
        longest = max(longest, len(answer_ids))
    return prompt_len, longest


def truncate_prompt_left(tokenizer, prompt: Any, answers: list[Any], max_length: int) -> Any:
    """``prompt`` with its start cut so that the answers keep their budget. A text prompt
    loses its first tokens; a conversation loses its oldest turns (a system message stays),
    then the start of its oldest remaining message."""
    for _ in range(8):  # re-tokenizing a cut text can merge tokens differently: check and cut again
        prompt_len, answer_len = row_lengths(tokenizer, prompt, answers)
        keep = kept_prompt_tokens(prompt_len, answer_len, max_length)
        excess = prompt_len - keep
        if excess <= 0:
            return prompt
        prompt = _cut_start(tokenizer, prompt, excess)
    return prompt


def _cut_text_start(tokenizer, text: str, tokens: int) -> str:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if tokens >= len(ids):
        return ""
    return tokenizer.decode(ids[tokens:], skip_special_tokens=False)


def _cut_start(tokenizer, prompt: Any, tokens: int) -> Any:
    if isinstance(prompt, str):
        return _cut_text_start(tokenizer, prompt, tokens)
    messages = [dict(m) for m in prompt]
    head = [m for m in messages[:1] if m.get("role") == "system"]
    body = messages[len(head):]
    while len(body) > 1:
        dropped = body.pop(0)
        tokens -= len(tokenizer(display_text(dropped.get("content", "")), add_special_tokens=False)["input_ids"])
        if body[0].get("role") == "user" and tokens <= 0:  # a conversation goes on from a user turn
            return head + body
    if body:
        body[0]["content"] = _cut_text_start(tokenizer, display_text(body[0].get("content", "")), max(tokens, 1))
    return head + body


def fit_dataset(dataset, tokenizer, max_length: int, policy: str):
    """Apply the long-prompt policy to a TRL-format dataset: (new dataset, FitResult).

    Measures every row with the tokenizer; only rows that do not fit are rewritten or
    dropped. ``refuse`` changes nothing: the caller refuses when ``refusal`` says so."""
    if policy not in POLICIES:
        raise ValueError(f"long_prompts must be one of {', '.join(POLICIES)}, not {policy!r}")
    fit = LengthFit(max_length=max_length)
    result = FitResult(fit=fit, policy=policy)
    plans: dict[int, Any] = {}
    for index, prompt, answers, (prompt_len, answer_len) in _measured_rows(dataset, tokenizer):
        fit.add(prompt_len, answer_len)
        if prompt_len + answer_len <= max_length:
            continue
        if policy == "drop":
            result.dropped_rows.append(index)
        elif policy == "truncate_left" and kept_prompt_tokens(prompt_len, answer_len, max_length) < prompt_len:
            plans[index] = truncate_prompt_left(tokenizer, prompt, answers, max_length)
            result.truncated_rows.append(index)
    if result.dropped_rows:
        dropped = set(result.dropped_rows)
        dataset = dataset.select([i for i in range(len(dataset)) if i not in dropped])
    if plans:
        dataset = dataset.map(_apply_prompt, with_indices=True, fn_kwargs={"plans": plans})
    return dataset, result


_MEASURE_CHUNK = 512


def _measured_rows(dataset, tokenizer):
    """(index, prompt, answers, (prompt tokens, longest answer tokens)) for each row with a
    prompt. Text prompts are tokenized a chunk at a time (a fast tokenizer encodes a batch
    in parallel), the same way ``row_lengths`` counts them; conversations row by row."""
    chunk: list[tuple[int, Any, list[Any]]] = []
    for index, row in enumerate(dataset):
        split = _split_messages(row)
        if split is None or not split[1]:
            continue
        prompt, answers = split
        if not isinstance(prompt, str) or not all(isinstance(a, str) for a in answers):
            yield index, prompt, answers, row_lengths(tokenizer, prompt, answers)
            continue
        chunk.append((index, prompt, answers))
        if len(chunk) == _MEASURE_CHUNK:
            yield from _measure_text_chunk(chunk, tokenizer)
            chunk = []
    yield from _measure_text_chunk(chunk, tokenizer)


def _measure_text_chunk(chunk, tokenizer):
    if not chunk:
        return
    eos = tokenizer.eos_token or ""
    texts = []
    for _index, prompt, answers in chunk:
        texts.append(prompt)
        texts += [prompt + a + (eos if eos and not a.endswith(eos) else "") for a in answers]
    ids = iter(tokenizer(texts)["input_ids"])
    for index, prompt, answers in chunk:
        prompt_ids = next(ids)
        prompt_len, longest = 0, 0
        for _answer in answers:
            full = next(ids)
            n = common_prefix_length(prompt_ids, full)
            prompt_len, longest = max(prompt_len, n), max(longest, len(full) - n)
        yield index, prompt, answers, (prompt_len, longest)


def _apply_prompt(row: dict[str, Any], index: int, plans: dict[int, Any]) -> dict[str, Any]:
    if index not in plans:
        return row
    new_prompt = plans[index]
    if "prompt" in row:
        return {**row, "prompt": new_prompt}
    messages = row["messages"]
    last = max(i for i, m in enumerate(messages) if m.get("role") == "assistant")
    return {**row, "messages": list(new_prompt) + list(messages[last:])}
