"""Every reward function runs inside a guard, so a broken grader ends the run with a
sentence naming it (function, file and line, the sample) instead of a traceback.

The guard refuses: an exception (or ``sys.exit``) in the function, a column the data
lacks, a result that is not one value per completion, and a value that is not a number
(None abstains and is allowed) or is NaN or infinite. It also records the call in
progress, so a stop request that meets a grader that does not return can end the
process (``when_grader_hangs``) instead of waiting on it forever.
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
import threading
import time
import traceback
from pathlib import Path
from typing import Callable

from backend.graders.errors import GraderError
from backend.graders.extraction import completion_text
from backend.graders.reward_file import TRL_PARAMETERS

_running: dict | None = None  # the guarded call in progress: {"name", "where", "since", "token"}
_lock = threading.Lock()


def running_grader() -> dict | None:
    with _lock:
        return dict(_running) if _running else None


def _sample_text(prompts, completions, i: int, limit: int = 240) -> str:
    def short(value) -> str:
        text = completion_text(value)
        return text if len(text) <= limit else text[:limit] + "…"
    prompt = short(prompts[i]) if prompts is not None and i < len(prompts) else ""
    return f"prompt {prompt!r}, completion {short(completions[i])!r}"


def function_location(func: Callable) -> str:
    """``file.py:line`` of a function (its definition), or ``built-in``."""
    target = inspect.unwrap(func)
    try:
        return f"{Path(inspect.getsourcefile(target) or '').name}:{inspect.getsourcelines(target)[1]}"
    except (OSError, TypeError):
        return "built-in"


def required_columns(func: Callable) -> list[str]:
    """Parameters without a default that TRL does not fill: dataset columns asked for by name."""
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return []
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD,
             inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in params if p.kind in kinds and p.default is inspect.Parameter.empty
            and p.name not in TRL_PARAMETERS]


def _raised_at(exc: BaseException, default: str) -> str:
    """Where in the user's code the exception came from: the deepest frame outside this package."""
    here = Path(__file__).resolve().parent
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename).resolve().parent != here]
    return f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else default


def guard(func: Callable, name: str, where: str = "", columns: list[str] | None = None) -> Callable:
    """``func`` checked on every call; ``name`` is what TRL logs (``rewards/<name>/mean``)."""
    where = where or function_location(func)
    needed = list(columns if columns is not None else required_columns(func))
    label = f"{name} ({where})" if where != "built-in" else name

    def fail(message: str, sample: str = "", at: str = "") -> GraderError:
        return GraderError(f"Grader {label}: {message}", function=name, where=at or where, sample=sample)

    @functools.wraps(func)
    def guarded(prompts=None, completions=(), completion_ids=None, **kwargs):
        global _running
        n = len(completions)
        missing = [c for c in needed if c not in kwargs]
        if missing:
            have = sorted(k for k in kwargs if k not in TRL_PARAMETERS)
            raise fail(f"asks for the column {', '.join(map(repr, missing))}, which the data does not have "
                       f"(its columns: {', '.join(have) or 'none besides the prompt'}).")
        token = object()
        with _lock:
            _running = {"name": name, "where": where, "since": time.monotonic(), "token": token}
        try:
            result = func(prompts=prompts, completions=completions, completion_ids=completion_ids, **kwargs)
            if inspect.isawaitable(result):
                import asyncio

                result = asyncio.run(result)
        except GraderError:
            raise
        except SystemExit as exc:
            if exc.code == 143:  # the worker's own second SIGTERM: a stop, not the grader's doing
                raise
            raise fail(f"tried to end the process (sys.exit({exc.code!r})); a reward function must "
                       "return its scores.", at=_raised_at(exc, where)) from None
        except Exception as exc:  # noqa: BLE001 - the user's code may raise anything
            at = _raised_at(exc, where)
            if isinstance(exc, KeyError) and exc.args and exc.args[0] not in kwargs and isinstance(exc.args[0], str) \
                    and exc.args[0] not in ("prompt", "completion"):
                have = sorted(k for k in kwargs if k not in TRL_PARAMETERS)
                raise fail(f"asks for the column {exc.args[0]!r} (line {at}), which the data does not have "
                           f"(its columns: {', '.join(have) or 'none besides the prompt'}).", at=at) from None
            culprit = _first_failing_sample(func, prompts, completions, completion_ids, kwargs)
            raise fail(f"raised {type(exc).__name__}: {exc} (at {at}).",
                       sample=_sample_text(prompts, completions, culprit) if culprit is not None else "",
                       at=at) from None
        finally:
            with _lock:
                if _running is not None and _running.get("token") is token:
                    _running = None
        return _checked(result, n, fail, prompts, completions)

    guarded.__name__ = name
    guarded.__qualname__ = name
    return guarded


def _checked(result, n: int, fail, prompts, completions) -> list:
    if isinstance(result, (str, bytes)) or not hasattr(result, "__len__"):
        raise fail(f"returned {type(result).__name__}, not a list of {n} scores (one per completion).")
    values = list(result.tolist() if hasattr(result, "tolist") else result)
    if len(values) != n:
        raise fail(f"returned {len(values)} scores for {n} completions; it must return one per completion "
                   "(None to abstain).")
    out = []
    for i, value in enumerate(values):
        if value is None:
            out.append(None)
            continue
        if hasattr(value, "item") and not isinstance(value, numbers.Real):
            value = value.item()  # a 0-d tensor or a numpy scalar
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise fail(f"returned {value!r} ({type(value).__name__}) for completion {i + 1}; scores must be "
                       "numbers (or None to abstain).", sample=_sample_text(prompts, completions, i))
        value = float(value)
        if math.isnan(value) or math.isinf(value):
            raise fail(f"returned {value} for completion {i + 1}; scores must be finite numbers "
                       "(return None to abstain on a sample).", sample=_sample_text(prompts, completions, i))
        out.append(value)
    return out


def _first_failing_sample(func, prompts, completions, completion_ids, kwargs, limit: int = 64) -> int | None:
    """Which sample the function fails on, by trying them one by one (graders are cheap)."""
    for i in range(min(len(completions), limit)):
        one = {k: ([v[i]] if isinstance(v, list) and len(v) == len(completions) else v) for k, v in kwargs.items()}
        try:
            func(prompts=[prompts[i]] if prompts is not None else None, completions=[completions[i]],
                 completion_ids=[completion_ids[i]] if completion_ids is not None else None, **one)
        except BaseException:  # noqa: BLE001
            return i
    return None


def when_grader_hangs(on_stuck: Callable[[GraderError], None], grace_s: float = 10.0) -> None:
    """After a stop request: if a guarded call is in progress and still the same one after
    ``grace_s``, call ``on_stuck`` with the failure naming it (the worker then exits)."""
    first = running_grader()
    if first is None:
        return

    def watch():
        time.sleep(grace_s)
        now = running_grader()
        if now is not None and now["token"] is first["token"]:
            seconds = time.monotonic() - now["since"]
            on_stuck(GraderError(
                f"Stopped: the grader {now['name']} ({now['where']}) had been running for {seconds:.0f} s "
                "without returning, so the run was ended rather than waiting for it.",
                function=now["name"], where=now["where"],
                hint="A reward function that does not return (an endless loop, a call that waits forever) "
                     "holds the whole run; give it a time limit of its own, or try it with Try the graders."))

    threading.Thread(target=watch, name="grader-hang-watch", daemon=True).start()
