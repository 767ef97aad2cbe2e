"""Reward evaluation, RewardBench-style: how often a reward ranks the chosen answer of a pair
above the rejected one, overall and per subset, and how much of the reward is answer length.

The reward is a reward model run's score (``backend.rewards.scoring``) or, for a run whose
method has an implicit reward (its spec says ``implicit_reward``), ``beta * (log p aligned −
log p base)`` computed by the generation engine as Compare computes it.

Three layers, so each can be used and tested alone:
- reading a preference file with its ``subset`` (or ``category``) column, and the arithmetic
  of the report: torch-free, the window imports them;
- ``evaluate``: loads the model and scores the pairs (torch, in whatever process calls it:
  the CLI, or the worker below);
- the worker, ``python -m backend.rewards.evaluation '<request as JSON>'``, and
  ``RewardEvaluationRun`` that starts and follows it: the window never loads a model itself.
  Its stdout carries only events (JSON lines); a line "stop" on stdin (or stdin closing)
  stops it between batches.

Ties count as wrong, as in RewardBench: a reward that cannot tell the answers apart has not
ranked them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator

from backend.data.formats import DatasetError, DroppedRow, RowProblem, _norm_name, detect_format, normalise_row
from backend.core.events import Event, event_of_types
from backend.training.client import TrainingRun, log_tail, spawn_worker

SUBSET_COLUMNS = ("subset", "category")
SAMPLE_ROWS = 50  # rows whose values decide the format, as the loader does
# When the longer answer wins at least this share of the pairs (or the shorter one does), or
# |Pearson r| reaches LENGTH_R, the report says the reward mostly follows length.
LENGTH_SHARE = 0.75
LENGTH_R = 0.5
REWARD_EVAL_LOG = "reward_eval.log"


class RewardEvalError(ValueError):
    """The evaluation cannot run; the message names the run or file and what to do."""


# ------------------------------------------------------------------- data
@dataclass
class EvalPair:
    position: int  # line (JSON Lines, CSV) or row number, 1-based
    prompt: Any  # a string or a message list, as TRL takes it
    chosen: Any
    rejected: Any
    subset: str = ""


@dataclass
class PairFile:
    path: str
    pairs: list[EvalPair]
    dropped: list[DroppedRow]
    subset_column: str  # "" when the file has none
    format_label: str


def read_preference_pairs(path: str | Path, limit: int = 0) -> PairFile:
    """The pairs of a preference file (every shape the loader recognises), each with its
    subset. Unlike training data, duplicates stay: a benchmark counts every pair it holds."""
    from backend.data.readers import open_rows

    path = Path(path).expanduser()
    if not path.exists():
        raise RewardEvalError(f"The preference file {path} does not exist.")
    with open_rows(path) as source:
        rows: list[tuple[int, dict]] = []
        dropped: list[DroppedRow] = []
        for item in source.items:
            if isinstance(item, DroppedRow):
                dropped.append(item)
                continue
            position, row = item
            if isinstance(row, dict):
                rows.append((position, row))
            else:
                dropped.append(DroppedRow(position, None, "the row is not an object with named fields", "other"))
    if not rows:
        raise RewardEvalError(f"{path.name}: no usable rows.")
    columns = list(dict.fromkeys(k for _pos, row in rows[:1000] for k in row))
    detection = detect_format(columns, [row for _pos, row in rows[:SAMPLE_ROWS]], path=path)
    if not detection.format.is_paired_preference:
        raise RewardEvalError(
            f"{path.name} holds {detection.format.label}, not preference pairs: reward evaluation needs a prompt "
            "with a chosen and a rejected answer on each row (RewardBench's columns: prompt, chosen, rejected, "
            "subset).")
    by_name = {_norm_name(c): c for c in columns}
    subset_column = next((by_name[n] for n in SUBSET_COLUMNS if n in by_name), "")
    pairs = []
    for position, row in rows:
        try:
            out = normalise_row(detection, row)
        except RowProblem as problem:
            dropped.append(DroppedRow(position, problem.field, problem.reason, problem.code))
            continue
        subset = row.get(subset_column) if subset_column else ""
        pairs.append(EvalPair(position, out["prompt"], out["chosen"], out["rejected"],
                              "" if subset is None else str(subset).strip()))
        if limit and len(pairs) >= limit:
            break
    if not pairs:
        first = dropped[0] if dropped else None
        why = f" (line {first.line}: {first.reason})" if first else ""
        raise RewardEvalError(f"{path.name}: none of its rows is a usable pair{why}.")
    return PairFile(str(path), pairs, dropped, subset_column, detection.format.label)


def answer_text(answer: Any) -> str:
    """The words of an answer: the string, or the content of its messages."""
    if isinstance(answer, list):
        return "".join(str(m.get("content", "")) if isinstance(m, dict) else str(m) for m in answer)
    return "" if answer is None else str(answer)


# ------------------------------------------------------------- arithmetic
@dataclass
class PairScore:
    position: int
    subset: str
    chosen: float
    rejected: float
    chosen_length: int  # characters of the answer
    rejected_length: int

    @property
    def correct(self) -> bool:
        return self.chosen > self.rejected


@dataclass
class SubsetResult:
    name: str
    pairs: int
    correct: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.pairs if self.pairs else math.nan


@dataclass
class RewardEvalReport:
    source: str  # the run (or model) that gave the rewards
    reward_kind: str  # "reward model" | "implicit reward"
    data: str
    pairs: int
    correct: int
    subsets: list[SubsetResult] = field(default_factory=list)
    length_r: float | None = None  # Pearson r of reward vs answer length over every scored answer
    longer_wins: float | None = None  # share of pairs of unequal length where the longer answer scores higher
    unequal_pairs: int = 0
    accuracy_chosen_longer: float | None = None  # accuracy on pairs whose chosen answer is the longer one
    accuracy_chosen_shorter: float | None = None
    length_note: str = ""
    length_verdict: str = ""  # follows_length | follows_brevity | little | no_difference
    dropped: int = 0
    seconds: float = 0.0
    mean_chosen: float | None = None
    mean_rejected: float | None = None

    @property
    def accuracy(self) -> float:
        return self.correct / self.pairs if self.pairs else math.nan

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["accuracy"] = self.accuracy
        for subset, raw in zip(self.subsets, data["subsets"]):
            raw["accuracy"] = subset.accuracy
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RewardEvalReport":
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        values["subsets"] = [SubsetResult(s["name"], int(s["pairs"]), int(s["correct"]))
                             for s in data.get("subsets", [])]
        return cls(**values)


def pearson(xs: list[float], ys: list[float]) -> float | None:
    """Pearson's r; None with fewer than three points or when either side is constant."""
    n = len(xs)
    if n < 3 or n != len(ys):
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    if sxx <= 0 or syy <= 0:
        return None
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / math.sqrt(sxx * syy)


