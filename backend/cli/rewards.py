"""``alignstudio train`` flags for methods that grade sampled completions, and ``--demo``.

``--reward NAME[:key=value,...]`` adds a grader (repeatable; ``file:FUNCTION`` for a
function of the reward file), ``--reward-model`` names a reward model run or folder,
``--reward-file FILE.py`` a file of reward functions, which runs only together with
``--allow-reward-code``: without it the command is refused, with the reason, before
anything loads. ``--demo NAME`` starts from a demo's ready config
(``resources/demo/demo_<NAME>.yaml``).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_reward_arguments(train: argparse.ArgumentParser) -> None:
    train.add_argument("--reward", action="append", default=[], metavar="NAME[:KEY=VALUE,...]",
                       help="grade sampled completions with this grader (repeatable), e.g. --reward numeric_match "
                            "--reward output_format:tags=answer,weight=0.5; file:FUNCTION for a function of "
                            "--reward-file; `alignstudio graders` lists them")
    train.add_argument("--reward-model", metavar="RUN_OR_FOLDER",
                       help="grade with a reward model: a reward model run folder or a model folder")
    train.add_argument("--reward-file", metavar="FILE.py",
                       help="your own reward functions (TRL's signature); runs only with --allow-reward-code")
    train.add_argument("--demo", metavar="NAME", help="start from a ready demo (e.g. rlvr: arithmetic with checked "
                                                      "answers, learns on a laptop); `alignstudio train --demo list`")


def demo_names() -> list[str]:
    from backend.cli.main import DEMO_DIR

    return sorted(p.stem[len("demo_"):] for p in DEMO_DIR.glob("demo_*.yaml"))


def demo_config_path(name: str) -> Path:
    """The config of demo ``name``; ValueError listing the demos when there is no such one."""
    from backend.cli.main import DEMO_DIR

    path = DEMO_DIR / f"demo_{name.strip().lower()}.yaml"
    if not path.is_file():
        raise ValueError(f"no demo named {name!r}; the demos are: {', '.join(demo_names())}")
    return path


def parse_reward(text: str) -> dict:
    """``NAME[:key=value,...]`` as a graders entry; numbers and true/false are read as such."""
    import yaml

    name, _, rest = text.strip().partition(":")
    if name == "file":  # file:FUNCTION[:settings]
        function, _, rest = rest.partition(":")
        name = f"file:{function}"
    entry: dict = {"grader": name.strip()}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"--reward {text}: expected KEY=VALUE after the grader's name, got {part!r}")
        try:
            entry[key.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            entry[key.strip()] = value
    return entry


def reward_values(args, cfg, values: dict) -> list[tuple[str, str]]:
    """Put what the reward flags say into ``values``; the problems with them (a reward file
    without permission among them), each naming the flag."""
    rewards, model, file = list(getattr(args, "reward", []) or []), getattr(args, "reward_model", None), \
        getattr(args, "reward_file", None)
    allow = bool(getattr(args, "allow_reward_code", False))
    if not (rewards or model or file or allow):
        return []
    if not hasattr(cfg, "graders"):
        from backend.methods import method_label

        if hasattr(cfg, "reward_model"):  # a method that a reward model alone scores
            if rewards or file or allow:
                return [("graders", f"{method_label(cfg.method)} scores its answers with a reward model only: "
                                    "give --reward-model, not --reward or --reward-file")]
            values["reward_model"] = _reward_model_value(model)
            return []
        return [("graders", f"--reward, --reward-model and --reward-file are for methods that grade sampled "
                            f"completions; {method_label(cfg.method)} does not (`alignstudio methods`)")]
    problems: list[tuple[str, str]] = []
    entries = []
    for text in rewards:
        try:
            entries.append(parse_reward(text))
        except ValueError as exc:
            problems.append(("graders", str(exc)))
    if file:
        path = Path(file).expanduser().resolve()
        values["reward_file"] = str(path)
        if not allow:
            problems.append(("reward_file", (
                f"--reward-file {file} would run that file's Python code during training, with your permissions; "
                "add --allow-reward-code to allow it (only for a file you trust)")))
        if not any(e["grader"].startswith("file:") for e in entries):
            from backend.graders import RewardFileError, list_reward_functions

            try:  # the file alone: grade with every reward function it has (read, not run)
                entries += [{"grader": f"file:{f.name}"} for f in list_reward_functions(path)]
            except RewardFileError as exc:
                problems.append(("reward_file", str(exc)))
    if allow:
        values["allow_reward_code"] = True
    if model:
        values["reward_model"] = _reward_model_value(model)
        if not any(e["grader"] == "reward_model" for e in entries):
            entries.append({"grader": "reward_model"})
    if entries:
        values["graders"] = entries
    return problems


def _reward_model_value(model: str) -> str:
    where = Path(model).expanduser()
    return str(where.resolve()) if where.exists() else model


def demo_config(name: str):
    """(the demo's config, problems): an unknown demo is a problem naming the demos there are."""
    from backend.cli.main import load_config_file
    from backend.runs.config import default_config

    try:
        return load_config_file(demo_config_path(name)), []
    except ValueError as exc:
        from backend.methods import DEFAULT_METHOD

        return default_config(DEFAULT_METHOD), [("demo", f"--demo {name}: {exc}")]


def add_graders_parser(sub) -> None:
    sub.add_parser("graders", help="list the built-in graders for --reward, with their settings")


def cmd_graders(args) -> int:
    from backend.graders import builtin_graders

    for spec in builtin_graders():
        state = "" if spec.available else f"  [unavailable: {spec.unavailable_reason}]"
        print(f"{spec.key:<24} {spec.summary}{state}")
        for s in spec.settings:
            choices = f" (one of {', '.join(map(str, s.choices))})" if s.choices else ""
            print(f"    {s.name} = {s.default!r}: {s.help}{choices}")
    print("\nfile:FUNCTION grades with a function of --reward-file (run only with --allow-reward-code).")
    return 0


def resume_reward_grant(args, run_dir) -> dict:
    """``--allow-reward-code`` on ``--resume``: the run's reward file may run again (the run
    folder never grants it); nothing for a run whose method has no reward file."""
    if not getattr(args, "allow_reward_code", False):
        return {}
    from backend.runs.config import ConfigError, load_yaml

    try:
        cfg = load_yaml(Path(run_dir) / "config.yaml")
    except ConfigError:
        return {}
    return {"allow_reward_code": True} if hasattr(cfg, "allow_reward_code") else {}
