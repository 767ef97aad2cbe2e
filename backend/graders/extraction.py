"""Getting the text of a completion and the answer out of it.

Completions reach a reward function as strings (standard prompts) or as a list of
chat messages (conversational prompts); graders read the assistant's text.
"""

from __future__ import annotations

import re

EXTRACTIONS = ("last_number", "first_number", "boxed", "marker", "answer_tag", "whole")

_NUMBER = re.compile(r"[-+]?\$?\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+)?%?|[-+]?\.\d+")


def completion_text(completion) -> str:
    """The text of one completion: a string as is, the content of the messages otherwise."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return str(completion.get("content") or "")
    if isinstance(completion, (list, tuple)):
        return "".join(completion_text(m) for m in completion)
    return "" if completion is None else str(completion)


def last_number(text: str) -> str | None:
    found = _NUMBER.findall(text or "")
    return found[-1] if found else None


def boxed(text: str) -> str | None:
    r"""The content of the last ``\boxed{...}``, braces balanced."""
    start = (text or "").rfind("\\boxed{")
    if start < 0:
        return None
    i, depth, begin = start + len("\\boxed{"), 1, start + len("\\boxed{")
    while i < len(text):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[begin:i].strip()
        i += 1
    return None


def after_marker(text: str, marker: str) -> str | None:
    """What follows the last ``marker`` ("####", "Answer:"), up to the end of its line."""
    at = (text or "").rfind(marker) if marker else -1
    if at < 0:
        return None
    rest = text[at + len(marker):].strip()
    return rest.splitlines()[0].strip() if rest else ""


def answer_tag(text: str) -> str | None:
    found = re.findall(r"<answer>(.*?)</answer>", text or "", flags=re.DOTALL)
    return found[-1].strip() if found else None


def extract_answer(text: str, how: str, marker: str = "####") -> str | None:
    """The answer in ``text`` by ``how`` (one of ``EXTRACTIONS``); None when there is none."""
    if how == "last_number":
        return last_number(text)
    if how == "first_number":
        found = _NUMBER.findall(text or "")
        return found[0] if found else None
    if how == "boxed":
        return boxed(text)
    if how == "marker":
        return after_marker(text, marker)
    if how == "answer_tag":
        return answer_tag(text)
    if how == "whole":
        return (text or "").strip()
    raise ValueError(f"unknown answer extraction {how!r}; choose one of {', '.join(EXTRACTIONS)}")


def parse_number(text) -> float | None:
    """A number written as people write them: 1,234  $5  12.5%  -3  1e3; None otherwise.
    A string holding more (e.g. "x = 4") gives its last number."""
    if text is None:
        return None
    if isinstance(text, bool):
        return None
    if isinstance(text, (int, float)):
        return float(text)
    found = last_number(str(text))
    if found is None:
        return None
    cleaned = found.replace(",", "").replace("$", "").rstrip("%")
    try:
        return float(cleaned)
    except ValueError:
        return None


def normalise(text: str, case_sensitive: bool) -> str:
    text = " ".join(str(text).split()).strip().strip(".").strip()
    return text if case_sensitive else text.lower()
