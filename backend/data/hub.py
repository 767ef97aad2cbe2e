"""Hugging Face Hub dataset ids: telling one from a path, listing its subsets and
splits, and opening a split's rows.

A split is loaded by ``datasets.load_dataset`` into `datasets`' own cache, so a
dataset downloaded once (here or by any other program) is found again. Offline
(``HF_HUB_OFFLINE``/``HF_DATASETS_OFFLINE``) `datasets` looks only in its own
cache; a repository snapshot in the hub cache (what ``hf download --repo-type
dataset`` leaves) is read as a dataset folder instead. An id in neither cache
is refused at once, without any network call that could hang.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from backend.data.formats import DatasetError
from backend.data.readers import (
    COMPRESSION_SUFFIXES,
    DATA_SUFFIXES,
    RowSource,
    data_suffix,
    folder_splits,
    open_rows,
    table_source,
)

HUB_PREFIX = "hf://datasets/"
_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]*"
_REPO_ID = re.compile(rf"^{_NAME}/{_NAME}$")


def is_hub_id(text: str | os.PathLike) -> bool:
    """Whether ``text`` names a hub dataset (``owner/name`` or ``hf://datasets/...``)
    rather than a local file: an existing path always wins, and a name with a data
    file's suffix is taken for a mistyped path."""
    text = str(text).strip()
    if text.startswith(HUB_PREFIX):
        return True
    if not _REPO_ID.match(text) or Path(text).expanduser().exists():
        return False
    suffix = Path(text).suffix.lower()
    return not (suffix in COMPRESSION_SUFFIXES or data_suffix(Path(text)) in DATA_SUFFIXES)


def repo_id_of(text: str) -> str:
    repo_id = str(text).strip().removeprefix(HUB_PREFIX)
    if not _REPO_ID.match(repo_id):
        raise DatasetError(f"'{text}' is not a Hugging Face dataset id; write it as owner/name.")
    return repo_id


def offline() -> bool:
    import datasets

    return bool(datasets.config.HF_HUB_OFFLINE)


@dataclass
class HubSplit:
    """Where a loaded split came from, as the run folder records it."""

    repo_id: str
    subset: str
    split: str
    revision: str  # the commit the rows come from, when known
    splits: list[str] = field(default_factory=list)  # every split of the subset

    def to_dict(self) -> dict[str, object]:
        return {"id": self.repo_id, "subset": self.subset, "split": self.split, "revision": self.revision,
                "splits": self.splits}


# ---------------------------------------------------------------- listings


def list_subsets(repo_id: str) -> list[str]:
    """The dataset's configurations (subsets); offline, those in a local cache."""
    repo_id = repo_id_of(repo_id)
    if offline():
        cached = sorted(_cached_builds(repo_id))
        if cached:
            return cached
        if _snapshot(repo_id, "") is not None:
            return ["default"]
        raise _not_cached(repo_id)
    import datasets

    with _hub_errors(repo_id, ""):
        return list(datasets.get_dataset_config_names(repo_id))


def list_splits(repo_id: str, subset: str = "") -> list[str]:
    """The splits of one subset; offline, those in a local cache."""
    repo_id = repo_id_of(repo_id)
    if offline():
        builds = _cached_builds(repo_id)
        if builds:
            info = builds.get(subset or "default") or (next(iter(builds.values())) if not subset else None)
            if info is None:
                raise _unknown_subset(repo_id, subset, list(builds))
            return list(info)
        snapshot = _snapshot(repo_id, "")
        if snapshot is not None:
            return list(folder_splits(snapshot))
        raise _not_cached(repo_id)
    import datasets

    with _hub_errors(repo_id, subset):
        return list(datasets.get_dataset_split_names(repo_id, subset or None))


# ------------------------------------------------------------------ loading


def open_hub_rows(text: str, subset: str, split: str, revision: str,
                  stack: contextlib.ExitStack) -> tuple[RowSource, HubSplit]:
    """The rows of one split of a hub dataset, and where they came from."""
    import datasets

    repo_id = repo_id_of(text)
    if offline():
        builds = _cached_builds(repo_id)
        if not builds:
            snapshot = _snapshot(repo_id, revision)
            if snapshot is None:
                raise _not_cached(repo_id)
            return _snapshot_rows(repo_id, snapshot, subset, split, stack)
        if subset and subset not in builds:
            raise _unknown_subset(repo_id, subset, list(builds))
    split = split or "train"
    with _hub_errors(repo_id, subset):
        dataset = datasets.load_dataset(repo_id, subset or None, split=split, revision=revision or None)
    cache_files = dataset.cache_files
    used = Path(cache_files[0]["filename"]).parent.name if cache_files else revision
    info = HubSplit(repo_id, subset or dataset.config_name or "", split, used,
                    list(dataset.info.splits or {}) or [split])
    source = table_source(dataset, "Hugging Face dataset", repo_id)
    source.notes.insert(0, f"Loaded {repo_id}" + (f" ({info.subset})" if info.subset not in ("", "default") else "")
                        + f", split {split}, from the Hugging Face datasets cache"
                        + (f" (revision {used[:12]})." if used else "."))
    return source, info


def _snapshot_rows(repo_id: str, snapshot: Path, subset: str, split: str,
                   stack: contextlib.ExitStack) -> tuple[RowSource, HubSplit]:
    if subset and subset != "default":
        raise DatasetError(
            f"Offline, only the files of {repo_id} downloaded into the hub cache are available, and they are "
            f"read as one subset; '{subset}' cannot be chosen. Leave the subset empty, or go online once.")
    splits = folder_splits(snapshot)
    source = stack.enter_context(open_rows(snapshot, split))
    used = split or ("train" if "train" in splits else next(iter(splits), ""))
    source.notes.insert(0, f"Loaded {repo_id}, split {used}, from its download in the hub cache "
                           f"(revision {snapshot.name[:12]}).")
    return source, HubSplit(repo_id, "", used, snapshot.name, list(splits))


# -------------------------------------------------------------- the caches


def _cached_builds(repo_id: str) -> dict[str, dict[str, int]]:
    """Subsets of ``repo_id`` that `datasets` has prepared in its cache, each with its
    splits and their row counts (the layout ``<owner>___<name>/<subset>/<version>/<hash>``)."""
    import datasets
    from datasets.naming import camelcase_to_snakecase

    owner, name = repo_id.split("/")
    root = Path(datasets.config.HF_DATASETS_CACHE) / f"{owner}___{camelcase_to_snakecase(name)}"
    builds: dict[str, dict[str, int]] = {}
    for info_file in sorted(glob.glob(str(root / "*" / "*" / "*" / "dataset_info.json")), key=os.path.getmtime):
        try:
            info = json.loads(Path(info_file).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        subset = info.get("config_name") or Path(info_file).parts[-4]
        builds[subset] = {s: v.get("num_examples", 0) for s, v in (info.get("splits") or {}).items()}
    return builds


def _snapshot(repo_id: str, revision: str) -> Path | None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, repo_type="dataset", revision=revision or None,
                                      local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, ValueError, OSError):
        return None


def _not_cached(repo_id: str) -> DatasetError:
    return DatasetError(
        f"The Hugging Face dataset {repo_id} is not in the local cache, and downloads are off "
        "(HF_HUB_OFFLINE or HF_DATASETS_OFFLINE is set). Load it once while online, or load a folder "
        "with its files."
    )


def _unknown_subset(repo_id: str, subset: str, known: list[str]) -> DatasetError:
    return DatasetError(f"The Hugging Face dataset {repo_id} has no subset '{subset}' in the local cache; "
                        f"cached: {', '.join(known) or 'none'}.")


@contextlib.contextmanager
def _hub_errors(repo_id: str, subset: str):
    """`datasets`' errors, said in the studio's words with the id named."""
    from datasets.exceptions import DatasetNotFoundError

    try:
        yield
    except DatasetError:
        raise
    except DatasetNotFoundError as err:
        raise DatasetError(f"The Hugging Face dataset {repo_id} was not found: {err}. Check the id's "
                           "spelling (owner/name); a private or gated dataset needs `hf auth login`.") from None
    except ConnectionError as err:
        if offline():
            raise _not_cached(repo_id) from None
        raise DatasetError(f"The Hugging Face Hub could not be reached for {repo_id} ({err}). Check the "
                           "network connection, or load a downloaded copy of the files.") from None
    except ValueError as err:
        text = str(err)
        unknown_split = re.search(r"Unknown split \"?([^\".]+)\"?\. Should be one of \[(.*)\]", text)
        if unknown_split:
            raise DatasetError(f"The Hugging Face dataset {repo_id} has no split '{unknown_split.group(1)}'; "
                               f"it has {unknown_split.group(2).replace(chr(39), '')}.") from None
        raise DatasetError(f"The Hugging Face dataset {repo_id}"
                           + (f" ({subset})" if subset else "") + f" could not be loaded: {text}") from None
    except Exception as err:  # `datasets` raises many kinds while preparing a download
        raise DatasetError(f"The Hugging Face dataset {repo_id} could not be loaded: "
                           f"{type(err).__name__}: {str(err)[:300]}") from None
