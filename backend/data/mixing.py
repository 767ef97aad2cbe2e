"""Several datasets mixed into one run, each giving a share of the training rows.

The shares are kept exactly: the mix is as large as the scarcest source allows
(a source with 100 rows and a share of 0.5 caps the mix at 200 rows), every
source gives ``share × size`` rows drawn at random with the run's seed, and the
result is shuffled so every batch sees all sources. Sources must normalise to
the same columns (all preference pairs, say, and all chat or all plain text).
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

from backend.data.formats import DatasetError
from backend.data.loading import LoadedDataset


def mix_shares(main_path: str, extra: dict[str, float] | None) -> list[tuple[str, float]]:
    """(source, share) for the main dataset and each extra one; DatasetError when the shares
    do not leave the main dataset a share of its own."""
    pairs = []
    for source, share in (extra or {}).items():
        try:
            value = float(share)
        except (TypeError, ValueError):
            raise DatasetError(f"The share of {source} in the mix is '{share}', not a number between 0 and 1.",
                               field="data_mix") from None
        if not 0 < value < 1:
            raise DatasetError(f"The share of {source} in the mix is {value}; it must lie between 0 and 1.",
                               field="data_mix")
        pairs.append((str(source), value))
    rest = 1 - sum(share for _, share in pairs)
    if pairs and rest <= 1e-9:
        raise DatasetError(
            f"The mixed-in datasets take {1 - rest:.0%} of the rows, leaving none for {Path(main_path).name}; "
            "their shares must add up to less than 1.", field="data_mix")
    return [(main_path, rest), *pairs]


def mix_datasets(parts: list[tuple[LoadedDataset, float]], seed: int) -> LoadedDataset:
    """One dataset from ``parts`` (loaded dataset, share), the first giving the held-out split."""
    from datasets import concatenate_datasets

    first = parts[0][0]
    for loaded, _ in parts[1:]:
        if loaded.dataset.features != first.dataset.features:
            raise DatasetError(
                f"{_name(loaded)} ({_shape(loaded)}) cannot be mixed with {_name(first)} ({_shape(first)}): "
                "the datasets of a mix must hold the same kind of rows.", path=loaded.path)
    size = min(len(loaded.dataset) / share for loaded, share in parts)
    taken, notes = [], []
    for loaded, share in parts:
        rows = max(1, math.floor(size * share + 1e-9))
        taken.append(loaded.dataset.shuffle(seed=seed).select(range(rows)).flatten_indices())
        notes.append(f"{_name(loaded)}: {rows} of {len(loaded.dataset)} rows ({share:.0%})")
    mixed = concatenate_datasets(taken).shuffle(seed=seed).flatten_indices()
    note = f"Mixed {len(parts)} datasets into {len(mixed)} training rows: " + "; ".join(notes) + "."
    dropped = [d for loaded, _ in parts for d in loaded.dropped]
    return replace(
        first,
        rows=mixed,
        arrow_file="",
        rows_total=sum(loaded.rows_total for loaded, _ in parts),
        rows_kept=len(mixed),
        dropped=dropped,
        notes=[*first.notes, note],
        duplicates=sum(loaded.duplicates for loaded, _ in parts),
        identical_pairs=sum(loaded.identical_pairs for loaded, _ in parts),
    )


def _name(loaded: LoadedDataset) -> str:
    return loaded.hub["id"] if loaded.hub else Path(loaded.path).name


def _shape(loaded: LoadedDataset) -> str:
    return loaded.format_label + (", chat messages" if loaded.conversational else "")