def _share(flags: list[bool]) -> float | None:
    return sum(flags) / len(flags) if flags else None


def summarize(scores: list[PairScore], *, source: str = "", reward_kind: str = "", data: str = "",
              dropped: int = 0, seconds: float = 0.0) -> RewardEvalReport:
    by_subset: dict[str, list[PairScore]] = {}
    for s in scores:
        by_subset.setdefault(s.subset, []).append(s)
    subsets = [] if set(by_subset) <= {""} else [
        SubsetResult(name or "(none)", len(items), sum(s.correct for s in items))
        for name, items in sorted(by_subset.items())]
    rewards = [v for s in scores for v in (s.chosen, s.rejected)]
    lengths = [float(v) for s in scores for v in (s.chosen_length, s.rejected_length)]
    unequal = [s for s in scores if s.chosen_length != s.rejected_length]
    longer_wins = _share([(s.chosen > s.rejected) if s.chosen_length > s.rejected_length else
                          (s.rejected > s.chosen) for s in unequal])
    report = RewardEvalReport(
        source=source, reward_kind=reward_kind, data=data, pairs=len(scores), correct=sum(s.correct for s in scores),
        subsets=subsets, length_r=pearson(lengths, rewards), longer_wins=longer_wins, unequal_pairs=len(unequal),
        accuracy_chosen_longer=_share([s.correct for s in unequal if s.chosen_length > s.rejected_length]),
        accuracy_chosen_shorter=_share([s.correct for s in unequal if s.chosen_length < s.rejected_length]),
        dropped=dropped, seconds=seconds,
        mean_chosen=sum(s.chosen for s in scores) / len(scores) if scores else None,
        mean_rejected=sum(s.rejected for s in scores) / len(scores) if scores else None,
    )
    report.length_verdict = length_verdict(report)
    report.length_note = length_note(report)
    return report


def _pct(value: float | None) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.0f}%"


