"""The graders the studio ships: each a ``GraderSpec`` whose settings the form shows.

Each reward function takes TRL's arguments (``prompts``, ``completions``,
``completion_ids`` and the dataset's columns by name) and returns one float per
completion. A grader that reads a reference column names it in a setting; a row
without a reference value gets None (abstains) rather than a made-up score.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from backend.graders.extraction import (EXTRACTIONS, completion_text, extract_answer, normalise,
                                        parse_number)
from backend.graders.json_check import find_json, has_jsonschema, schema_checker, unsupported_keywords
from backend.graders.spec import GraderSetting as S
from backend.graders.spec import GraderSettingError, GraderSpec

_EXTRACT_HELP = ("Where the answer is in the completion: last_number, first_number, boxed (the last \\boxed{...}), "
                 "marker (after the Marker text), answer_tag (inside <answer>...</answer>), whole (all of it).")


class MissingColumn(KeyError):
    """A grader asked for a dataset column the data does not have."""

    def __init__(self, column: str, available: list[str]):
        self.column, self.available = column, available
        super().__init__(column)


def reference_values(column: str, kwargs: dict, n: int) -> list:
    if column not in kwargs:
        raise MissingColumn(column, sorted(k for k in kwargs if k not in _TRL_EXTRAS))
    values = list(kwargs[column])
    if len(values) != n:
        raise ValueError(f"column {column!r} has {len(values)} values for {n} completions")
    return values


_TRL_EXTRAS = ("trainer_state", "log_extra", "log_metric", "environments")


def _texts(completions) -> list[str]:
    return [completion_text(c) for c in completions]


# ------------------------------------------------------------- reference answers
def _numeric_match(s: dict):
    column, how, marker, tol = s["column"], s["extract"], s["marker"], float(s["tolerance"])

    def grade(prompts=None, completions=(), completion_ids=None, **kwargs):
        refs = reference_values(column, kwargs, len(completions))
        scores = []
        for text, ref in zip(_texts(completions), refs):
            # A worked reference ("... #### 72") gives the number after the marker, else its last number.
            marked = isinstance(ref, str) and how == "marker" and marker in ref
            want = parse_number(extract_answer(ref, how, marker) if marked else ref)
            if want is None:
                scores.append(None)
                continue
            got = parse_number(extract_answer(text, how, marker))
            scores.append(1.0 if got is not None and abs(got - want) <= tol * max(1.0, abs(want)) else 0.0)
        return scores

    return grade


def _exact_match(s: dict):
    column, how, marker, case = s["column"], s["extract"], s["marker"], bool(s["case_sensitive"])

    def grade(prompts=None, completions=(), completion_ids=None, **kwargs):
        refs = reference_values(column, kwargs, len(completions))
        scores = []
        for text, ref in zip(_texts(completions), refs):
            if ref is None or str(ref).strip() == "":
                scores.append(None)
                continue
            got = extract_answer(text, how, marker)
            scores.append(1.0 if got is not None and normalise(got, case) == normalise(ref, case) else 0.0)
        return scores

    return grade


# ------------------------------------------------------------------- patterns
def _compile(pattern: str, grader: str, flags=0):
    try:
        return re.compile(pattern, flags)
    except re.error as exc:
        raise GraderSettingError(grader, "pattern", f"{pattern!r} is not a valid regular expression: {exc}") from None


def _regex_match(s: dict):
    rx = _compile(str(s["pattern"]), "regex_match", 0 if s["case_sensitive"] else re.IGNORECASE)
    whole = s["mode"] == "fullmatch"

    def grade(prompts=None, completions=(), completion_ids=None, **kwargs):
        hit = (rx.fullmatch if whole else rx.search)
        return [1.0 if hit(t.strip() if whole else t) else 0.0 for t in _texts(completions)]

    return grade


def _output_format(s: dict):
    tags = [t.strip() for t in str(s["tags"]).split(",") if t.strip()]
    if not tags or any(not re.fullmatch(r"[A-Za-z_][\w-]*", t) for t in tags):
        raise GraderSettingError("output_format", "tags", f"expected tag names separated by commas "
                                                          f"(e.g. think,answer); got {s['tags']!r}")
    whole = re.compile(r"\s*" + r"\s*".join(rf"<{t}>.*?</{t}>" for t in tags) + r"\s*", re.DOTALL)
    partial = bool(s["partial_credit"])

    def grade(prompts=None, completions=(), completion_ids=None, **kwargs):
        scores = []
        for text in _texts(completions):
            if whole.fullmatch(text):
                scores.append(1.0)
            elif partial:
                # Each tag opened and closed once is worth a share: a signal before the whole format appears.
                have = sum(0.5 / len(tags) * (text.count(f"<{t}>") == 1) + 0.5 / len(tags) *
                           (text.count(f"</{t}>") == 1) for t in tags)
                scores.append(round(0.5 * have, 6))
            else:
                scores.append(0.0)
        return scores

    return grade


# ----------------------------------------------------------------------- JSON
def _valid_json(s: dict):
    where = s["where"]

    def grade(prompts=None, completions=(), completion_ids=None, **kwargs):
        scores = []
        for text in _texts(completions):
            try:
                find_json(text, where)
                scores.append(1.0)
            except ValueError:
                scores.append(0.0)
        return scores

    return grade


def load_schema(text: str):
    text = (text or "").strip()
    if not text:
        raise GraderSettingError("json_schema", "schema", "give a JSON schema (the text, or the path of a .json file)")
    if not text.startswith("{") and Path(text).expanduser().is_file():
        text = Path(text).expanduser().read_text(encoding="utf-8")
    try:
        schema = json.loads(text)
    except ValueError as exc:
        raise GraderSettingError("json_schema", "schema", f"the schema is not valid JSON: {exc}") from None
    if not isinstance(schema, dict):
        raise GraderSettingError("json_schema", "schema", "a JSON schema is an object ({...})")
    return schema


def _json_schema(s: dict):
    schema = load_schema(s["schema"])
    if not has_jsonschema():
        unsupported = unsupported_keywords(schema)
        if unsupported:
            raise GraderSettingError("json_schema", "schema", (
                "jsonschema is not installed and the built-in check does not understand "
                f"{', '.join(unsupported)}; install jsonschema (pip install jsonschema) or simplify the schema"))
    ok = schema_checker(schema)
    where = s["where"]

    def grade(prompts=None, completions=(), completion_ids=None, **kwargs):
        scores = []
        for text in _texts(completions):
            try:
                value = find_json(text, where)
            except ValueError:
                scores.append(0.0)
                continue
            scores.append(1.0 if ok(value) else 0.0)
        return scores

    return grade


# --------------------------------------------------------------- length, words
def _length_target(s: dict):
    unit, target, tolerance = s["unit"], float(s["target"]), float(s["tolerance"])
    if target <= 0:
        raise GraderSettingError("length_target", "target", f"must be above 0; got {target:g}")

    def grade(prompts=None, completions=(), completion_ids=None, **kwargs):
        if unit == "tokens":
            lengths = [len(ids) for ids in (completion_ids or [[]] * len(completions))]
        elif unit == "characters":
            lengths = [len(t) for t in _texts(completions)]
        else:
            lengths = [len(t.split()) for t in _texts(completions)]
        # 1 within the tolerance, falling linearly to 0 at a distance of the target itself.
        return [max(0.0, 1.0 - max(0.0, abs(n - target) - tolerance) / target) for n in lengths]

    return grade


def _words(text: str) -> list[str]:
    return [w.strip() for w in str(text).split(",") if w.strip()]


def _word_regex(word: str, case: bool):
    return re.compile(rf"(?<!\w){re.escape(word)}(?!\w)", 0 if case else re.IGNORECASE)


def _required_words(s: dict):
    words = _words(s["words"])
    if not words:
        raise GraderSettingError("required_words", "words", "list at least one word (separated by commas)")
    rxs = [_word_regex(w, bool(s["case_sensitive"])) for w in words]

    def grade(prompts=None, completions=(), completion_ids=None, **kwargs):
        return [sum(1 for rx in rxs if rx.search(t)) / len(rxs) for t in _texts(completions)]

    return grade


def _banned_words(s: dict):
    words = _words(s["words"])
    if not words:
        raise GraderSettingError("banned_words", "words", "list at least one word (separated by commas)")
    rxs = [_word_regex(w, bool(s["case_sensitive"])) for w in words]
    penalty = float(s["penalty"])

    def grade(prompts=None, completions=(), completion_ids=None, **kwargs):
        return [1.0 - min(1.0, penalty * sum(1 for rx in rxs if rx.search(t))) for t in _texts(completions)]

    return grade


_COLUMN = S("column", "answer", "Dataset column holding the reference answer.")
_EXTRACT = S("extract", "last_number", _EXTRACT_HELP, EXTRACTIONS)
_MARKER = S("marker", "####", "Text after which the answer follows, for extract = marker (e.g. ####, Answer:).")

BUILTIN = (
    GraderSpec("numeric_match", "Numeric answer", "1 when the number in the answer equals the reference column's "
               "(within the tolerance), else 0.",
               (_COLUMN, _EXTRACT, _MARKER, S("tolerance", 1e-6, "Relative tolerance (of the reference, at least 1).")),
               _numeric_match, column_settings=("column",)),
    GraderSpec("exact_match", "Exact answer", "1 when the extracted answer equals the reference column's text "
               "(spaces and a final full stop ignored), else 0.",
               (_COLUMN, S("extract", "whole", _EXTRACT_HELP, EXTRACTIONS), _MARKER,
                S("case_sensitive", False, "Tell capitals apart.")),
               _exact_match, column_settings=("column",)),
    GraderSpec("regex_match", "Pattern", "1 when the completion matches the regular expression, else 0.",
               (S("pattern", r"\d+", "Python regular expression."),
                S("mode", "search", "search: anywhere in the completion; fullmatch: the whole completion.",
                  ("search", "fullmatch")),
                S("case_sensitive", True, "Tell capitals apart.")),
               _regex_match),
    GraderSpec("output_format", "Output format", "1 when the completion is exactly the tagged sections in order "
               "(e.g. <think>…</think><answer>…</answer>); partial credit for tags present.",
               (S("tags", "think,answer", "Tag names in the order they must appear, separated by commas."),
                S("partial_credit", True, "Up to 0.5 for each tag opened and closed once when the whole "
                                          "format is not met: a signal while the format is still rare.")),
               _output_format),
    GraderSpec("valid_json", "Valid JSON", "1 when the completion holds valid JSON, else 0.",
               (S("where", "whole", "whole: the completion is JSON; code_block: the first ``` block; "
                                    "first_object: the first {...} or [...].", ("whole", "code_block", "first_object")),),
               _valid_json),
    GraderSpec("json_schema", "JSON schema", "1 when the completion's JSON matches the schema, else 0 "
               "(jsonschema when installed; otherwise a subset, and other keywords are refused).",
               (S("schema", '{"type": "object"}', "The JSON schema, or the path of a .json file holding it."),
                S("where", "whole", "Where the JSON is (see Valid JSON).", ("whole", "code_block", "first_object"))),
               _json_schema),
    GraderSpec("length_target", "Length target", "1 within the tolerance of the target length, falling to 0 "
               "at twice (or none of) the target.",
               (S("unit", "words", "Count words, characters or tokens.", ("words", "characters", "tokens")),
                S("target", 50, "The length wanted."),
                S("tolerance", 10, "Lengths this close to the target score 1.")),
               _length_target),
    GraderSpec("required_words", "Required words", "The fraction of the listed words the completion contains.",
               (S("words", "", "Words or phrases, separated by commas."),
                S("case_sensitive", False, "Tell capitals apart.")),
               _required_words),
    GraderSpec("banned_words", "Banned words", "1 when none of the listed words appear; each one present costs "
               "the penalty (down to 0).",
               (S("words", "", "Words or phrases, separated by commas."),
                S("penalty", 1.0, "What each banned word present costs."),
                S("case_sensitive", False, "Tell capitals apart.")),
               _banned_words),
)
