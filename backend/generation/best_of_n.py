"""Best-of-N: sample N answers per prompt, score them, keep the best.

The simple baseline every alignment method is measured against: no training,
only N samples and a scorer (a reward model run, the graders, or both). The N
answers of a prompt come from ONE batched generation: the prompt is repeated N
times in the batch, each row with its own seed, so the
samples differ while the whole batch shares one forward per token; several
prompts share that call too, up to ``MAX_ROWS_PER_CALL`` rows.

The batch report says what best-of-N buys over the model's single answer (its
first sample, which costs nothing more, or its greedy answer, which costs one
more batched call) and what it costs: N samples and N scorings per prompt, and
the seconds each took.

This module imports no torch at import time: the window reads its results and
reports; ``sample_and_rank`` runs inside the generation worker or the CLI.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

MAX_N = 64
# Rows (prompt x sample) decoded together; a prompt's N samples always share one call.
MAX_ROWS_PER_CALL = 32
BASELINES = ("first", "greedy")
BASELINE_TEXT = {"first": "its first sample", "greedy": "its greedy answer"}


class BestOfNError(ValueError):
    """A best-of-N request that cannot run; the message names what was wrong."""


# ------------------------------------------------------------------ results


@dataclass
class RankedAnswer:
    """One of the N answers. ``sample`` 0 is the model's first sample, what it would
    have answered alone; ``rank`` 1 is the winner."""

    sample: int
    text: str
    reward: float
    scores: dict[str, float] = field(default_factory=dict)  # per grader / reward model, unweighted
    n_tokens: int = 0
    finish_reason: str = ""
    seed: int = 0
    rank: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class BestOfNResult:
    """One prompt's N answers, best first, and the single answer they are measured against."""

    index: int
    prompt: str  # as shown
    n: int
    side: str
    answers: list[RankedAnswer]
    single: RankedAnswer | None = None  # the baseline answer: sample 0, or the greedy answer
    baseline: str = "first"
    prompt_source: Any = None  # the prompt as sent (a string or a message list)

    def __post_init__(self):
        self.answers = [RankedAnswer(**a) if isinstance(a, dict) else a for a in self.answers]
        if isinstance(self.single, dict):
            self.single = RankedAnswer(**self.single)

    @property
    def winner(self) -> RankedAnswer:
        return self.answers[0]

    @property
    def gain(self) -> float:
        """How much higher the winner scored than the single answer."""
        if self.single is None:
            return math.nan
        return self.winner.reward - self.single.reward

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["answers"] = [a.to_dict() for a in self.answers]
        data["single"] = self.single.to_dict() if self.single is not None else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "BestOfNResult":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class BestOfNReport:
    """Best-of-N against the single answer over a batch of prompts, and its cost."""

    prompts: int = 0
    n: int = 0
    side: str = ""
    baseline: str = "first"
    scorer: str = ""
    mean_best: float = math.nan
    mean_single: float = math.nan
    win_rate: float = math.nan  # share of prompts whose winner beat the single answer
    samples: int = 0  # answers generated for best-of-N
    single_samples: int = 0  # answers the single-answer baseline needs
    scored: int = 0  # answers the scorer judged
    generation_calls: int = 0  # batched generation calls (not one per sample)
    generation_seconds: float = 0.0
    scoring_seconds: float = 0.0
    single_seconds: float | None = None  # measured only for the greedy baseline
    seed: int = 0
    cancelled: bool = False
    model_label: str = ""

    @property
    def gain(self) -> float:
        return self.mean_best - self.mean_single

    @property
    def seconds(self) -> float:
        return self.generation_seconds + self.scoring_seconds

    @property
    def seconds_per_prompt(self) -> float:
        return self.seconds / self.prompts if self.prompts else math.nan

    def headline(self) -> str:
        if not self.prompts:
            return "No prompt finished." if self.cancelled else "No prompts."
        stopped = " (stopped early)" if self.cancelled else ""
        return (f"Best-of-{self.n} scored {_num(self.mean_best)} on average against {_num(self.mean_single)} for "
                f"{BASELINE_TEXT.get(self.baseline, self.baseline)} ({_signed(self.gain)}), over {self.prompts} "
                f"prompts{stopped}; it won on {self.win_rate:.0%} of them. Cost: {self.samples} samples instead of "
                f"{self.single_samples} ({self.n}x), {_count(self.generation_calls, 'batched generation call')}, "
                f"{self.seconds:.1f} s ({self.generation_seconds:.1f} s sampling, {self.scoring_seconds:.1f} s "
                f"scoring).")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "BestOfNReport":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _num(value: float) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.3g}"