def length_verdict(report: RewardEvalReport) -> str:
    r, wins = report.length_r, report.longer_wins
    if wins is None and r is None:
        return "no_difference"
    if (wins is not None and wins >= LENGTH_SHARE) or (r is not None and r >= LENGTH_R):
        return "follows_length"
    if (wins is not None and wins <= 1 - LENGTH_SHARE) or (r is not None and r <= -LENGTH_R):
        return "follows_brevity"
    return "little"


def length_note(report: RewardEvalReport) -> str:
    """One plain sentence or two on how much of the reward is answer length."""
    r, wins = report.length_r, report.longer_wins
    verdict = length_verdict(report)
    if verdict == "no_difference":
        return "Every pair has answers of the same length, so length cannot explain these rewards."
    r_text = f"r = {r:+.2f}" if r is not None else "r not defined"
    split = (f" Accuracy is {_pct(report.accuracy_chosen_longer)} where the chosen answer is the longer one and "
             f"{_pct(report.accuracy_chosen_shorter)} where it is the shorter one.")
    if verdict == "follows_length":
        return (f"The reward mostly follows length: the longer answer scores higher in {_pct(wins)} of the "
                f"{report.unequal_pairs} pairs of unequal length, and reward rises with length ({r_text})."
                + split + " A reward like this pushes a policy towards longer answers rather than better ones.")
    if verdict == "follows_brevity":
        return (f"The reward mostly follows brevity: the shorter answer scores higher in {_pct(1 - wins if wins is not None else None)} "
                f"of the {report.unequal_pairs} pairs of unequal length ({r_text})." + split)
    return (f"Length explains little of this reward: the longer answer scores higher in {_pct(wins)} of the "
            f"{report.unequal_pairs} pairs of unequal length ({r_text}).")


def report_lines(report: RewardEvalReport) -> list[str]:
    """The report as the CLI prints it."""
    lines = [f"Reward evaluation of {report.source} ({report.reward_kind}) on {Path(report.data).name}: "
             f"{report.pairs} pairs" + (f", {report.dropped} rows skipped" if report.dropped else "") + ".",
             f"Accuracy: {100 * report.accuracy:.1f}% ({report.correct}/{report.pairs}) chosen scored above "
             "rejected."]
    if report.mean_chosen is not None:
        lines.append(f"Mean reward: chosen {report.mean_chosen:+.3f}, rejected {report.mean_rejected:+.3f}.")
    if report.subsets:
        width = max(len("subset"), *(len(s.name) for s in report.subsets))
        lines.append(f"  {'subset'.ljust(width)}  pairs  accuracy")
        for s in report.subsets:
            lines.append(f"  {s.name.ljust(width)}  {s.pairs:5d}  {100 * s.accuracy:7.1f}%")
    r = "n/a" if report.length_r is None else f"{report.length_r:+.3f}"
    lines.append(f"Reward vs answer length (characters): Pearson r = {r} over {2 * report.pairs} answers; the "
                 f"longer answer wins {_pct(report.longer_wins)} of {report.unequal_pairs} pairs of unequal length.")
    lines.append(report.length_note)
    return lines


# ---------------------------------------------------------------- scoring
@dataclass(frozen=True)
class RewardSource:
    kind: str  # "reward_model" | "implicit"
    label: str
    path: str

    @property
    def reward_kind(self) -> str:
        return "reward model" if self.kind == "reward_model" else "implicit reward"


def reward_source(run: str | Path) -> RewardSource:
    """What gives the rewards of ``run`` (files only): its score head, or its method's implicit reward."""
    from backend.rewards.scoring import RewardModelError, is_reward_model, locate_reward_model

    text = str(run or "").strip()
    if not text:
        raise RewardEvalError("Pick a run: a reward model run, or a run of a method with an implicit reward.")
    path = Path(text).expanduser()
    if not path.is_dir():
        raise RewardEvalError(f"The run {text} does not exist (or is not a folder). Pick a run folder: a reward "
                              "model run, or a run of a method with an implicit reward.")
    if is_reward_model(path):
        return RewardSource("reward_model", locate_reward_model(path).label, str(path.resolve()))
    from backend.methods import find_method
    from backend.runs.config import ConfigError, load_yaml
    from backend.runs.folder import ADAPTER_DIR, CONFIG_FILE

    if not (path / CONFIG_FILE).is_file():
        try:
            locate_reward_model(path)
        except RewardModelError as exc:
            raise RewardEvalError(str(exc)) from None
    try:
        method = load_yaml(path / CONFIG_FILE).method
    except ConfigError as exc:
        raise RewardEvalError(f"The run {path.name} cannot be read: {exc}") from None
    spec = find_method(method)
    if spec is None or not spec.implicit_reward:
        name = spec.label if spec is not None else (method or "an unknown method")
        raise RewardEvalError(
            f"The run {path.name} trained {name}, which has neither a score head nor an implicit reward, so it "
            "gives no reward to evaluate. Pick a reward model run or a run of a method with an implicit reward.")
    if not (path / ADAPTER_DIR / "adapter_config.json").is_file():
        raise RewardEvalError(f"The run {path.name} has no saved adapter yet. Wait for it to finish.")
    return RewardSource("implicit", path.name, str(path.resolve()))


