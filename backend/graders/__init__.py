"""Graders: what scores the completions an RL method samples.

* ``builtin_graders()``: the graders the studio ships (reference answers, patterns,
  formats, JSON, length, words, TRL's own reward functions, a reward model), each a
  ``GraderSpec`` with settings the form shows;
* ``list_reward_functions(path)``: the functions of a user's reward file, read with
  ``ast`` (the file is not run);
* ``build_reward_functions(entries, ...)``: the guarded reward functions, their weights
  and names for a config's ``graders`` list; in the worker only, since a reward file
  runs here when the launch allowed it.

An entry is ``{"grader": "<builtin key>" | "file:<function>" | "reward_model",
"weight": 1.0, "name": optional, ...settings}``. Torch-free at import.
"""

from __future__ import annotations

from pathlib import Path

from backend.graders.builtin import BUILTIN
from backend.graders.errors import GraderError
from backend.graders.guard import guard, running_grader, when_grader_hangs
from backend.graders.reward_file import FunctionInfo, RewardFileError, list_reward_functions
from backend.graders.reward_model import REWARD_MODEL
from backend.graders.spec import GraderSetting, GraderSettingError, GraderSpec
from backend.graders.trl_rewards import trl_graders

FILE_PREFIX = "file:"
# What an RL method grades with when the config names no grader: needs no reference column.
DEFAULT_GRADERS = ({"grader": "output_format", "weight": 1.0},)


def builtin_graders() -> tuple[GraderSpec, ...]:
    return BUILTIN + trl_graders() + (REWARD_MODEL,)


def get_grader(key: str) -> GraderSpec:
    for spec in builtin_graders():
        if spec.key == key:
            return spec
    raise GraderSettingError(key, "grader", f"no such grader; the built-in ones are "
                                            f"{', '.join(s.key for s in builtin_graders())}, "
                                            "or file:<function> for a function of the reward file")


def entry_problems(entries, *, reward_file: str = "", reward_model: str = "") -> list[str]:
    """What is wrong with a ``graders`` list, without running anything (the form and the CLI
    refuse with these before a model loads)."""
    problems: list[str] = []
    if not isinstance(entries, (list, tuple)):
        return [f"graders must be a list of entries like {{grader: numeric_match}}; got {type(entries).__name__}"]
    listed: list[FunctionInfo] | None = None
    for i, entry in enumerate(entries, 1):
        if not isinstance(entry, dict) or not isinstance(entry.get("grader"), str):
            problems.append(f"grader {i}: expected a mapping with a 'grader' key, got {entry!r}")
            continue
        key = entry["grader"].strip()
        try:
            weight = float(entry.get("weight", 1.0))
            if weight != weight:
                raise ValueError
        except (TypeError, ValueError):
            problems.append(f"grader {i} ({key}): weight must be a number; got {entry.get('weight')!r}")
        if key.startswith(FILE_PREFIX):
            function = key[len(FILE_PREFIX):]
            if not reward_file:
                problems.append(f"grader {i} ({key}): names a function of the reward file, but no reward "
                                "file is set (reward_file, --reward-file)")
                continue
            if listed is None:
                try:
                    listed = list_reward_functions(reward_file)
                except RewardFileError as exc:
                    problems.append(str(exc))
                    listed = []
                    continue
            if listed and function not in {f.name for f in listed}:
                problems.append(f"grader {i}: the reward file {Path(reward_file).name} has no function "
                                f"{function!r} (it has: {', '.join(f.name for f in listed) or 'none'})")
            continue
        try:
            spec = get_grader(key)
            settings = spec.resolved(entry)
            if not spec.available:
                problems.append(f"grader {i} ({key}): {spec.unavailable_reason}")
            elif key == "reward_model" and not (settings.get("source") or reward_model):
                problems.append(f"grader {i} (reward_model): name the reward model (reward_model, --reward-model)")
            elif not spec.made_in_worker:
                spec.make(entry)  # builds patterns and schemas: a bad one is named now, not mid-run
        except GraderSettingError as exc:
            problems.append(f"grader {i}: {exc}")
    return problems


def entry_columns(entries) -> list[str]:
    """The dataset columns the built-in graders of ``entries`` read (reference answers)."""
    found: list[str] = []
    for entry in entries or ():
        key = str(entry.get("grader", "")) if isinstance(entry, dict) else ""
        if key.startswith(FILE_PREFIX):
            continue
        try:
            found += [c for c in get_grader(key).columns(entry) if c not in found]
        except GraderSettingError:
            continue
    return found


def _unique(name: str, taken: set[str]) -> str:
    candidate, n = name, 2
    while candidate in taken:
        candidate, n = f"{name}_{n}", n + 1
    taken.add(candidate)
    return candidate


def build_reward_functions(entries, *, reward_file_allowed: bool, run_dir=None, reward_file: str = "",
                           reward_model: str = "", model_permissions: dict | None = None):
    """(functions, weights, names) for TRL from a config's ``graders`` entries, each guarded.

    A ``file:`` entry runs the reward file: only with ``reward_file_allowed`` (else a
    GraderError saying why), and the file is copied into ``run_dir`` first so the run
    can be repeated. ``reward_model`` is the source a ``reward_model`` entry without its
    own uses. GraderError / GraderSettingError name the entry that cannot be built."""
    from backend.graders.reward_file import copy_into_run, load_reward_function, load_reward_module

    entries = list(entries or DEFAULT_GRADERS)
    problems = entry_problems(entries, reward_file=reward_file, reward_model=reward_model)
    if problems:
        raise GraderError("; ".join(problems), function=str(entries[0].get("grader", "")) if entries else "")
    funcs, weights, names, taken, module = [], [], [], set(), None
    for entry in entries:
        key = entry["grader"].strip()
        weights.append(float(entry.get("weight", 1.0)))
        if key.startswith(FILE_PREFIX):
            function = key[len(FILE_PREFIX):]
            if not reward_file_allowed:
                raise GraderError(
                    f"The reward file {Path(reward_file).name} was not allowed to run, so its function "
                    f"{function} cannot grade. Running it executes its code with your permissions.",
                    function=function, hint="Allow it when Train asks, or with --allow-reward-code on the "
                                            "command line, only if you trust the file.")
            if module is None:
                if run_dir is not None:
                    copy_into_run(reward_file, run_dir)
                module = load_reward_module(reward_file)
            func = load_reward_function(reward_file, function, module)
            name = _unique(str(entry.get("name") or function), taken)
            funcs.append(guard(func, name))
            names.append(name)
            continue
        spec = get_grader(key)
        settings = dict(entry)
        if key == "reward_model":
            settings.setdefault("source", reward_model)
            if not settings.get("source"):
                settings["source"] = reward_model
            settings = {k: v for k, v in settings.items() if k in ("source", "batch_size")}
            raw = spec.factory({**spec.resolved(settings), **(model_permissions or {})})
        else:
            raw = spec.make(settings)
        name = _unique(str(entry.get("name") or key), taken)
        funcs.append(guard(raw, name, where="built-in", columns=spec.columns(settings)))
        names.append(name)
    return funcs, weights, names


__all__ = [
    "DEFAULT_GRADERS", "FILE_PREFIX", "FunctionInfo", "GraderError", "GraderSetting", "GraderSettingError",
    "GraderSpec", "RewardFileError", "build_reward_functions", "builtin_graders", "entry_columns",
    "entry_problems", "get_grader", "guard", "list_reward_functions", "running_grader", "when_grader_hangs",
]
