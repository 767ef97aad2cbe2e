"""What a grader is, as plain data: its key, its settings and how to make its reward function.

A reward function has TRL's signature: ``f(prompts, completions, completion_ids=None, **columns)``
returning one float per completion (None abstains). Torch-free: the window lists and
edits graders without importing the training stack.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class GraderSetting:
    name: str
    default: Any
    help: str
    choices: tuple[Any, ...] | None = None


@dataclass(frozen=True)
class GraderSpec:
    key: str  # what a config's ``graders`` entry names: {"grader": key, ...}
    label: str
    summary: str
    settings: tuple[GraderSetting, ...]
    factory: Callable[[dict], Callable]  # the settings (defaults filled in) -> reward function
    # Setting names whose value is a dataset column the grader reads (checked against the data).
    column_settings: tuple[str, ...] = ()
    available: bool = True
    # Made only in the worker (it imports TRL or loads a model); settings are checked by name only before.
    made_in_worker: bool = False
    unavailable_reason: str = ""  # why it cannot be used here (a missing optional package)

    def defaults(self) -> dict:
        return {s.name: s.default for s in self.settings}

    def resolved(self, settings: dict | None) -> dict:
        """``settings`` over the defaults; GraderSettingError naming an unknown setting or a bad choice."""
        values = self.defaults()
        for name, value in (settings or {}).items():
            if name in ("grader", "weight", "name"):
                continue
            known = {s.name: s for s in self.settings}
            if name not in known:
                raise GraderSettingError(self.key, name, f"unknown setting; {self.label} has "
                                                         f"{', '.join(known) or 'no settings'}")
            choices = known[name].choices
            if choices and value not in choices:
                raise GraderSettingError(self.key, name, f"must be one of {', '.join(map(str, choices))}; "
                                                         f"got {value!r}")
            values[name] = value
        return values

    def columns(self, settings: dict | None) -> list[str]:
        values = self.resolved(settings)
        return [str(values[name]) for name in self.column_settings if values.get(name)]

    def make(self, settings: dict | None = None) -> Callable:
        """The reward function for ``settings``, named after the grader (TRL logs
        ``rewards/<name>/mean`` by a function's ``__name__``)."""
        if not self.available:
            raise GraderSettingError(self.key, "grader", self.unavailable_reason)
        func = self.factory(self.resolved(settings))
        func.__name__ = self.key
        func.__qualname__ = self.key
        return func


class GraderSettingError(ValueError):
    """A grader entry that cannot be built: names the grader and the setting."""

    def __init__(self, grader: str, setting: str, message: str):
        self.grader, self.setting = grader, setting
        super().__init__(f"grader {grader}, setting {setting}: {message}")