class StopRequested(Exception):
    pass


def evaluate(run: str, data: str, *, limit: int = 0, batch_size: int = 8,
             on_progress: Callable[[int, int, str], None] | None = None,
             should_stop: Callable[[], bool] = lambda: False, log: Callable[[str], None] = print) -> RewardEvalReport:
    """Score every pair of ``data`` with ``run``'s reward and summarise. Loads the model here."""
    started = time.time()
    source = reward_source(run)
    pair_file = read_preference_pairs(data, limit=limit)
    progress = on_progress or (lambda done, total, message: None)
    pairs = pair_file.pairs
    progress(0, len(pairs), f"Loading {source.label}")
    if source.kind == "reward_model":
        rewards = _reward_model_rewards(source, pairs, batch_size, progress, should_stop, log)
    else:
        rewards = _implicit_rewards(source, pairs, progress, should_stop, log)
    scores = [PairScore(p.position, p.subset, c, r, len(answer_text(p.chosen)), len(answer_text(p.rejected)))
              for p, (c, r) in zip(pairs, rewards)]
    return summarize(scores, source=source.label, reward_kind=source.reward_kind, data=pair_file.path,
                     dropped=len(pair_file.dropped), seconds=time.time() - started)


def _reward_model_rewards(source, pairs, batch_size, progress, should_stop, log) -> list[tuple[float, float]]:
    from backend.runs.code_permissions import launch_model_permissions
    from backend.rewards.scoring import load_reward_scorer, locate_reward_model

    # Never from the run folder: what this process was granted for the base model, checked again now.
    granted = launch_model_permissions(locate_reward_model(source.path).base_model or "")
    scorer = load_reward_scorer(source.path, trust_remote_code=granted["trust_remote_code"],
                                allow_pickle_weights=granted["allow_pickle_weights"], log=log)
    rewards: list[tuple[float, float]] = []
    try:
        step = max(1, batch_size)
        for start in range(0, len(pairs), step):
            if should_stop():
                raise StopRequested()
            chunk = pairs[start:start + step]
            prompts = [p.prompt for p in chunk]
            values = scorer.score(prompts + prompts, [p.chosen for p in chunk] + [p.rejected for p in chunk],
                                  batch_size=2 * step)
            rewards.extend(zip(values[:len(chunk)], values[len(chunk):]))
            progress(len(rewards), len(pairs), f"Scored {len(rewards)} of {len(pairs)} pairs")
    finally:
        scorer.close()
    return rewards


def _implicit_rewards(source, pairs, progress, should_stop, log) -> list[tuple[float, float]]:
    from backend.models.adapter_loading import load_model, resolve_load_spec
    from backend.generation.engine import GenerationEngine

    loaded = load_model(resolve_load_spec(run_dir=source.path), log=log)
    engine = GenerationEngine(loaded)
    rewards: list[tuple[float, float]] = []
    for i, pair in enumerate(pairs):
        if should_stop():
            raise StopRequested()
        chosen, rejected = engine.score_texts(pair.prompt, [pair.chosen, pair.rejected], labels=["chosen", "rejected"])
        rewards.append((chosen.implicit_reward, rejected.implicit_reward))
        if (i + 1) % 4 == 0 or i + 1 == len(pairs):
            progress(i + 1, len(pairs), f"Scored {i + 1} of {len(pairs)} pairs")
    return rewards


# ----------------------------------------------------------------- worker
@dataclass
class EvalProgress(Event):
    type: ClassVar[str] = "reward_eval_progress"
    done: int
    total: int
    message: str


@dataclass
class EvalFinished(Event):
    type: ClassVar[str] = "reward_eval_finished"
    report: dict


@dataclass
class EvalFailed(Event):
    type: ClassVar[str] = "reward_eval_failed"
    kind: str  # stopped | bad_request | error | crash | killed
    message: str
    traceback: str = ""