def _signed(value: float) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:+.3g}"


def rank_answers(answers: list[RankedAnswer]) -> list[RankedAnswer]:
    """Best first; an answer the scorer gave no number (NaN) goes last; ties keep sample order."""
    ordered = sorted(answers, key=lambda a: (not math.isfinite(a.reward), -a.reward if math.isfinite(a.reward)
                                             else 0.0, a.sample))
    for rank, answer in enumerate(ordered, 1):
        answer.rank = rank
    return ordered


def _mean(values: list[float]) -> float:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return sum(values) / len(values) if values else math.nan


def summarize(results: list[BestOfNResult], *, n: int, side: str, baseline: str, scorer: str,
              generation_calls: int, generation_seconds: float, scoring_seconds: float,
              single_seconds: float | None = None, seed: int = 0, cancelled: bool = False,
              model_label: str = "") -> BestOfNReport:
    """The batch report of finished prompts."""
    pairs = [(r.winner.reward, r.single.reward) for r in results if r.single is not None]
    wins = [best > single for best, single in pairs if math.isfinite(best) and math.isfinite(single)]
    return BestOfNReport(
        prompts=len(results), n=n, side=side, baseline=baseline, scorer=scorer,
        mean_best=_mean([r.winner.reward for r in results]),
        mean_single=_mean([r.single.reward for r in results if r.single is not None]),
        win_rate=sum(wins) / len(wins) if wins else math.nan,
        samples=len(results) * n,
        single_samples=len(results),
        scored=len(results) * n + (len(results) if baseline == "greedy" else 0),
        generation_calls=generation_calls, generation_seconds=generation_seconds,
        scoring_seconds=scoring_seconds, single_seconds=single_seconds, seed=seed, cancelled=cancelled,
        model_label=model_label,
    )


# ------------------------------------------------------------------ scorers


class AnswerScorer(Protocol):
    """Scores completions: the total reward of each and the parts it came from."""

    label: str

    def score(self, prompts: list[Any], completions: list[str], completion_ids: list[list[int]],
              columns: dict[str, list[Any]]) -> tuple[list[float], dict[str, list[float]]]: ...

    def close(self) -> None: ...


def trl_completions(prompts: list[Any], completions: list[str]) -> list[Any]:
    """Completions as TRL hands them to reward functions: a message list after a chat prompt."""
    from backend.data.prompt_rendering import is_messages

    return [[{"role": "assistant", "content": c}] if is_messages(p) else c for p, c in zip(prompts, completions)]


