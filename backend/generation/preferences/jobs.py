"""The two job loops. Models come from a provider, so the loops run the same on real models in the
worker and on fakes in logic tests.

Each row's work is deterministic given the request (its seeds derive from the request's seed and
the row's index), so a row done after a resume is the row an uninterrupted job would have made.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from backend.generation.preferences.constitution import critique_messages, principle_for_row, revision_messages
from backend.generation.preferences.inputs import InputRow, InputRows
from backend.generation.preferences.judging import PairwiseJudge, Verdict, judge_both_orders
from backend.generation.preferences.partial_file import PartialFile
from backend.generation.preferences.request import AI_FEEDBACK, GenerationRequest, RequestError

DISAGREE = "the judge's two orders disagree"


class JobStopped(Exception):
    """A stop was asked for; the rows finished so far are in the partial file."""


class Answerer(Protocol):
    label: str

    def answer(self, prompt: Any, *, seed: int, max_new_tokens: int, temperature: float) -> str:
        """The model's answer to ``prompt`` (text or messages); JobStopped when a stop cuts it short."""


class ModelProvider(Protocol):
    def judge(self, model: str) -> PairwiseJudge: ...

    def answerer(self, model: str) -> Answerer: ...


@dataclass
class JobHooks:
    stop_requested: Callable[[], bool] = lambda: False
    row_done: Callable[[dict[str, Any], "JobStats"], None] = lambda record, stats: None
    phase: Callable[[str, str], None] = lambda phase, message: None


@dataclass
class JobStats:
    total: int
    done: int = 0
    kept: int = 0
    judged: int = 0
    agreed: int = 0
    file_label_known: int = 0
    file_label_agreed: int = 0
    row_seconds: float = 0.0
    dropped: Counter = field(default_factory=Counter)
    principles: Counter = field(default_factory=Counter)
    position_picks: Counter = field(default_factory=Counter)  # "first"/"second": chosen by place, not answer

    def add(self, record: dict[str, Any]) -> None:
        self.done += 1
        self.row_seconds += float(record.get("seconds") or 0.0)
        if record.get("kept"):
            self.kept += 1
            if record.get("principle"):
                self.principles[record["principle"]] += 1
        else:
            self.dropped[record.get("reason") or "dropped"] += 1
        if "p_ab" in record:
            self.judged += 1
            self.agreed += 1 if record.get("agree") else 0
            pick = Verdict(record["p_ab"], record["p_ba"]).position_pick
            if pick:
                self.position_picks[pick] += 1
        if record.get("file_label_agrees") is not None:
            self.file_label_known += 1
            self.file_label_agreed += 1 if record["file_label_agrees"] else 0

    @property
    def agreement_rate(self) -> float | None:
        return self.agreed / self.judged if self.judged else None

    @property
    def seconds_per_row(self) -> float | None:
        return self.row_seconds / self.done if self.done else None

    def summary(self) -> dict[str, Any]:
        return {"rows_total": self.total, "rows_done": self.done, "kept": self.kept,
                "dropped": dict(self.dropped), "judged": self.judged, "agreement_rate": self.agreement_rate,
                "file_label_agreement": (self.file_label_agreed / self.file_label_known
                                         if self.file_label_known else None),
                "seconds_per_row": self.seconds_per_row, "principles_used": dict(self.principles),
                "position_picks": dict(self.position_picks), "judge_note": self.judge_note()}

    def judge_note(self) -> str:
        """Plain words when the judge mostly chose by position: then its two orders disagree,
        pairs are dropped, and a low agreement rate alone does not say why."""
        if not self.judged:
            return ""
        place, count = max(self.position_picks.items(), key=lambda kv: kv[1], default=("", 0))
        if count * 2 < self.judged:
            return ""
        return (f"The judge chose by position, not by answer: in {count} of {self.judged} pairs it preferred "
                f"whichever answer was shown {place}, so its two orders disagreed and the pair was dropped. A "
                "small model often does this; a larger instruct model as the judge is the fix.")


def row_seed(request: GenerationRequest, index: int, k: int) -> int:
    return (request.seed * 1_000_003 + index * 16 + k) % (2**31 - 1)


def run_job(request: GenerationRequest, inputs: InputRows, provider: ModelProvider, partial: PartialFile,
            hooks: JobHooks | None = None) -> tuple[dict[str, Any], JobStats]:
    """Do every row not yet in the partial file, then write the output and report. Returns the report.
    JobStopped leaves the partial file for the next run."""
    hooks = hooks or JobHooks()
    check_inputs_fit(request, inputs)
    wanted = {row.index for row in inputs.rows}
    records = partial.open()
    stats = JobStats(total=len(inputs.rows))
    for index in sorted(records):
        if index in wanted:
            stats.add(records[index])
    make = _ai_feedback_record if request.job == AI_FEEDBACK else _constitutional_record
    started = time.perf_counter()
    try:
        for row in inputs.rows:
            if row.index in records:
                continue
            if hooks.stop_requested():
                raise JobStopped(f"Stopped after {stats.done} of {stats.total} rows.")
            t0 = time.perf_counter()
            record = make(request, row, provider)
            record.update(index=row.index, line=row.position, seconds=round(time.perf_counter() - t0, 4))
            partial.append(record)
            stats.add(record)
            hooks.row_done(record, stats)
    finally:
        partial.close()
    rows = [records[i]["row"] for i in sorted(records) if i in wanted and records[i].get("kept")]
    report = {"job": request.job, "input": str(inputs.path), "output": str(request.output),
              "model": request.model or "embedded", "answer_models": list(request.answer_models),
              "answers_from": _answer_source(request), "input_rows": inputs.describe(),
              "input_skipped": inputs.skipped, "input_skip_messages": inputs.skip_messages,
              "seconds_this_session": round(time.perf_counter() - started, 2), "finished": time.time(),
              **stats.summary()}
    if request.job != AI_FEEDBACK:
        report["principles"] = request.principles
    partial.finish(rows, report)
    return report, stats


