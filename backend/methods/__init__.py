"""The registry of training methods: one module per method, each with a ``SPEC``.

Everything that lists, shows or trains methods iterates ``all_methods()``;
adding a method is its module, its entry in ``METHOD_MODULES`` and its test
(docs/adding_a_method.md). Importing this package stays torch-free.
"""

from __future__ import annotations

import importlib
from functools import lru_cache

from backend.methods.spec import BuildContext, DataNeed, MemoryTraits, Metric, MethodSpec

# Registration order is the order of menus and listings.
METHOD_MODULES = ("backend.methods.sft", "backend.methods.dpo", "backend.methods.orpo",
                  "backend.methods.cpo", "backend.methods.simpo",
                  "backend.methods.kto",
                  "backend.methods.grpo", "backend.methods.rloo",
                  "backend.methods.bradley_terry",
                  "backend.methods.online_dpo",
                  "backend.methods.ppo")
DEFAULT_METHOD = "dpo"  # what a first start and `alignstudio train` without --method pick
GROUP_ORDER = ("Supervised", "Offline preference", "Reward model", "Online", "RL")


class UnknownMethod(KeyError):
    pass


@lru_cache(maxsize=1)
def all_methods() -> tuple[MethodSpec, ...]:
    return tuple(importlib.import_module(name).SPEC for name in METHOD_MODULES)


def method_keys() -> tuple[str, ...]:
    return tuple(spec.key for spec in all_methods())


def get_method(key: str) -> MethodSpec:
    wanted = (key or "").strip().lower()
    for spec in all_methods():
        if spec.key == wanted or wanted in spec.aliases:
            return spec
    raise UnknownMethod(key)


def find_method(key: str) -> MethodSpec | None:
    try:
        return get_method(key)
    except UnknownMethod:
        return None


def method_label(key: str) -> str:
    """The short name of ``key``; the key in capitals for a method no longer registered."""
    spec = find_method(key)
    return spec.label if spec else (key or "").upper()


def grouped_methods() -> list[tuple[str, list[MethodSpec]]]:
    """(group, its methods) in menu order; groups without methods are left out."""
    groups: dict[str, list[MethodSpec]] = {}
    for spec in all_methods():
        groups.setdefault(spec.group, []).append(spec)
    rank = {g: i for i, g in enumerate(GROUP_ORDER)}
    return sorted(groups.items(), key=lambda item: rank.get(item[0], len(rank)))


def methods_for_data(kind: str) -> list[str]:
    """Keys of the methods that can train on data of ``kind``: those that take it as it is first,
    then those that convert it (the window picks the first when the data rules out the current one)."""
    usable = [s for s in all_methods() if kind in s.data.accepts]
    return [s.key for s in usable if kind not in s.data.convert] + [s.key for s in usable if kind in s.data.convert]


__all__ = [
    "BuildContext", "DEFAULT_METHOD", "DataNeed", "MemoryTraits", "Metric", "MethodSpec", "UnknownMethod",
    "all_methods", "find_method", "get_method", "grouped_methods", "method_keys", "method_label",
    "methods_for_data",
]