class RewardFunctionScorer:
    """Weighted reward functions with TRL's signature (graders, a reward file, a reward
    model wrapped as one): the total is the weighted sum, as TRL adds them, with a
    function's None skipped for that answer."""

    def __init__(self, funcs: list[Callable], weights: list[float], names: list[str], label: str = ""):
        if not funcs:
            raise BestOfNError("Nothing to score the answers with: give a reward model or at least one grader.")
        self.funcs, self.weights, self.names = list(funcs), [float(w) for w in weights], list(names)
        self.label = label or " + ".join(self.names)

    def score(self, prompts, completions, completion_ids, columns):
        shaped = trl_completions(prompts, completions)
        parts: dict[str, list[float]] = {}
        totals = [0.0] * len(completions)
        counted = [False] * len(completions)
        for func, weight, name in zip(self.funcs, self.weights, self.names):
            values = func(prompts=list(prompts), completions=shaped, completion_ids=completion_ids,
                          trainer_state=None, **columns)
            values = list(values)
            if len(values) != len(completions):
                raise BestOfNError(f"The scorer {name} returned {len(values)} values for {len(completions)} "
                                   "answers; it must return one number (or None) per answer.")
            clean = [math.nan if v is None else float(v) for v in values]
            parts[name] = clean
            for i, value in enumerate(clean):
                if math.isfinite(value):
                    totals[i] += weight * value
                    counted[i] = True
        return [t if c else math.nan for t, c in zip(totals, counted)], parts

    def close(self) -> None:
        """Drop the functions, and with them a reward model's weights."""
        import gc

        self.funcs = []
        gc.collect()


def build_scorer(*, reward_model: str = "", graders: list[dict] | None = None, reward_file: str = "",
                 allow_reward_code: bool = False, run_dir: str | None = None,
                 model_permissions: dict | None = None) -> RewardFunctionScorer:
    """The scorer a request or the CLI asks for: a reward model run, graders (entries as the
    RL methods' configs hold them, a reward file's functions among them), or both, added
    up with their weights. Built by ``backend.graders.build_reward_functions``, so a grader
    scores here exactly as it rewards in training."""
    from backend.graders import build_reward_functions

    entries = [dict(e) for e in graders or []]
    if reward_model and not any(e.get("grader") == "reward_model" for e in entries):
        entries.append({"grader": "reward_model", "weight": 1.0})
    if not entries:
        raise BestOfNError("Nothing to score the answers with: give a reward model run or at least one grader.")
    funcs, weights, names = build_reward_functions(
        entries, reward_file_allowed=allow_reward_code, run_dir=run_dir, reward_file=reward_file,
        reward_model=reward_model, model_permissions=model_permissions)
    label = f"reward model {_short(reward_model)}" if names == ["reward_model"] else " + ".join(names)
    return RewardFunctionScorer(list(funcs), list(weights), list(names), label=label)


def _short(path: str) -> str:
    parts = str(path).rstrip("/\\").replace("\\", "/").split("/")
    return "/".join(parts[-2:]) if len(parts) > 1 else parts[0]


# ------------------------------------------------------------------ sampling


@dataclass
class Timings:
    generation_calls: int = 0
    generation_seconds: float = 0.0
    scoring_seconds: float = 0.0
    single_seconds: float = 0.0


def check_request(n: int, side: str, baseline: str, greedy: bool) -> None:
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_N:
        raise BestOfNError(f"N must be a whole number from 1 to {MAX_N}; got {n!r}.")
    if side not in ("base", "aligned"):
        raise BestOfNError(f"Best-of-N samples from one model: side must be base or aligned; got {side!r}.")
    if baseline not in BASELINES:
        raise BestOfNError(f"The single answer to compare with must be one of {', '.join(BASELINES)}; "
                           f"got {baseline!r}.")
    if greedy and n > 1:
        raise BestOfNError("Greedy decoding gives the same answer N times: turn Greedy off (sampling with a "
                           "temperature) for best-of-N.")


def _columns(rows: list[dict[str, Any]], repeat: int) -> dict[str, list[Any]]:
    """Every column but the prompt, repeated per sample, as TRL passes dataset columns to reward functions."""
    keys = sorted({k for row in rows for k in row if k != "prompt"})
    return {k: [row.get(k) for row in rows for _ in range(repeat)] for k in keys}


