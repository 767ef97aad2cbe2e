"""The dataset formats AlignStudio understands, how each is recognised, and
how one row of it becomes a row of TRL's dataset formats.

Everything here works on plain Python rows (dicts), so the same rules apply
whether a row came from JSON Lines, CSV, Parquet or a saved Arrow folder.
The loader (``dataset_loading``) feeds rows in; this module never reads files.

``datasets`` is imported only where a dataset is built: it costs about 1.5 s,
and the GUI imports these modules at start-up for the enum and the errors.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class DatasetError(Exception):
    """A dataset problem explained for the person who made the file.

    ``str(error)`` leads with where the problem is (file, line, field) so a
    dialog or the CLI can show it as is; the parts stay available for a GUI
    that wants to highlight the line or offer a column mapping (``columns``).
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | os.PathLike | None = None,
        line: int | None = None,
        field: str | None = None,
        columns: list[str] | None = None,
    ) -> None:
        self.message = message
        self.path = str(path) if path is not None else None
        self.line = line
        self.field = field
        self.columns = columns
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = []
        if self.path:
            where.append(os.path.basename(self.path.rstrip("/\\")) or self.path)
        if self.line is not None:
            where.append(f"line {self.line}")
        if self.field:
            where.append(f"field '{self.field}'")
        return f"{', '.join(where)}: {self.message}" if where else self.message


class DataFormat(Enum):
    """Source formats; ``.label`` is what a person sees in the GUI and CLI."""

    PREFERENCE = "preference"
    PREFERENCE_CONVERSATIONAL = "preference_conversational"
    PREFERENCE_IMPLICIT_PROMPT = "preference_implicit_prompt"
    SHAREGPT_PREFERENCE = "sharegpt_preference"
    UNPAIRED_PREFERENCE = "unpaired_preference"
    SHAREGPT = "sharegpt"
    MESSAGES = "messages"
    ALPACA = "alpaca"
    PROMPT_COMPLETION = "prompt_completion"
    TEXT = "text"
    PROMPT_ONLY = "prompt_only"

    @property
    def label(self) -> str:
        return _LABELS[self]

    @property
    def is_paired_preference(self) -> bool:
        return self in _PAIRED_PREFERENCE


_LABELS = {
    DataFormat.PREFERENCE: "Preference pairs (prompt, chosen, rejected)",
    DataFormat.PREFERENCE_CONVERSATIONAL: "Preference pairs as chat messages",
    DataFormat.PREFERENCE_IMPLICIT_PROMPT: "Preference pairs with the prompt inside chosen/rejected",
    DataFormat.SHAREGPT_PREFERENCE: "ShareGPT preference pairs (conversations, chosen, rejected)",
    DataFormat.UNPAIRED_PREFERENCE: "Unpaired preference (answers labelled good/bad)",
    DataFormat.SHAREGPT: "ShareGPT conversations (from, value)",
    DataFormat.MESSAGES: "Chat messages (role, content)",
    DataFormat.ALPACA: "Alpaca instructions (instruction, input, output)",
    DataFormat.PROMPT_COMPLETION: "Prompt and completion",
    DataFormat.TEXT: "Plain text",
    DataFormat.PROMPT_ONLY: "Prompts only (to be answered and graded)",
}

_PAIRED_PREFERENCE = {
    DataFormat.PREFERENCE,
    DataFormat.PREFERENCE_CONVERSATIONAL,
    DataFormat.PREFERENCE_IMPLICIT_PROMPT,
    DataFormat.SHAREGPT_PREFERENCE,
}


def data_kind(fmt: DataFormat) -> str:
    """The kind of data ``fmt`` holds, as method specs name it (backend.methods.spec.DATA_KINDS)."""
    if fmt.is_paired_preference:
        return "pairs"
    if fmt is DataFormat.UNPAIRED_PREFERENCE:
        return "unpaired"
    if fmt is DataFormat.PROMPT_ONLY:
        return "prompts"
    return "single"


def supported_methods(fmt: DataFormat) -> list[str]:
    """The registered training methods a dataset in ``fmt`` can feed, as is or converted:
    only methods the studio can train, so the data report never promises another."""
    from backend.methods import methods_for_data

    return methods_for_data(data_kind(fmt))


# Canonical fields each format needs (required, optional). A column map from
# the GUI uses these names as keys.
FORMAT_FIELDS: dict[DataFormat, tuple[tuple[str, ...], tuple[str, ...]]] = {
    DataFormat.PREFERENCE: (("prompt", "chosen", "rejected"), ()),
    DataFormat.PREFERENCE_CONVERSATIONAL: (("chosen", "rejected"), ("prompt",)),
    DataFormat.PREFERENCE_IMPLICIT_PROMPT: (("chosen", "rejected"), ()),
    DataFormat.SHAREGPT_PREFERENCE: (("conversations", "chosen", "rejected"), ()),
    # Either prompt and completion, or a whole conversation whose last assistant turn is judged.
    DataFormat.UNPAIRED_PREFERENCE: (("label",), ("prompt", "completion", "messages")),
    DataFormat.SHAREGPT: (("conversations",), ()),
    DataFormat.MESSAGES: (("messages",), ()),
    DataFormat.ALPACA: (("instruction", "output"), ("input",)),
    DataFormat.PROMPT_COMPLETION: (("prompt", "completion"), ()),
    DataFormat.TEXT: (("text",), ()),
    DataFormat.PROMPT_ONLY: (("prompt",), ()),
}

