"""Try the graders before training: ``python -m backend.graders.trial CONFIG.yaml [options]``.

The base model writes a few completions for a few prompts of the run's data, and
every grader of the config scores each of them, so a grader that fails, abstains
on everything or gives every completion the same score shows up before a long
run. Its stdout carries only JSON events (one per line); what libraries print
goes to stderr. The user's reward file runs here, and only when this launch was
granted that file (``ALIGNSTUDIO_GRANTS``; the config's own flag never counts).
Torch is imported only after the cheap checks.
"""

from __future__ import annotations

import argparse
import math
import os
import stat
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

from backend.core.events import Event, event_of_types
from backend.core.paths import PROJECT_ROOT

DEFAULT_PROMPTS = 4
DEFAULT_COMPLETIONS = 4
MAX_NEW_TOKENS_CAP = 256  # a trial is a glance, not a run
SAME_TOLERANCE = 1e-9


# ------------------------------------------------------------------ events
@dataclass
class TrialPhase(Event):
    type: ClassVar[str] = "trial_phase"
    phase: str  # loading_data | loading_model | generating | scoring
    message: str = ""


@dataclass
class TrialResult(Event):
    """Every completion with each grader's score. ``graders``: one dict per grader with
    ``name``, ``label``, ``weight``, ``error`` (it could not be built or failed on every
    completion), ``finding`` (what looks wrong: "", "error", "constant", "abstains",
    "some_errors") and ``text`` (the sentence saying so). ``rows``: prompt index,
    prompt, completion, finish reason, ``scores`` {name: float or None}, ``errors``
    {name: message} and the weighted ``reward``."""

    type: ClassVar[str] = "trial_result"
    graders: list[dict[str, Any]]
    rows: list[dict[str, Any]]
    seconds: float = 0.0
    model: str = ""


@dataclass
class TrialFailed(Event):
    type: ClassVar[str] = "trial_failed"
    kind: str  # bad_config | bad_data | bad_model | crash
    message: str
    hint: str = ""


TRIAL_EVENTS = {cls.type: cls for cls in (TrialPhase, TrialResult, TrialFailed)}


def trial_event_from_json(line: str) -> Event:
    return event_of_types(line, TRIAL_EVENTS, "trial event")


def trial_launch(cfg, work_dir: str | os.PathLike, prompts: int = DEFAULT_PROMPTS,
                 completions: int | None = None) -> tuple[list[str], dict[str, str]]:
    """(command, environment) that try ``cfg``'s graders: the config is written into
    ``work_dir``, and the permissions ``cfg`` carries (set by the user in this process)
    travel in the launch's environment, the only way a worker learns them."""
    from pathlib import Path

    from backend.runs.code_permissions import config_launch_subjects, launch_environment
    from backend.runs.config import save_yaml

    path = save_yaml(cfg, Path(work_dir) / "grader_trial.yaml")
    per_prompt = completions or max(2, min(DEFAULT_COMPLETIONS, int(getattr(cfg, "num_generations", 4) or 4)))
    command = [sys.executable, "-m", "backend.graders.trial", str(path), "--prompts", str(prompts),
               "--completions", str(per_prompt), "--seed", str(int(getattr(cfg, "seed", 0) or 0))]
    env = launch_environment(os.environ, config_launch_subjects(cfg))
    root = str(PROJECT_ROOT)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return command, env


# ------------------------------------------------------------------ scoring
@dataclass
class Grader:
    name: str
    label: str
    weight: float
    func: Callable | None = None
    error: str = ""


@dataclass
class Scored:
    scores: dict[str, list[float | None]] = field(default_factory=dict)
    errors: dict[str, list[str]] = field(default_factory=dict)


def _value(v: Any) -> float | None:
    if v is None:
        return None
    try:
        number = float(v)
    except (TypeError, ValueError):
        return math.nan
    return number


def score_all(graders: list[Grader], prompts: list, completions: list, completion_ids: list,
              columns: dict[str, list]) -> Scored:
    """Each grader on every completion: in one call, and when that fails, one completion
    at a time, so a grader that fails on some samples still scores the others."""
    out = Scored()
    extras = {"trainer_state": None, "log_extra": lambda *a, **k: None, "log_metric": lambda *a, **k: None}
    n = len(completions)
    for g in graders:
        scores: list[float | None] = [None] * n
        errors = [""] * n
        if g.func is None:
            errors = [g.error] * n
        else:
            try:
                result = g.func(prompts=prompts, completions=completions, completion_ids=completion_ids,
                                **columns, **extras)
                scores = [_value(v) for v in result]
            except Exception as exc:  # noqa: BLE001 - the guard words it; a trial reports instead of ending
                for i in range(n):
                    try:
                        one = g.func(prompts=prompts[i:i + 1], completions=completions[i:i + 1],
                                     completion_ids=completion_ids[i:i + 1],
                                     **{k: v[i:i + 1] for k, v in columns.items()}, **extras)
                        scores[i] = _value(list(one)[0])
                    except Exception as one_exc:  # noqa: BLE001
                        errors[i] = str(one_exc)
                if not any(errors):  # failed together, fine alone (a wrong length for the batch...)
                    errors = [str(exc)] * n
                    scores = [None] * n
        out.scores[g.name] = scores
        out.errors[g.name] = errors
    return out