def sample_and_rank(engine, items: list[tuple[dict[str, Any], Any]], n: int, scorer: AnswerScorer, *,
                    side: str, sampling, cancel: threading.Event | None = None, baseline: str = "first",
                    first_index: int = 0, timings: Timings | None = None) -> list[BestOfNResult]:
    """N answers to each (row, prompt) in ONE batched ``engine.generate`` call, scored
    together and ranked. ``sampling`` is a SamplingSettings; sample ``j`` of prompt ``i``
    uses ``seed + i * n + j``, so a rerun with the seed repeats it."""
    from backend.data.prompt_rendering import display_text

    check_request(n, side, baseline, sampling.greedy)
    cancel = cancel or threading.Event()
    timings = timings if timings is not None else Timings()
    seed = sampling.seed if sampling.seed is not None else random.randrange(2**31)
    prompts = [prompt for _row, prompt in items]
    rows = [row for row, _prompt in items]
    batch = [p for p in prompts for _ in range(n)]
    started = time.perf_counter()
    # Every row its own seed: the same seed for sample j of every prompt would draw the same
    # random numbers for each, and their answers would vary together.
    seeds = [seed + (first_index + i) * n + j for i in range(len(prompts)) for j in range(n)]
    answers = engine.generate(batch, side, sampling, cancel, seeds=seeds)
    timings.generation_calls += 1
    timings.generation_seconds += time.perf_counter() - started
    if cancel.is_set():
        return []
    answers = [a[side] for a in answers]
    singles = None
    if baseline == "greedy":
        started = time.perf_counter()
        greedy = dataclasses.replace(sampling, greedy=True)
        singles = [a[side] for a in engine.generate(prompts, side, greedy, cancel)]
        timings.generation_calls += 1
        timings.single_seconds += time.perf_counter() - started
        timings.generation_seconds += time.perf_counter() - started
        if cancel.is_set():
            return []
    scored = answers + (singles or [])
    score_prompts = batch + (prompts if singles else [])
    columns = _columns(rows, n)
    if singles:
        for key, values in _columns(rows, 1).items():
            columns[key] = columns[key] + values
    started = time.perf_counter()
    totals, parts = scorer.score(score_prompts, [a.text for a in scored], [list(a.content_ids) for a in scored],
                                 columns)
    timings.scoring_seconds += time.perf_counter() - started

    def ranked_answer(k: int, sample: int) -> RankedAnswer:
        a = scored[k]
        return RankedAnswer(sample=sample, text=a.text, reward=float(totals[k]),
                            scores={name: values[k] for name, values in parts.items()}, n_tokens=a.n_tokens,
                            finish_reason=a.finish_reason, seed=a.seed)

    results = []
    for i, prompt in enumerate(prompts):
        own = [ranked_answer(i * n + j, j) for j in range(n)]
        single = ranked_answer(len(answers) + i, 0) if singles else dataclasses.replace(own[0])
        results.append(BestOfNResult(index=first_index + i, prompt=display_text(prompt), n=n, side=side,
                                     answers=rank_answers(own), single=single, baseline=baseline,
                                     prompt_source=prompt))
    return results


