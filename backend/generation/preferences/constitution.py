"""The principles of Constitutional AI: their file, their checks, and the conversation they drive.

For each prompt the model answers; then it is asked, in the same conversation, to critique its
answer against one principle, and then to revise the answer in the light of that critique. The
first answer becomes the rejected side of a pair, the revision the chosen side, and the critique
stays with the pair as the reason it exists.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from backend.generation.preferences.request import RequestError

PRINCIPLE_FIELDS = ("name", "critique", "revision")
MAX_PRINCIPLE_CHARS = 2000


def default_constitution_path() -> Path:
    """The shipped list of principles."""
    from backend.core.paths import resource_path

    return resource_path("constitution.yaml")


def default_principles() -> list[dict[str, str]]:
    return load_principles(default_constitution_path())


def load_principles(path: str | Path) -> list[dict[str, str]]:
    """The principles in a YAML file (a list, or a mapping with ``principles:``); RequestError naming
    the file and the entry when one is not usable."""
    path = Path(path).expanduser()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RequestError(f"The constitution file {path} does not exist.", "principles") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RequestError(f"The constitution file {path} cannot be read: {exc}", "principles") from None
    except yaml.YAMLError as exc:
        raise RequestError(f"The constitution file {path} is not valid YAML: {exc}", "principles") from None
    items = data.get("principles") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise RequestError(f"The constitution file {path} must hold a list of principles (under 'principles:'), "
                           "each with a name, a critique and a revision request.", "principles")
    principles = [_principle(item, i, path) for i, item in enumerate(items)]
    check_principles(principles, where=str(path))
    return principles


def _principle(item: Any, index: int, where) -> dict[str, str]:
    if not isinstance(item, dict):
        raise RequestError(f"{where}: principle {index + 1} is a {type(item).__name__}, not a mapping with "
                           "name, critique and revision.", "principles")
    return {k: ("" if item.get(k) is None else str(item.get(k))).strip() for k in PRINCIPLE_FIELDS}


def check_principles(principles: Any, where: str = "the principles") -> None:
    if not isinstance(principles, list) or not principles:
        raise RequestError(f"{where[0].upper() + where[1:]}: give at least one principle, with a critique request "
                           "and a revision request.", "principles")
    for i, item in enumerate(principles):
        p = _principle(item, i, where)
        label = f"principle {i + 1}" + (f" ({p['name']})" if p["name"] else "")
        for key in ("critique", "revision"):
            if not p[key]:
                raise RequestError(f"{where}: {label} has no {key} request.", "principles")
            if len(p[key]) > MAX_PRINCIPLE_CHARS:
                raise RequestError(f"{where}: the {key} request of {label} is longer than {MAX_PRINCIPLE_CHARS} "
                                   "characters.", "principles")


def save_principles(path: str | Path, principles: list[dict[str, str]]) -> None:
    from backend.core.atomic_files import write_text_atomic

    check_principles(principles)
    text = yaml.safe_dump({"principles": [_principle(p, i, path) for i, p in enumerate(principles)]},
                          sort_keys=False, allow_unicode=True, width=100)
    write_text_atomic(Path(path).expanduser(), text)


def principle_for_row(principles: list[dict[str, str]], index: int, seed: int) -> dict[str, str]:
    """Each principle in turn, starting where the seed says: every principle is used about equally
    and a resumed job picks the same principle for a row as before."""
    return _principle(principles[(index + seed) % len(principles)], 0, "")


def critique_messages(prompt_messages: list[dict], answer: str, principle: dict[str, str]) -> list[dict]:
    return prompt_messages + [{"role": "assistant", "content": answer},
                              {"role": "user", "content": f"Critique request: {principle['critique']}"}]


def revision_messages(critique_conversation: list[dict], critique: str, principle: dict[str, str]) -> list[dict]:
    # The request is restated: asked only to "rewrite the answer", small models tend to write a
    # comment about the answer instead of an answer (SmolLM2-135M did on most prompts).
    request = critique_conversation[-3]["content"] if len(critique_conversation) >= 3 else ""
    return critique_conversation + [
        {"role": "assistant", "content": critique},
        {"role": "user", "content": f"Revision request: {principle['revision']}\n\nNow write the improved answer "
                                    f"to the original request: \"{request}\". Write only the answer itself, not "
                                    "a comment about it."},
    ]