def findings(graders: list[Grader], scored: Scored) -> list[dict[str, Any]]:
    """What looks wrong with each grader on these completions."""
    found = []
    for g in graders:
        scores, errors = scored.scores[g.name], scored.errors[g.name]
        failed = [e for e in errors if e]
        values = [s for s, e in zip(scores, errors) if not e and s is not None]
        finding, text = "", ""
        if g.error or (failed and len(failed) == len(errors)):
            finding, text = "error", g.error or failed[0]
        elif failed:
            finding = "some_errors"
            text = f"failed on {len(failed)} of {len(errors)} completions: {failed[0]}"
        elif not values:
            finding, text = "abstains", "returned None for every completion: it scores nothing here."
        elif len(values) > 1 and max(values) - min(values) <= SAME_TOLERANCE:
            finding = "constant"
            text = (f"gave every completion {values[0]:.3g}: it cannot tell these completions apart, so it "
                    "adds no learning signal.")
        found.append({"name": g.name, "label": g.label, "weight": g.weight, "error": g.error,
                      "finding": finding, "text": text})
    return found


def weighted_rewards(graders: list[Grader], scored: Scored, n: int) -> list[float | None]:
    totals: list[float | None] = []
    for i in range(n):
        parts = [(g.weight, scored.scores[g.name][i]) for g in graders
                 if not scored.errors[g.name][i] and scored.scores[g.name][i] is not None]
        totals.append(sum(w * s for w, s in parts) if parts else None)
    return totals


# ------------------------------------------------------------------ worker
_stdout = sys.stdout


def emit(event: Event) -> None:
    _stdout.write(event.to_json() + "\n")
    _stdout.flush()


def _build_graders(cfg, reward_file_allowed: bool) -> list[Grader]:
    """One guarded function per entry; an entry that cannot be built is kept with its reason."""
    from backend.runs.code_permissions import launch_model_permissions
    from backend.graders import DEFAULT_GRADERS, FILE_PREFIX, build_reward_functions, builtin_graders

    labels = {s.key: s.label for s in builtin_graders()}
    entries = list(getattr(cfg, "graders", None) or DEFAULT_GRADERS)
    reward_model = getattr(cfg, "reward_model", "") or ""
    if reward_model and not any(isinstance(e, dict) and e.get("grader") == "reward_model" for e in entries):
        entries.append({"grader": "reward_model", "weight": 1.0})
    graders, taken = [], set()
    for entry in entries:
        key = str(entry.get("grader", "")) if isinstance(entry, dict) else str(entry)
        name = str(entry.get("name") or key.removeprefix(FILE_PREFIX)) if isinstance(entry, dict) else key
        while name in taken:
            name += "_2"
        taken.add(name)
        label = labels.get(key, key.removeprefix(FILE_PREFIX) + "()" if key.startswith(FILE_PREFIX) else key)
        weight = float(entry.get("weight", 1.0)) if isinstance(entry, dict) else 1.0
        try:
            funcs, _weights, _names = build_reward_functions(
                [entry], reward_file_allowed=reward_file_allowed, run_dir=None,
                reward_file=getattr(cfg, "reward_file", "") or "", reward_model=reward_model,
                model_permissions=launch_model_permissions(reward_model) if reward_model else None)
            graders.append(Grader(name, label, weight, func=funcs[0]))
        except Exception as exc:  # noqa: BLE001 - the grader's own words, shown in its column
            graders.append(Grader(name, label, weight, error=str(exc)))
    return graders


def _reward_file_allowed(cfg) -> bool:
    from backend.runs.code_permissions import file_subject, granted_in_launch

    path = getattr(cfg, "reward_file", "") or ""
    if not path:
        return False
    try:
        return granted_in_launch(file_subject(path))
    except (FileNotFoundError, OSError):
        return False