def prompts_per_call(n: int) -> int:
    """How many prompts share one batched call; a prompt's N samples are never split."""
    return max(1, MAX_ROWS_PER_CALL // max(1, n))


def run_batch(engine, items: list[tuple[dict[str, Any], Any]], n: int, scorer: AnswerScorer, *, side: str,
              sampling, cancel: threading.Event | None = None, baseline: str = "first",
              on_result: Callable[[BestOfNResult], None] | None = None,
              model_label: str = "") -> tuple[list[BestOfNResult], BestOfNReport]:
    """Best-of-N over many prompts, a chunk of prompts per batched call; the report at the end."""
    if sampling.seed is None:
        sampling = dataclasses.replace(sampling, seed=random.randrange(2**31))
    cancel = cancel or threading.Event()
    timings = Timings()
    results: list[BestOfNResult] = []
    step = prompts_per_call(n)
    for start in range(0, len(items), step):
        if cancel.is_set():
            break
        part = sample_and_rank(engine, items[start:start + step], n, scorer, side=side, sampling=sampling,
                               cancel=cancel, baseline=baseline, first_index=start, timings=timings)
        for result in part:
            results.append(result)
            if on_result is not None:
                on_result(result)
    report = summarize(results, n=n, side=side, baseline=baseline, scorer=scorer.label,
                       generation_calls=timings.generation_calls, generation_seconds=timings.generation_seconds,
                       scoring_seconds=timings.scoring_seconds,
                       single_seconds=timings.single_seconds if baseline == "greedy" else None,
                       seed=sampling.seed, cancelled=cancel.is_set(), model_label=model_label)
    return results, report


# --------------------------------------------------------- the request, served


_scorer_cache: dict[str, Any] = {}


def cached_scorer(**kwargs) -> RewardFunctionScorer:
    """One scorer kept loaded in the worker: a reward model loads once, not per request."""
    key = json.dumps(kwargs, sort_keys=True, default=str)
    if _scorer_cache.get("key") != key:
        old = _scorer_cache.pop("scorer", None)
        _scorer_cache.pop("key", None)
        if old is not None:
            old.close()
        _scorer_cache["scorer"] = build_scorer(**kwargs)
        _scorer_cache["key"] = key
    return _scorer_cache["scorer"]


def request_items(request, run_dir: str) -> list[tuple[dict[str, Any], Any]]:
    """(row, prompt) pairs of a best-of-N request: its prompt, its prompts, its rows, or
    the loaded run's held-out prompts."""
    from backend.data.prompt_rendering import read_heldout_rows, row_prompt

    if request.prompt not in (None, "", []):
        rows = [{"prompt": request.prompt}]
    elif request.rows is not None:
        rows = list(request.rows)
    elif request.prompts is not None:
        rows = [{"prompt": p} for p in request.prompts]
    else:
        if not run_dir:
            raise BestOfNError("No prompts given and no run loaded: pass a prompt or prompts, or load a run.")
        rows = read_heldout_rows(run_dir)
        if not rows:
            raise BestOfNError("This run held out no rows (its held-out fraction was 0): pass prompts instead.")
    items = [(row, row_prompt(row)) for row in rows if isinstance(row, dict)]
    items = [(row, prompt) for row, prompt in items if prompt is not None]
    if request.limit and request.limit > 0:
        items = items[:request.limit]
    if not items:
        raise BestOfNError("None of the rows has a prompt.")
    return items


def serve_request(service, request, cancel: threading.Event) -> None:
    """The generation worker's best_of_n request: one ``best_of_n_row`` event per
    prompt as its chunk finishes, then ``best_of_n_report``."""
    from backend.generation.protocol import BestOfNReportReady, BestOfNRowReady, SamplingSettings, WorkerStatus

    engine = service._require_engine()
    spec = service.loaded.spec
    sampling = SamplingSettings.from_dict(request.sampling)
    check_request(request.n, request.side, request.baseline, sampling.greedy)
    if request.side == "aligned" and not engine.has_adapter:
        raise BestOfNError("Only the base model is loaded: sample from the base side, or load a run.")
    items = request_items(request, spec.run_dir)
    service.emit(WorkerStatus(request_id=request.id, phase="scoring", message="Loading the scorer"))
    scorer = cached_scorer(reward_model=request.reward_model, graders=request.graders,
                           reward_file=request.reward_file, allow_reward_code=request.allow_reward_code)
    service.emit(WorkerStatus(request_id=request.id, phase="generating",
                              message=f"Sampling {request.n} answers to each of {len(items)} prompts"))
    _results, report = run_batch(
        engine, items, request.n, scorer, side=request.side, sampling=sampling, cancel=cancel,
        baseline=request.baseline, model_label=service.loaded.model_label,
        on_result=lambda r: service.emit(BestOfNRowReady(request_id=request.id, result=r, total=len(items))))
    service.emit(BestOfNReportReady(request_id=request.id, report=report, headline=report.headline()))