CANONICAL_FIELDS = sorted({f for req, opt in FORMAT_FIELDS.values() for f in req + opt})

# Column names seen in public datasets, best match first. Compared after
# lower-casing and turning spaces and hyphens into underscores.
_CONVERSATION_ALIASES = ("messages", "conversations", "conversation", "chat", "dialog", "dialogue")
FIELD_ALIASES: dict[str, tuple[str, ...]] = {
    "prompt": ("prompt", "question", "query", "instruction", "problem", "input", "user_prompt", "user"),
    "chosen": (
        "chosen",
        "chosen_response",
        "response_chosen",
        "chosen_answer",
        "chosen_text",
        "preferred",
        "preferred_response",
        "accepted",
        "positive",
        "good",
    ),
    "rejected": (
        "rejected",
        "rejected_response",
        "response_rejected",
        "rejected_answer",
        "rejected_text",
        "dispreferred",
        "dispreferred_response",
        "negative",
        "bad",
    ),
    "completion": ("completion", "response", "answer", "output", "reply", "target", "assistant"),
    "label": ("label", "labels", "kto_tag", "kto_label", "is_good", "good_or_bad", "is_desirable", "desirable",
              "thumbs_up", "thumbs", "thumb", "feedback", "human_feedback", "is_positive"),
    "instruction": ("instruction", "instructions"),
    "input": ("input", "context"),
    "output": ("output", "response"),
    "text": ("text", "content", "document", "body"),
    "messages": _CONVERSATION_ALIASES,
    "conversations": ("conversations",) + tuple(a for a in _CONVERSATION_ALIASES if a != "conversations"),
}

_ROLE_ALIASES = {
    "user": "user",
    "human": "user",
    "prompter": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "model": "assistant",
    "bot": "assistant",
    "chatgpt": "assistant",
    "bard": "assistant",
    "bing": "assistant",
    "system": "system",
    "tool": "tool",
    "function": "tool",
    "observation": "tool",
    "ipython": "tool",
}

# Reason codes (stable, for counting) and their wording in reports.
REASON_LABELS = {
    "invalid_json": "not valid JSON",
    "not_object": "not a JSON object",
    "too_long": "row too long",
    "bad_csv_row": "broken CSV row",
    "missing": "missing or empty value",
    "not_text": "not text",
    "empty": "empty text",
    "bad_messages": "malformed chat messages",
    "no_shared_prompt": "no prompt could be found",
    "bad_label": "label is not good/bad",
    "identical_pair": "chosen identical to rejected",
    "mixed_types": "value unlike the rest of its column",
    # Not "duplicate row": followed by a count or a row number it read as "a duplicate of row 5".
    "duplicate": "repeated rows",
}

# What to do about each reason, for the message shown when no row is usable.
REASON_HINTS = {
    "invalid_json": "Each line must hold one complete JSON object; fix or remove the lines named.",
    "not_object": (
        'Each row must be a JSON object with named fields, such as {"prompt": "…", "chosen": "…", '
        '"rejected": "…"}.'
    ),
    "too_long": "Put each row on a line of its own; a single row may be at most 16 MB.",
    "bad_csv_row": (
        "Every row needs as many values as the header has columns; put quotes around values "
        "that contain the separator."
    ),
    "missing": "Fill in the missing values, or choose which column holds each field by hand.",
    "not_text": "These fields must hold text (in quotes), not numbers, lists or objects.",
    "empty": "Write the missing text, or remove those rows.",
    "bad_messages": (
        "Chat messages need a 'role' (user, assistant or system) and a 'content' text, "
        "and at least one assistant reply."
    ),
    "no_shared_prompt": "Add a prompt column, or let chosen and rejected begin with the same conversation.",
    "bad_label": "Use true/false, good/bad, 1/0 or thumbs up/down as the label.",
    "identical_pair": "A pair teaches something only when the chosen answer differs from the rejected one.",
    "mixed_types": "Write every value of a column the same way (all text, all numbers or all lists).",
    "duplicate": "Remove the repeated rows.",
}