def _pick_rows(dataset, count: int) -> list[dict]:
    """``count`` rows spread over the data (its start is often one kind of example)."""
    n = len(dataset)
    if n == 0:
        return []
    step = max(1, n // max(1, count))
    return [dataset[i] for i in range(0, n, step)][:count]


def run_trial(cfg, prompts: int, completions: int, max_new_tokens: int, seed: int,
              cancel: threading.Event) -> TrialResult:
    from backend.data.loading import dataset_for_method
    from backend.data.run_data import load_run_data

    started = time.time()
    emit(TrialPhase(phase="loading_data", message=f"Reading {cfg.data_path}"))
    loaded = load_run_data(cfg)
    rows = _pick_rows(dataset_for_method(loaded, cfg.method), prompts)
    if not rows:
        raise ValueError("The dataset has no rows to try the graders on.")
    graders = _build_graders(cfg, _reward_file_allowed(cfg))

    from backend.models.adapter_loading import LoadSpec, load_model
    from backend.generation.engine import GenerationEngine
    from backend.generation.protocol import SamplingSettings
    from backend.models.inference_precision import apply_decode_precision

    spec = LoadSpec(model=cfg.model, adapter_dir="", run_dir="", method=cfg.method, beta=0.0,
                    quantization=cfg.quantization, trust_remote_code=cfg.trust_remote_code,
                    allow_pickle_weights=cfg.allow_pickle_weights, implicit_reward=False)
    loaded_model = load_model(spec, log=lambda m: print(m, file=sys.stderr, flush=True),
                              on_phase=lambda phase, message: emit(TrialPhase(phase="loading_model",
                                                                              message=message)))
    apply_decode_precision(loaded_model, None)
    engine = GenerationEngine(loaded_model)
    sampling = SamplingSettings(max_new_tokens=max_new_tokens, temperature=float(getattr(cfg, "temperature", 1.0)),
                                top_p=float(getattr(cfg, "top_p", 1.0)), seed=seed, stop_strings=[])
    emit(TrialPhase(phase="generating",
                    message=f"Writing {completions} completions for each of {len(rows)} prompts"))
    repeated = [row for row in rows for _ in range(completions)]
    answers = engine.generate([row["prompt"] for row in repeated], "base", sampling, cancel,
                              seeds=[seed + i for i in range(len(repeated))])
    if cancel.is_set():
        raise KeyboardInterrupt
    emit(TrialPhase(phase="scoring", message=f"Scoring {len(repeated)} completions with {len(graders)} graders"))
    texts = [a["base"].text for a in answers]
    completions_in = [[{"role": "assistant", "content": t}] if isinstance(r["prompt"], list) else t
                      for t, r in zip(texts, repeated)]
    columns = {k: [r.get(k) for r in repeated] for k in repeated[0] if k != "prompt"}
    scored = score_all(graders, [r["prompt"] for r in repeated], completions_in,
                       [a["base"].content_ids for a in answers], columns)
    totals = weighted_rewards(graders, scored, len(repeated))
    from backend.training.sample_capture import render_text

    out_rows = []
    for i, (row, answer) in enumerate(zip(repeated, answers)):
        out_rows.append({
            "prompt_index": i // completions, "prompt": render_text(row["prompt"]), "completion": texts[i],
            "finish_reason": answer["base"].finish_reason,
            "scores": {g.name: scored.scores[g.name][i] for g in graders},
            "errors": {g.name: scored.errors[g.name][i] for g in graders if scored.errors[g.name][i]},
            "reward": totals[i],
        })
    return TrialResult(graders=findings(graders, scored), rows=out_rows, seconds=time.time() - started,
                       model=loaded_model.model_label)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m backend.graders.trial")
    parser.add_argument("config", help="the run config (YAML) whose data, model and graders to try")
    parser.add_argument("--prompts", type=int, default=DEFAULT_PROMPTS)
    parser.add_argument("--completions", type=int, default=DEFAULT_COMPLETIONS)
    parser.add_argument("--max-new-tokens", type=int, default=0, help="0: the config's max completion length")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    # Libraries print notices to stdout; only events may go there.
    sys.stdout = sys.stderr
    cancel = threading.Event()

    def watch_stdin() -> None:
        for line in sys.stdin:
            if line.strip() == "stop":
                break
        cancel.set()  # "stop", or the parent that held the pipe is gone

    # Only a pipe from a parent carries stop requests (run from a shell, stdin is not one).
    if stat.S_ISFIFO(os.fstat(0).st_mode):
        threading.Thread(target=watch_stdin, name="stop-watch", daemon=True).start()
    from backend.runs.config import ConfigError, load_yaml

    try:
        cfg = load_yaml(args.config)
    except (ConfigError, OSError, ValueError) as exc:
        emit(TrialFailed(kind="bad_config", message=f"The settings could not be read: {exc}"))
        return 2
    from backend.runs.code_permissions import apply_launch_grants

    cfg = apply_launch_grants(cfg)  # the model's permissions come from this launch only
    limit = int(getattr(cfg, "max_completion_length", 64) or 64)
    max_new = min(args.max_new_tokens or limit, limit, MAX_NEW_TOKENS_CAP)
    try:
        result = run_trial(cfg, max(1, args.prompts), max(1, args.completions), max_new, args.seed, cancel)
    except KeyboardInterrupt:
        emit(TrialFailed(kind="stopped", message="The trial was stopped."))
        return 1
    except Exception as exc:  # noqa: BLE001 - every failure becomes a sentence for the dialog
        from backend.data.loading import DatasetError

        kind = "bad_data" if isinstance(exc, (DatasetError, ValueError)) else "bad_model"
        import traceback

        traceback.print_exc()
        emit(TrialFailed(kind=kind, message=str(exc) or type(exc).__name__,
                         hint="The worker log above says more." if kind == "bad_model" else ""))
        return 1
    emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
