"""What differs between the settings of several runs, read from their ``config.yaml``."""

from __future__ import annotations

from typing import Any

import yaml

MISSING = "(not set)"


def parse_config_text(text: str) -> dict[str, Any]:
    """The settings in a run's config.yaml text; a file that is not a mapping gives a
    single ``error`` entry, so a damaged run still shows up in the comparison."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        return {"error": f"config.yaml cannot be read: {str(exc).splitlines()[0]}"}
    return data if isinstance(data, dict) else {"error": "config.yaml holds no settings"}


def config_differences(configs: list[dict[str, Any]]) -> tuple[list[tuple[str, list[Any]]], int]:
    """(settings whose values differ, each with one value per config, in the order keys
    first appear; number of settings that are the same in all)."""
    keys: list[str] = []
    for config in configs:
        keys += [k for k in config if k not in keys]
    differing, same = [], 0
    for key in keys:
        values = [config.get(key, MISSING) for config in configs]
        if all(v == values[0] for v in values[1:]):
            same += 1
        else:
            differing.append((key, values))
    return differing, same


def value_text(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, str):
        return value if value else '""'
    if isinstance(value, (dict, list)):
        return yaml.safe_dump(value, default_flow_style=True, sort_keys=False).strip()
    return str(value)
