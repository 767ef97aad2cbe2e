"""Where the Compare tab's prompts come from: a run's held-out split, its training
data, or the dataset loaded in the Train tab.

Plain functions over rows in TRL's columns; no Qt, no torch. A prompt keeps the
form it was trained in (a string, or a list of messages), so a picked prompt is
sent exactly as the run saw its kind during training.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from backend.data.prompt_rendering import display_text, read_heldout_rows, row_prompt

# Prompts offered per source: enough to browse, few enough for a combo box.
PICKER_LIMIT = 200
LABEL_CHARS = 90

SOURCE_TITLES = {
    "heldout": "Held-out split",
    "training": "Training data",
    "dataset": "Loaded dataset",
}


@dataclass
class PromptChoice:
    """One pickable prompt. ``row`` is the whole row (chosen/rejected included)."""

    label: str
    prompt: Any
    source: str
    row: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return display_text(self.prompt)


def one_line(text: str, limit: int = LABEL_CHARS) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def choices_from_rows(rows: list[dict[str, Any]], source: str, limit: int = PICKER_LIMIT) -> list[PromptChoice]:
    """Rows with a prompt, first ``limit`` of them, duplicates of a prompt dropped."""
    out: list[PromptChoice] = []
    seen: set[str] = set()
    for row in rows:
        if not isinstance(row, dict):
            continue
        prompt = row_prompt(row)
        if prompt is None:
            continue
        text = display_text(prompt)
        if text in seen:
            continue
        seen.add(text)
        out.append(PromptChoice(label=one_line(text), prompt=prompt, source=source, row=row))
        if len(out) >= limit:
            break
    return out


def heldout_choices(run_dir: str | None, limit: int = PICKER_LIMIT) -> list[PromptChoice]:
    if not run_dir:
        return []
    return choices_from_rows(read_heldout_rows(run_dir), "heldout", limit)


def rows_of_loaded_dataset(loaded: Any, limit: int = PICKER_LIMIT * 2) -> list[dict[str, Any]]:
    """The first rows of a ``LoadedDataset`` (its normalised TRL columns), read from Arrow:
    this runs on the GUI thread, where importing `datasets` would freeze the window."""
    from backend.data.loading import head_rows

    return head_rows(loaded, limit) if loaded is not None else []


def read_training_rows(run_dir: str, limit: int = PICKER_LIMIT * 2) -> list[dict[str, Any]]:
    """The first rows of a run's training data file, read the way training read it.
    Slow for big files (the datasets library): call it off the GUI thread."""
    from backend.data.loading import load_dataset_file
    from backend.runs.folder import load_run_config

    cfg = load_run_config(run_dir)
    if not cfg.data_path:
        return []
    loaded = load_dataset_file(cfg.data_path, cfg.data_format or None, cfg.column_map or None)
    return rows_of_loaded_dataset(loaded, limit)