def check_inputs_fit(request: GenerationRequest, inputs: InputRows) -> None:
    if request.job == AI_FEEDBACK and not inputs.has_answers and not request.answer_models:
        raise RequestError(f"{inputs.path} holds prompts only (column '{inputs.prompt_column}'), so the answers must "
                           "come from a model: choose one answer model (sampled twice per prompt) or two (one "
                           "answer each).", "answer_models")


def _answer_source(request: GenerationRequest) -> str:
    if request.job != AI_FEEDBACK:
        return request.model or "embedded"
    if request.answer_models:
        return " vs ".join(m or "embedded" for m in request.answer_models)
    return "file"


def _ai_feedback_record(request: GenerationRequest, row: InputRow, provider: ModelProvider) -> dict[str, Any]:
    file_prefers_first = None
    if request.answer_models:
        sampling = dict(max_new_tokens=request.max_new_tokens, temperature=request.temperature)
        first = provider.answerer(request.answer_models[0])
        second = provider.answerer(request.answer_models[-1])
        answers = (first.answer(row.prompt, seed=row_seed(request, row.index, 0), **sampling),
                   second.answer(row.prompt, seed=row_seed(request, row.index, 1), **sampling))
        if answers[0].strip() == answers[1].strip() or not answers[0].strip() or not answers[1].strip():
            reason = "an answer came out empty" if not (answers[0].strip() and answers[1].strip()) else \
                "the two sampled answers are identical"
            return {"kept": False, "reason": reason, "answers": list(answers)}
    else:
        answers, file_prefers_first = row.answers, row.file_prefers_first
    judge = provider.judge(request.model)
    verdict = judge_both_orders(judge, row.prompt, answers[0], answers[1])
    record: dict[str, Any] = {"kept": verdict.agree, "reason": "" if verdict.agree else DISAGREE,
                              "agree": verdict.agree, "p_ab": round(verdict.p_ab, 5), "p_ba": round(verdict.p_ba, 5),
                              "answers": list(answers)}
    if verdict.agree:
        chosen, rejected = (answers[0], answers[1]) if verdict.winner == 1 else (answers[1], answers[0])
        if file_prefers_first is not None:
            record["file_label_agrees"] = (verdict.winner == 1) == file_prefers_first
        row_out = {"prompt": row.prompt, "chosen": chosen, "rejected": rejected, "judge": judge.label,
                   "judge_confidence": round(verdict.confidence, 4), "judge_p_ab": record["p_ab"],
                   "judge_p_ba": record["p_ba"], "answers_from": _answer_source(request),
                   "source_line": row.position}
        if "file_label_agrees" in record:
            row_out["file_label_agrees"] = record["file_label_agrees"]
        record["row"] = row_out
    return record


def _as_messages(prompt: Any) -> list[dict[str, str]]:
    return [dict(m) for m in prompt] if isinstance(prompt, list) else [{"role": "user", "content": prompt}]


def _constitutional_record(request: GenerationRequest, row: InputRow, provider: ModelProvider) -> dict[str, Any]:
    model = provider.answerer(request.model)
    principle = principle_for_row(request.principles, row.index, request.seed)
    sampling = dict(max_new_tokens=request.max_new_tokens, temperature=request.temperature)
    conversation = _as_messages(row.prompt)
    answer = model.answer(conversation, seed=row_seed(request, row.index, 0), **sampling).strip()
    base = {"principle": principle["name"] or principle["critique"][:40]}
    if not answer:
        return {**base, "kept": False, "reason": "the first answer came out empty"}
    asked = critique_messages(conversation, answer, principle)
    critique = model.answer(asked, seed=row_seed(request, row.index, 1), **sampling).strip()
    revision = model.answer(revision_messages(asked, critique, principle), seed=row_seed(request, row.index, 2),
                            **sampling).strip()
    steps = {"answer": answer, "critique": critique, "revision": revision}
    if not revision:
        return {**base, **steps, "kept": False, "reason": "the revision came out empty"}
    if revision == answer:
        return {**base, **steps, "kept": False, "reason": "the revision is the same as the answer"}
    row_out = {"prompt": row.prompt, "chosen": revision, "rejected": answer, "principle": base["principle"],
               "critique_request": principle["critique"], "critique": critique,
               "revision_request": principle["revision"], "model": model.label, "source_line": row.position}
    return {**base, "kept": True, "reason": "", "row": row_out}
