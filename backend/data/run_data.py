"""The training data a run config names: one file, folder or hub dataset, with its
held-out split, or several mixed (``data_mix``); and what the run folder records
about where the rows came from (``data_source.json``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from backend.data.loading import LoadedDataset, load_dataset_file

DATA_SOURCE_FILE = "data_source.json"


def load_run_data(cfg, progress: Callable[[int, int], None] | None = None,
                  should_stop: Callable[[], bool] | None = None) -> LoadedDataset:
    """The rows ``cfg`` trains on (``data_path``, split, subset, revision, mix) and, in
    ``heldout``, the split it holds out when the dataset has one."""
    from backend.data.mixing import mix_datasets, mix_shares

    shares = mix_shares(cfg.data_path, cfg.data_mix)
    main = load_dataset_file(cfg.data_path, format=cfg.data_format or None, column_map=cfg.column_map or None,
                             split=cfg.data_split, subset=cfg.data_subset, revision=cfg.data_revision,
                             eval_split=cfg.eval_split, progress=progress, should_stop=should_stop)
    if len(shares) == 1:
        return main
    parts = [(main, shares[0][1])]
    for source, share in shares[1:]:
        parts.append((load_dataset_file(source, eval_split="none", should_stop=should_stop), share))
    return mix_datasets(parts, cfg.seed)


def data_source_record(loaded: LoadedDataset) -> dict[str, Any]:
    """Where the rows came from: the hub id, subset, split and revision actually read, or
    the file or folder and its split, and the held-out split."""
    record: dict[str, Any] = dict(loaded.hub) if loaded.hub else {"path": loaded.path, "split": loaded.split}
    record["heldout_split"] = loaded.heldout.split if loaded.heldout is not None else ""
    record["rows"] = loaded.rows_kept
    return record


def record_data_source(run_dir: Path, loaded: LoadedDataset) -> None:
    (Path(run_dir) / DATA_SOURCE_FILE).write_text(json.dumps(data_source_record(loaded), indent=2) + "\n",
                                                  encoding="utf-8")
