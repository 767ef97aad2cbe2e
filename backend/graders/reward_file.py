"""The user's own Python file of reward functions.

``list_reward_functions`` reads the file with ``ast`` only: the window lists what it
offers without running a line of it. ``load_reward_function`` runs it, and is called
only in the training worker after the launch granted this file (see
backend/runs/code_permissions.py, "reward code").
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import shutil
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

from backend.graders.errors import GraderError

# Parameters TRL fills itself; any other parameter without a default names a dataset column.
TRL_PARAMETERS = ("prompts", "completions", "completion_ids", "trainer_state", "log_extra", "log_metric",
                  "environments")
RUN_COPY_DIR = "reward_code"


@dataclass(frozen=True)
class FunctionInfo:
    name: str
    line: int
    doc: str
    columns: tuple[str, ...] = ()  # dataset columns it asks for by parameter name
    is_async: bool = False


class RewardFileError(ValueError):
    """The file cannot be read or parsed; the message names the file (and the line)."""


def list_reward_functions(path: str | Path) -> list[FunctionInfo]:
    """The top-level functions of ``path`` that take TRL's reward arguments (``completions``
    or ``**kwargs``), in file order; names starting with ``_`` are helpers and left out."""
    path = Path(path).expanduser()
    try:
        source = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RewardFileError(f"The reward file {path} does not exist.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RewardFileError(f"The reward file {path} cannot be read: {exc}") from None
    try:
        tree = ast.parse(source, filename=str(path))
    except SyntaxError as exc:
        raise RewardFileError(f"{path.name}, line {exc.lineno}: {exc.msg} (the file is not valid Python)") from None
    found = []
    for node in tree.body:
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or node.name.startswith("_"):
            continue
        args = node.args
        names = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs]
        if "completions" not in names and args.kwarg is None:
            continue
        found.append(FunctionInfo(node.name, node.lineno, (ast.get_docstring(node) or "").strip().split("\n")[0],
                                  tuple(_required_columns(args)), isinstance(node, ast.AsyncFunctionDef)))
    return found


def _required_columns(args: ast.arguments) -> list[str]:
    positional = args.posonlyargs + args.args
    without_default = positional[:len(positional) - len(args.defaults)]
    kw_without = [a for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is None]
    return [a.arg for a in without_default + kw_without if a.arg not in TRL_PARAMETERS]


def copy_into_run(path: str | Path, run_dir: str | Path) -> Path:
    """Keep the exact file the run used beside its config, so the run can be repeated
    (``--reward-file RUN/reward_code/<name>``); a resumed run keeps the first copy."""
    path = Path(path).expanduser()
    target = Path(run_dir) / RUN_COPY_DIR / path.name
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    return target


def load_reward_module(path: str | Path):
    """Run the file and return it as a module. GraderError naming the file and line when it does not import."""
    path = Path(path).expanduser().resolve()
    name = "alignstudio_reward_" + hashlib.sha1(str(path).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise GraderError(f"The reward file {path} cannot be imported.", function=path.name)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        raise GraderError(f"{path.name}, line {exc.lineno}: {exc.msg} (the file is not valid Python)",
                          function=path.name, where=f"{path.name}:{exc.lineno}") from None
    except BaseException as exc:  # noqa: BLE001 - any failure while importing is the file's
        line = _line_in(exc, path)
        raise GraderError(f"The reward file {path.name} fails while it is imported, at line {line}: "
                          f"{type(exc).__name__}: {exc}", function=path.name, where=f"{path.name}:{line}") from None
    return module


def _line_in(exc: BaseException, path: Path) -> int | str:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename).resolve() == path]
    return frames[-1].lineno if frames else "?"


def load_reward_function(path: str | Path, name: str, module=None):
    """The function ``name`` of the reward file, its source line attached for messages."""
    module = module or load_reward_module(path)
    func = getattr(module, name, None)
    if not callable(func):
        names = ", ".join(f.name for f in list_reward_functions(path)) or "none"
        raise GraderError(f"The reward file {Path(path).name} has no function {name!r} (it has: {names}).",
                          function=name)
    return func