EVAL_EVENT_TYPES = {cls.type: cls for cls in (EvalProgress, EvalFinished, EvalFailed)}


def eval_event_from_json(line: str) -> Event:
    return event_of_types(line, EVAL_EVENT_TYPES, "reward evaluation event")


def worker_main(argv: list[str]) -> int:
    out = sys.stdout
    sys.stdout = sys.stderr  # libraries print; only events may reach the parent's pipe
    lock = threading.Lock()

    def emit(event: Event) -> None:
        with lock:
            out.write(event.to_json() + "\n")
            out.flush()

    stop = threading.Event()

    def watch_stdin() -> None:
        for line in sys.stdin:
            if line.strip() == "stop":
                break
        # A stop request, or the parent is gone. The evaluation writes nothing until its report,
        # so ending at once (even mid-way through loading the model) loses nothing.
        stop.set()
        with lock:
            try:
                out.write(EvalFailed(kind="stopped", message="The evaluation was stopped; no figures were kept.")
                          .to_json() + "\n")
                out.flush()
            except (BrokenPipeError, OSError, ValueError):
                pass
            os._exit(0)

    threading.Thread(target=watch_stdin, name="stop-watch", daemon=True).start()
    try:
        request = json.loads(argv[0])
        report = evaluate(request["run"], request["data"], limit=int(request.get("limit") or 0),
                          batch_size=int(request.get("batch_size") or 8),
                          on_progress=lambda d, t, m: emit(EvalProgress(done=d, total=t, message=m)),
                          should_stop=stop.is_set, log=lambda m: print(m, file=sys.stderr, flush=True))
    except StopRequested:
        emit(EvalFailed(kind="stopped", message="The evaluation was stopped; no figures were kept."))
        return 0
    except Exception as exc:  # noqa: BLE001 - every failure must become an event
        from backend.models.adapter_loading import AdapterLoadError
        from backend.models.source import ModelSourceError
        from backend.rewards.scoring import RewardModelError

        # Problems with the request say what to fix in their own words; anything else is a crash.
        known = isinstance(exc, (RewardEvalError, DatasetError, RewardModelError, ModelSourceError, AdapterLoadError))
        emit(EvalFailed(kind="bad_request" if known else "error",
                        message=str(exc) if known else f"{type(exc).__name__}: {exc}",
                        traceback=traceback.format_exc()))
        return 1
    emit(EvalFinished(report=report.to_dict()))
    return 0


class RewardEvaluationRun(TrainingRun):
    """A reward evaluation worker; stopping, killing and closing work as for a training worker."""

    def __init__(self, process: subprocess.Popen, log_path: Path):
        super().__init__(log_path.parent, process)
        self.log_path = log_path

    @classmethod
    def start(cls, run: str, data: str, *, limit: int = 0, batch_size: int = 8,  # type: ignore[override]
              log_dir: str | Path | None = None) -> "RewardEvaluationRun":
        """Check the run and the file (raises RewardEvalError at once) and launch the worker."""
        reward_source(run)
        if not Path(data).expanduser().exists():
            raise RewardEvalError(f"The preference file {data} does not exist.")
        from backend.runs.code_permissions import launch_environment, stored_launch_subjects

        # The base model loads with the grants the user confirmed in the window, never the run folder's say.
        env = launch_environment(os.environ, stored_launch_subjects())
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        folder = Path(log_dir) if log_dir else Path(run).expanduser()
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            import tempfile

            folder = Path(tempfile.gettempdir())
        log_path = folder / REWARD_EVAL_LOG
        request = {"run": str(Path(run).expanduser()), "data": str(Path(data).expanduser()), "limit": limit,
                   "batch_size": batch_size}
        process = spawn_worker([sys.executable, "-m", "backend.rewards.evaluation", json.dumps(request)], env,
                               log_path)
        return cls(process, log_path)

    def events(self) -> Iterator[Event]:
        """Yield events until the evaluation ends; a worker that dies silently yields an EvalFailed."""
        yield from self.events_until_end(eval_event_from_json, (EvalFinished, EvalFailed), self._silent_death)

    def _silent_death(self, code: int) -> EvalFailed:
        message = ("The evaluation was stopped by force." if self.killed else
                   f"The reward evaluation worker ended unexpectedly (exit code {code}).")
        return EvalFailed(kind="killed" if self.killed else "crash", message=message, traceback=log_tail(self.log_path))


if __name__ == "__main__":
    code = worker_main(sys.argv[1:])
    sys.stdout.flush()
    os._exit(code)