class RowProblem(Exception):
    """Why one row cannot be used; the loader turns it into a DroppedRow."""

    def __init__(self, field: str | None, reason: str, code: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason
        self.code = code


@dataclass
class DroppedRow:
    """A source row left out, and why.

    ``line`` is the 1-based line in the file for JSON Lines and CSV, and the
    1-based row number for JSON, Parquet and Arrow (``LoadedDataset.position_unit``).
    ``code`` is a stable reason key (see ``REASON_LABELS``).
    """

    line: int
    field: str | None
    reason: str
    code: str = "other"


@dataclass
class FormatDetection:
    """What was recognised in a file and how to read its rows.

    ``conversational``: the normalised rows hold message lists rather than
    strings (decided once per file, because a dataset column has one type).
    ``hh_transcripts``: implicit-prompt rows are Anthropic HH transcripts.
    """

    format: DataFormat
    column_mapping: dict[str, str]
    conversational: bool = False
    hh_transcripts: bool = False
    notes: list[str] = field(default_factory=list)
    # Prompts only: source columns kept as they are (graders read them by name), each
    # with the kind of value it holds (``_extra_kind``).
    extra_columns: dict[str, str] = field(default_factory=dict)

    @property
    def output_columns(self) -> list[str]:
        return list(output_schema(self).names)


def _norm_name(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", str(name).strip().lower())


# ---------------------------------------------------------------- detection


def detect_format(
    columns: list[str],
    sample: list[dict[str, Any]],
    *,
    forced: DataFormat | None = None,
    column_map: dict[str, str] | None = None,
    path: str | os.PathLike | None = None,
) -> FormatDetection:
    """Recognise the format from column names and the values of ``sample``.

    ``forced`` skips recognition (the user picked the format); ``column_map``
    (canonical field -> source column) wins over the aliases.
    """
    # An empty choice in the GUI's mapping means "work it out", not "no column".
    column_map = {fld: col for fld, col in (column_map or {}).items() if col}
    by_name = {}
    for col in columns:
        by_name.setdefault(_norm_name(col), col)
    _check_column_map(column_map, columns, by_name, path)

    def resolve(fld: str, taken: set[str]) -> str | None:
        if fld in column_map:
            wanted = column_map[fld]
            return wanted if wanted in columns else by_name.get(_norm_name(wanted))
        for alias in FIELD_ALIASES.get(fld, (fld,)):
            col = by_name.get(alias)
            if col is not None and col not in taken:
                return col
        return None

    def mapping_for(fmt: DataFormat) -> tuple[dict[str, str], list[str]]:
        required, optional = FORMAT_FIELDS[fmt]
        mapping: dict[str, str] = {}
        missing = []
        for fld in required + optional:
            col = resolve(fld, set(mapping.values()))
            if col is not None:
                mapping[fld] = col
            elif fld in required:
                missing.append(fld)
        return mapping, missing

    kinds = _ValueKinds(sample)

    if forced is not None:
        mapping, missing = mapping_for(forced)
        if missing:
            raise _missing_fields_error(forced, missing, columns, path)
        if forced is DataFormat.UNPAIRED_PREFERENCE:
            detection = _unpaired_detection(mapping, kinds, columns, path, by_hand=set(column_map))
        else:
            detection = _with_style(forced, mapping, kinds)
    else:
        detection = _recognise(mapping_for, kinds, columns, path)

    if detection.format is DataFormat.PROMPT_ONLY:
        _keep_other_columns(detection, columns, kinds)
    detection.notes[:0] = _mapping_notes(detection.column_mapping, columns, detection.extra_columns)
    return detection


def _check_column_map(column_map, columns, by_name, path) -> None:
    for fld, col in column_map.items():
        if fld not in CANONICAL_FIELDS:
            raise DatasetError(
                f"'{fld}' is not a field AlignStudio knows; use one of {', '.join(CANONICAL_FIELDS)}.",
                path=path,
                columns=list(columns),
            )
        if col not in columns and _norm_name(col) not in by_name:
            raise DatasetError(
                f"The column '{col}' chosen for '{fld}' is not in this file. "
                f"Its columns are: {', '.join(map(str, columns)) or 'none'}.",
                path=path,
                field=fld,
                columns=list(columns),
            )


def _recognise(mapping_for, kinds: "_ValueKinds", columns, path) -> FormatDetection:
    pref, pref_missing = mapping_for(DataFormat.PREFERENCE)
    has_pair = "chosen" in pref and "rejected" in pref
    if has_pair:
        share, share_missing = mapping_for(DataFormat.SHAREGPT_PREFERENCE)
        if not share_missing and kinds.of(share["conversations"]) == "messages":
            return _with_style(DataFormat.SHAREGPT_PREFERENCE, share, kinds)
        if "prompt" in pref:
            return _with_style(DataFormat.PREFERENCE, pref, kinds)
        pair = {"chosen": pref["chosen"], "rejected": pref["rejected"]}
        if kinds.of(pair["chosen"]) == "messages":
            return _with_style(DataFormat.PREFERENCE_CONVERSATIONAL, pair, kinds)
        return _with_style(DataFormat.PREFERENCE_IMPLICIT_PROMPT, pair, kinds)

    chat, missing = mapping_for(DataFormat.MESSAGES)
    if not missing and kinds.of(chat["messages"]) == "messages":
        # A conversation with a good/bad label judges its last reply: unpaired preference,
        # not a demonstration to imitate (thumbs-down answers included).
        judged, _ = mapping_for(DataFormat.UNPAIRED_PREFERENCE)
        if "label" in judged and kinds.of(judged["label"]) == "label":
            return _unpaired_detection({"messages": chat["messages"], "label": judged["label"]}, kinds,
                                       columns, path)
        # One column name is used both ways in the wild, so the message keys decide.
        if kinds.uses_sharegpt_keys(chat["messages"]):
            return _with_style(DataFormat.SHAREGPT, {"conversations": chat["messages"]}, kinds)
        return _with_style(DataFormat.MESSAGES, chat, kinds)

    unpaired, missing = mapping_for(DataFormat.UNPAIRED_PREFERENCE)
    if (not missing and "prompt" in unpaired and "completion" in unpaired
            and kinds.of(unpaired["label"]) == "label"):
        return _unpaired_detection(unpaired, kinds, columns, path)

    for fmt in (DataFormat.ALPACA, DataFormat.PROMPT_COMPLETION, DataFormat.TEXT):
        mapping, missing = mapping_for(fmt)
        if not missing:
            return _with_style(fmt, mapping, kinds)

    # A prompt and no answer of any kind: prompts for a method that samples and grades its
    # own answers. A lone chosen or rejected column is a broken pair, not extra data.
    prompts, _ = mapping_for(DataFormat.PROMPT_ONLY)
    if (prompts and kinds.of(prompts["prompt"]) in ("text", "messages")
            and "chosen" not in pref and "rejected" not in pref):
        return _with_style(DataFormat.PROMPT_ONLY, prompts, kinds)

    # Nothing complete: name what the closest format lacks, so the person can
    # rename a column or map it by hand.
    best = None
    for rank, fmt in enumerate(DataFormat):
        if fmt in (DataFormat.UNPAIRED_PREFERENCE, DataFormat.PROMPT_ONLY):
            continue
        mapping, missing = mapping_for(fmt)
        distinctive = [f for f in mapping if f != "input"]
        if distinctive:
            key = (-len(distinctive), len(missing), rank)
            if best is None or key < best[0]:
                best = (key, fmt, missing)
    if best is not None:
        raise _missing_fields_error(best[1], best[2], columns, path)
    raise DatasetError(
        "AlignStudio could not tell what kind of data this is. "
        f"Columns found: {', '.join(map(str, columns)) or 'none'}. "
        "Expected for example prompt/chosen/rejected (preference pairs), "
        "prompt/completion, instruction/output (Alpaca), messages or conversations "
        "(chat), or text. Rename the columns, or choose the format and map the columns by hand.",
        path=path,
        columns=list(columns),
    )


def _missing_fields_error(fmt, missing, columns, path) -> DatasetError:
    names = " and ".join(f"'{m}'" for m in missing)
    plural = "columns" if len(missing) > 1 else "a column"
    return DatasetError(
        f"This looks like {fmt.label}, which needs {plural} {names}, but the file has none. "
        f"Columns found: {', '.join(map(str, columns)) or 'none'}. "
        f"Rename a column to {names} or map it by hand.",
        path=path,
        field=missing[0],
        columns=list(columns),
    )


def _with_style(fmt: DataFormat, mapping: dict[str, str], kinds: "_ValueKinds") -> FormatDetection:
    det = FormatDetection(fmt, mapping)
    if fmt in (DataFormat.PREFERENCE_CONVERSATIONAL, DataFormat.SHAREGPT_PREFERENCE):
        det.conversational = True
    elif fmt in (DataFormat.PREFERENCE, DataFormat.PROMPT_COMPLETION, DataFormat.UNPAIRED_PREFERENCE):
        fields = [f for f in ("prompt", "chosen", "rejected", "completion") if f in mapping]
        if any(kinds.of(mapping[f]) == "messages" for f in fields):
            det.conversational = True
            if fmt is DataFormat.PREFERENCE:
                det.format = DataFormat.PREFERENCE_CONVERSATIONAL
            det.notes.append("Values are chat messages, so the conversational form is kept.")
    elif fmt is DataFormat.PREFERENCE_IMPLICIT_PROMPT:
        det.hh_transcripts = kinds.looks_like_hh(mapping["chosen"])
        det.conversational = det.hh_transcripts
        if det.hh_transcripts:
            det.notes.append(
                "Chosen and rejected are Human/Assistant transcripts: the shared conversation "
                "became the prompt (as chat messages) and the final replies became chosen and rejected."
            )
        else:
            det.notes.append(
                "There is no prompt column: the shared beginning of chosen and rejected became the prompt."
            )
    if fmt is DataFormat.SHAREGPT:
        det.notes.append("ShareGPT 'from'/'value' turns were converted to 'role'/'content' messages.")
    if fmt is DataFormat.ALPACA:
        det.notes.append("The prompt is the instruction, followed by the input when there is one.")
    if fmt is DataFormat.PROMPT_ONLY:
        det.conversational = kinds.of(mapping["prompt"]) == "messages"
    return det


def _unpaired_detection(mapping: dict[str, str], kinds: "_ValueKinds", columns, path,
                        by_hand: set[str] = frozenset()) -> FormatDetection:
    """Unpaired preference in one of its two shapes: prompt and completion, or a whole
    conversation (OpenAI messages or ShareGPT turns) whose last assistant turn is the judged
    answer. A conversation mapped by hand wins; otherwise prompt and completion do."""
    label = {"label": mapping["label"]}
    whole = "messages" in mapping and ("messages" in by_hand or not {"prompt", "completion"} <= set(mapping))
    if whole:
        det = FormatDetection(DataFormat.UNPAIRED_PREFERENCE, {"messages": mapping["messages"], **label},
                              conversational=True)
        det.notes.append("Each conversation's last assistant turn is the answer the label judges; the turns "
                         "before it are the prompt.")
        if kinds.uses_sharegpt_keys(mapping["messages"]):
            det.notes.append("ShareGPT 'from'/'value' turns were converted to 'role'/'content' messages.")
        return det
    missing = [f for f in ("prompt", "completion") if f not in mapping]
    if missing:
        names = " and ".join(f"'{m}'" for m in missing)
        raise DatasetError(
            f"{DataFormat.UNPAIRED_PREFERENCE.label} needs either {names} beside the label, or a whole "
            "conversation ('messages' or 'conversations') whose last assistant turn the label judges. "
            f"Columns found: {', '.join(map(str, columns)) or 'none'}. Map them by hand.",
            path=path, field=missing[0], columns=list(columns))
    pair = {"prompt": mapping["prompt"], "completion": mapping["completion"], **label}
    return _with_style(DataFormat.UNPAIRED_PREFERENCE, pair, kinds)


def _mapping_notes(mapping: dict[str, str], columns: list[str], kept: dict[str, str]) -> list[str]:
    notes = [f"Column '{src}' is used as '{fld}'." for fld, src in mapping.items() if src != fld]
    if kept:
        json_text = [c for c, kind in kept.items() if kind == "json"]
        notes.append(f"Kept as they are, for graders to read by name: {', '.join(map(str, kept))}."
                     + (f" Nested values in {', '.join(json_text)} are kept as JSON text." if json_text else ""))
    unused = [c for c in columns if c not in mapping.values() and c not in kept]
    if unused:
        notes.append(f"Ignored columns: {', '.join(map(str, unused))}.")
    return notes


def _keep_other_columns(detection: FormatDetection, columns: list[str], kinds: "_ValueKinds") -> None:
    used = set(detection.column_mapping.values())
    for col in columns:
        # The normalised prompt is called 'prompt', so a second column of that name cannot stay.
        if col in used or str(col) in detection.column_mapping:
            continue
        detection.extra_columns[str(col)] = _extra_kind(kinds._values(col))


def _extra_kind(values: list[Any]) -> str:
    """The column type a kept column gets, from its first values: one of string, int,
    float, bool, list_string, list_int, list_float, or json (anything nested deeper,
    or mixed, kept as JSON text so that no value is lost)."""
    kinds = {_scalar_kind(v) for v in values}
    if not kinds or kinds == {"string"}:
        return "string"
    if kinds <= {"int", "float"}:
        return "float" if "float" in kinds else "int"
    if kinds == {"bool"}:
        return "bool"
    if kinds <= {"string", "int", "float"}:
        return "string"
    if all(isinstance(v, list) for v in values):
        items = {_scalar_kind(item) for v in values for item in v}
        if not items or items == {"string"}:
            return "list_string"
        if items <= {"int", "float"}:
            return "list_float" if "float" in items else "list_int"
    return "json"


def _scalar_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    return "nested"


class _ValueKinds:
    """What the first rows hold in each column: text, messages, a label..."""

    def __init__(self, sample: list[dict[str, Any]]) -> None:
        self._sample = sample

    def _values(self, col: str, limit: int = 20) -> list[Any]:
        values = []
        for row in self._sample:
            value = row.get(col)
            if value is not None and not _is_nan(value):
                values.append(_maybe_json_list(value))
                if len(values) >= limit:
                    break
        return values

    def of(self, col: str) -> str:
        votes: dict[str, int] = {}
        for value in self._values(col):
            if isinstance(value, bool):
                kind = "label"
            elif isinstance(value, str):
                kind = "label" if _label_word(value) in _LABEL_WORDS else "text"
            elif isinstance(value, list) and value and all(isinstance(m, dict) for m in value):
                kind = "messages"
            elif isinstance(value, dict):
                kind = "message"
            elif isinstance(value, (int, float)) and value in (0, 1, -1):
                kind = "label"
            else:
                kind = "other"
            votes[kind] = votes.get(kind, 0) + 1
        return max(votes, key=votes.get) if votes else "none"

    def uses_sharegpt_keys(self, col: str) -> bool:
        for value in self._values(col):
            if isinstance(value, list):
                for msg in value:
                    if isinstance(msg, dict):
                        return "from" in msg or "value" in msg
        return False

    def looks_like_hh(self, col: str) -> bool:
        texts = [v for v in self._values(col) if isinstance(v, str)]
        hits = sum(1 for t in texts if "Human:" in t and "Assistant:" in t)
        return bool(texts) and hits * 2 >= len(texts)


# How people write a thumbs up or down, compared after _label_word.
_GOOD_WORDS = {"true", "good", "yes", "1", "+1", "desirable", "positive", "pos", "thumbs up", "thumb up", "thumbsup",
               "up", "\N{THUMBS UP SIGN}", "like", "liked", "accept", "accepted", "chosen", "correct", "helpful",
               "pass"}
_BAD_WORDS = {"false", "bad", "no", "0", "-1", "undesirable", "negative", "neg", "thumbs down", "thumb down",
              "thumbsdown", "down", "\N{THUMBS DOWN SIGN}", "dislike", "disliked", "reject", "rejected",
              "incorrect", "unhelpful", "fail"}
_LABEL_WORDS = _GOOD_WORDS | _BAD_WORDS


def _label_word(text: str) -> str:
    # "Thumbs-Up", "thumbs_up" and "👍🏽" all say the same thing.
    word = re.sub(r"(?<=[a-z])[\s_\-]+(?=[a-z])", " ", text.strip().lower())
    return re.sub("[\U0001F3FB-\U0001F3FF\uFE0F]", "", word)


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _maybe_json_list(value: Any) -> Any:
    # CSV cells can only hold text, so chat messages arrive there as JSON.
    if isinstance(value, str) and value.lstrip().startswith("[") and value.rstrip().endswith("]"):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


# ------------------------------------------------------------ normalisation


def output_schema(detection: FormatDetection):
    """Column types of the normalised dataset (TRL's naming), as a pyarrow schema.

    Built with pyarrow alone: the window's loader turns rows into Arrow and reports on
    them without importing `datasets`, which costs about a second of start-up."""
    import pyarrow as pa

    text = pa.string()
    message = pa.list_(pa.struct([("role", text), ("content", text)]))
    fmt = detection.format
    text_or_messages = message if detection.conversational else text
    if fmt.is_paired_preference:
        columns = [("prompt", text_or_messages), ("chosen", text_or_messages), ("rejected", text_or_messages)]
    elif fmt is DataFormat.UNPAIRED_PREFERENCE:
        columns = [("prompt", text_or_messages), ("completion", text_or_messages), ("label", pa.bool_())]
    elif fmt in (DataFormat.SHAREGPT, DataFormat.MESSAGES):
        columns = [("messages", message)]
    elif fmt in (DataFormat.ALPACA, DataFormat.PROMPT_COMPLETION):
        columns = [("prompt", text_or_messages), ("completion", text_or_messages)]
    elif fmt is DataFormat.PROMPT_ONLY:
        types = {"string": text, "json": text, "int": pa.int64(), "float": pa.float64(), "bool": pa.bool_(),
                 "list_string": pa.list_(text), "list_int": pa.list_(pa.int64()),
                 "list_float": pa.list_(pa.float64())}
        columns = [("prompt", text_or_messages),
                   *((col, types[kind]) for col, kind in detection.extra_columns.items())]
    else:
        columns = [("text", text)]
    return pa.schema(columns)


def normalise_row(detection: FormatDetection, row: dict[str, Any]) -> dict[str, Any]:
    """One source row in TRL's shape, or RowProblem saying why it can't be."""
    fmt = detection.format
    m = detection.column_mapping
    if fmt is DataFormat.PREFERENCE:
        out = {k: _text(row, m[k]) for k in ("prompt", "chosen", "rejected")}
        _check_not_identical(out["chosen"], out["rejected"], m)
        return out
    if fmt is DataFormat.PREFERENCE_CONVERSATIONAL:
        return _conversational_pair(row, m)
    if fmt is DataFormat.PREFERENCE_IMPLICIT_PROMPT:
        chosen, rejected = _text(row, m["chosen"]), _text(row, m["rejected"])
        _check_not_identical(chosen, rejected, m)
        if detection.hh_transcripts:
            return _split_hh(chosen, rejected, m)
        return _split_plain(chosen, rejected, m)
    if fmt is DataFormat.SHAREGPT_PREFERENCE:
        prompt = _messages(row, m["conversations"])
        chosen = _reply(row, m["chosen"])
        rejected = _reply(row, m["rejected"])
        if chosen == rejected:
            raise _identical(m)
        return {"prompt": prompt, "chosen": chosen, "rejected": rejected}
    if fmt is DataFormat.UNPAIRED_PREFERENCE:
        if "messages" in m:
            out = _judged_turn(_messages(row, m["messages"]), m["messages"])
        else:
            out = _prompt_and_completion(row, m["prompt"], m["completion"], detection.conversational)
        out["label"] = _label(row, m["label"])
        return out
    if fmt in (DataFormat.SHAREGPT, DataFormat.MESSAGES):
        col = m["conversations"] if fmt is DataFormat.SHAREGPT else m["messages"]
        messages = _messages(row, col)
        if not any(msg["role"] == "assistant" for msg in messages):
            raise RowProblem(col, "has no assistant reply to learn from", "bad_messages")
        return {"messages": messages}
    if fmt is DataFormat.ALPACA:
        instruction = _text(row, m["instruction"])
        extra = _optional_text(row, m.get("input"))
        output = _text(row, m["output"])
        prompt = f"{instruction}\n\n{extra}" if extra.strip() else instruction
        return {"prompt": prompt, "completion": output}
    if fmt is DataFormat.PROMPT_COMPLETION:
        return _prompt_and_completion(row, m["prompt"], m["completion"], detection.conversational)
    if fmt is DataFormat.PROMPT_ONLY:
        prompt = (_messages(row, m["prompt"], default_role="user") if detection.conversational
                  else _text(row, m["prompt"]))
        out = {"prompt": prompt}
        for col, kind in detection.extra_columns.items():
            out[col] = _kept_value(row.get(col), col, kind)
        return out
    return {"text": _text(row, m["text"])}


_KIND_WORDS = {"string": "text", "int": "whole numbers", "float": "numbers", "bool": "true/false",
               "list_string": "lists of text", "list_int": "lists of whole numbers",
               "list_float": "lists of numbers"}


def _kept_value(value: Any, col: str, kind: str) -> Any:
    """A kept column's value in the column's type; a value that cannot take it is a
    RowProblem naming the column, never a silent change of meaning."""
    if value is None or _is_nan(value):
        return None
    if kind == "json":
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    if kind == "string":
        # A bare number in a column of text answers (42 among "41"s) is the same answer.
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    elif kind == "bool":
        if isinstance(value, bool):
            return value
    elif kind in ("int", "float"):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if kind == "float":
                return float(value)
            if float(value).is_integer():
                return int(value)
    else:
        value = _maybe_json_list(value)
        if isinstance(value, list):
            try:
                return [_kept_value(item, col, kind[len("list_"):]) for item in value]
            except RowProblem:
                pass
    held = f"is text ({value[:40]!r})" if isinstance(value, str) else _describe(value)
    raise RowProblem(col, f"{held}, but the earlier rows of this column hold {_KIND_WORDS[kind]}", "mixed_types")


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return f"is true/false ({value})"
    if isinstance(value, (int, float)):
        return f"is a number ({value})"
    if isinstance(value, dict):
        return "is an object ({...})"
    if isinstance(value, list):
        return "is a list ([...])"
    return f"is of type {type(value).__name__}"


def _absent(row: dict[str, Any], col: str) -> RowProblem:
    # Naming what the row does hold makes a row of another format (a single
    # answer among preference pairs, say) recognisable at a glance.
    held = ", ".join(map(str, list(row)[:8])) or "no fields at all"
    return RowProblem(col, f"is missing (this row has {held})", "missing")


def _text(row: dict[str, Any], col: str) -> str:
    if col not in row:
        raise _absent(row, col)
    value = row[col]
    if value is None:
        raise RowProblem(col, "is empty (null)", "missing")
    if _is_nan(value):
        raise RowProblem(col, "is empty (NaN)", "missing")
    if not isinstance(value, str):
        raise RowProblem(col, f"{_describe(value)}, but text was expected", "not_text")
    if not value.strip():
        raise RowProblem(col, "is empty", "empty")
    return value


def _optional_text(row: dict[str, Any], col: str | None) -> str:
    if col is None or row.get(col) is None or _is_nan(row.get(col)):
        return ""
    value = row[col]
    if not isinstance(value, str):
        raise RowProblem(col, f"{_describe(value)}, but text was expected", "not_text")
    return value


def _judged_turn(messages: list[dict[str, str]], col: str) -> dict[str, Any]:
    last = max((i for i, msg in enumerate(messages) if msg["role"] == "assistant"), default=None)
    if last is None:
        raise RowProblem(col, "has no assistant reply for the label to judge", "bad_messages")
    if last < len(messages) - 1:
        raise RowProblem(col, f"goes on after the last assistant reply ({messages[-1]['role']} turn at the end); "
                              "the judged reply must be the last message", "bad_messages")
    if not any(msg["role"] == "user" for msg in messages[:last]):
        raise RowProblem(col, "has no user turn before the judged assistant reply", "bad_messages")
    return {"prompt": messages[:last], "completion": messages[last:]}


def _label(row: dict[str, Any], col: str) -> bool:
    value = row.get(col)
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1, -1):
        return value == 1
    if isinstance(value, str):
        word = _label_word(value)
        if word in _GOOD_WORDS:
            return True
        if word in _BAD_WORDS:
            return False
    raise RowProblem(col, f"should say good or bad (true/false, 1/0, thumbs up/down), found {value!r}",
                     "bad_label")


def _check_not_identical(chosen: Any, rejected: Any, m: dict[str, str]) -> None:
    same = chosen.strip() == rejected.strip() if isinstance(chosen, str) else chosen == rejected
    if same:
        raise _identical(m)


def _identical(m: dict[str, str]) -> RowProblem:
    return RowProblem(
        m.get("rejected"), "chosen and rejected are identical, so the pair teaches nothing", "identical_pair"
    )


def _content_text(content: Any) -> str | None:
    if isinstance(content, str):
        return content
    # Multimodal-style content: a list of typed parts, of which text is kept.
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
        if parts:
            return "\n".join(parts)
    return None


def _message(item: Any, col: str, position: int, default_role: str | None = None) -> dict[str, str]:
    where = f"message {position}"
    if isinstance(item, str) and default_role:
        if not item.strip():
            raise RowProblem(col, f"{where} is empty", "empty")
        return {"role": default_role, "content": item}
    if not isinstance(item, dict):
        raise RowProblem(col, f"{where} {_describe(item)}, but a message object was expected", "bad_messages")
    raw_role = item.get("role", item.get("from", default_role))
    if not isinstance(raw_role, str):
        raise RowProblem(col, f"{where} has no 'role' (or 'from')", "bad_messages")
    role = _ROLE_ALIASES.get(raw_role.strip().lower())
    if role is None:
        raise RowProblem(
            col, f"{where} has an unknown speaker '{raw_role}' (use user, assistant or system)", "bad_messages"
        )
    raw_content = item.get("content", item.get("value", item.get("text")))
    content = _content_text(raw_content)
    if content is None:
        raise RowProblem(col, f"{where} has no text ('content' or 'value')", "bad_messages")
    if not content.strip():
        raise RowProblem(col, f"{where} is empty", "empty")
    return {"role": role, "content": content}


def _messages(row: dict[str, Any], col: str, default_role: str | None = None) -> list[dict[str, str]]:
    if col not in row:
        raise _absent(row, col)
    if row[col] is None:
        raise RowProblem(col, "is empty (null)", "missing")
    value = _maybe_json_list(row[col])
    if isinstance(value, str) and default_role:
        return [_message(value, col, 1, default_role)]
    if not isinstance(value, list):
        raise RowProblem(col, f"{_describe(value)}, but a list of chat messages was expected", "bad_messages")
    if not value:
        raise RowProblem(col, "is an empty list of messages", "empty")
    return [_message(item, col, i, None) for i, item in enumerate(value, 1)]


def _reply(row: dict[str, Any], col: str) -> list[dict[str, str]]:
    """A chosen/rejected answer: one message object, text, or a message list."""
    if col not in row:
        raise _absent(row, col)
    if row[col] is None:
        raise RowProblem(col, "is empty (null)", "missing")
    value = _maybe_json_list(row[col])
    if isinstance(value, dict):
        return [_message(value, col, 1, "assistant")]
    return _messages(row, col, default_role="assistant")


def _prompt_and_completion(row, prompt_col: str, completion_col: str, conversational: bool) -> dict[str, Any]:
    if conversational:
        return {
            "prompt": _messages(row, prompt_col, default_role="user"),
            "completion": _messages(row, completion_col, default_role="assistant"),
        }
    return {"prompt": _text(row, prompt_col), "completion": _text(row, completion_col)}


def _conversational_pair(row: dict[str, Any], m: dict[str, str]) -> dict[str, Any]:
    chosen = _reply(row, m["chosen"])
    rejected = _reply(row, m["rejected"])
    if chosen == rejected:
        raise _identical(m)
    shared = 0
    while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
        shared += 1
    if shared:
        # Whole conversations: what both share is the prompt, so an extra
        # prompt column (often a copy of the first user turn) is not needed.
        prompt, chosen, rejected = chosen[:shared], chosen[shared:], rejected[shared:]
        if not chosen or not rejected:
            col = m["chosen"] if not chosen else m["rejected"]
            raise RowProblem(
                col, "has no reply after the conversation it shares with the other answer", "empty"
            )
        return {"prompt": prompt, "chosen": chosen, "rejected": rejected}
    if "prompt" not in m:
        raise RowProblem(
            m["chosen"],
            "chosen and rejected share no opening messages and there is no prompt column",
            "no_shared_prompt",
        )
    return {
        "prompt": _messages(row, m["prompt"], default_role="user"),
        "chosen": chosen,
        "rejected": rejected,
    }


_HH_TURN = re.compile(r"\n\n(Human|Assistant):")
_HH_ASSISTANT = "\n\nAssistant:"


def _hh_turns(text: str, first_role: str | None = None) -> list[dict[str, str]]:
    parts = _HH_TURN.split(text)
    turns = []
    lead = parts[0].strip()
    if lead:
        turns.append({"role": first_role or "system", "content": lead})
    for speaker, content in zip(parts[1::2], parts[2::2]):
        turns.append({"role": "user" if speaker == "Human" else "assistant", "content": content.strip()})
    return turns


def _split_hh(chosen: str, rejected: str, m: dict[str, str]) -> dict[str, Any]:
    chosen, rejected = (t if t.startswith("\n\n") else "\n\n" + t.lstrip() for t in (chosen, rejected))
    common = os.path.commonprefix([chosen, rejected])
    cut = common.rfind(_HH_ASSISTANT)
    if cut < 0:
        raise RowProblem(
            m["chosen"],
            "chosen and rejected do not share a conversation ending in an 'Assistant:' turn",
            "no_shared_prompt",
        )
    prompt = _hh_turns(chosen[:cut])
    if not prompt:
        raise RowProblem(
            m["chosen"], "there is no Human turn before the assistant's reply", "no_shared_prompt"
        )
    out = {"prompt": prompt}
    for name, text in (("chosen", chosen), ("rejected", rejected)):
        reply = _hh_turns(text[cut + len(_HH_ASSISTANT) :], first_role="assistant")
        if not reply or any(not t["content"] for t in reply):
            raise RowProblem(m[name], "the assistant's reply is empty", "empty")
        out[name] = reply
    return out


def _split_plain(chosen: str, rejected: str, m: dict[str, str]) -> dict[str, Any]:
    common = os.path.commonprefix([chosen, rejected])
    # Cut after the last whitespace so no word is split between prompt and answer.
    cut = max((i + 1 for i, ch in enumerate(common) if ch.isspace()), default=0)
    if not common[:cut].strip():
        raise RowProblem(
            m["chosen"], "chosen and rejected do not begin with a shared prompt", "no_shared_prompt"
        )
    out = {"prompt": chosen[:cut], "chosen": chosen[cut:], "rejected": rejected[cut:]}
    for name in ("chosen", "rejected"):
        if not out[name].strip():
            raise RowProblem(m[name], "nothing is left of the answer after the shared prompt", "empty")
    return out
