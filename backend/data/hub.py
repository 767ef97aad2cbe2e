"""Hugging Face Hub dataset ids: telling one from a path, listing its subsets and
splits, and opening a split's rows.

A split is loaded by `datasets` (its builder) into `datasets`' own cache, so a
dataset downloaded once (here or by any other program) is found again. Online, the
split's data files are fetched into the hub cache first, one after another, so the
download can be followed (``reporting_downloads``) and stopped between chunks. Offline
(``HF_HUB_OFFLINE``/``HF_DATASETS_OFFLINE``) `datasets` looks only in its own
cache; a repository snapshot in the hub cache (what ``hf download --repo-type
dataset`` leaves) is read as a dataset folder instead. An id in neither cache
is refused at once, without any network call that could hang.
"""

from __future__ import annotations

import contextlib
import contextvars
import glob
import json
import os
import re
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

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
        if offline():
            pinned = _cached_revision_build(repo_id, subset, revision)
            dataset = (pinned.as_dataset(split=split) if pinned is not None else
                       datasets.load_dataset(repo_id, subset or None, split=split, revision=revision or None))
        else:
            dataset = _download_split(repo_id, subset, split, revision)
    cache_files = dataset.cache_files
    used = Path(cache_files[0]["filename"]).parent.name if cache_files else revision
    info = HubSplit(repo_id, subset or dataset.config_name or "", split, used,
                    list(dataset.info.splits or {}) or [split])
    source = table_source(dataset, "Hugging Face dataset", repo_id)
    source.notes.insert(0, f"Loaded {repo_id}" + (f" ({info.subset})" if info.subset not in ("", "default") else "")
                        + f", split {split}, from the Hugging Face datasets cache"
                        + (f" (revision {used[:12]})." if used else "."))
    return source, info


_FULL_COMMIT = re.compile(r"^[0-9a-f]{40}$")


def commit_of(revision: str) -> str:
    """``revision`` when it is a full commit hash, which every later load can ask for; ""
    for anything else (an old cache's own hash names no commit on the Hub)."""
    return revision if _FULL_COMMIT.match(revision or "") else ""


def recorded_revision(run_dir: str | os.PathLike, data_path: str, subset: str) -> str:
    """The commit a run's ``data_source.json`` says its rows came from, when the run read
    the hub dataset ``data_path`` (subset ``subset``); "" otherwise (a file, a mix, an older
    run folder, another dataset)."""
    from backend.data.run_data import DATA_SOURCE_FILE

    if not data_path or not is_hub_id(data_path):
        return ""
    try:
        record = json.loads((Path(run_dir) / DATA_SOURCE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    if not isinstance(record, dict) or record.get("id") != repo_id_of(data_path):
        return ""
    recorded_subset = str(record.get("subset") or "")
    if (recorded_subset if recorded_subset != "default" else "") != (subset if subset != "default" else ""):
        return ""
    return commit_of(str(record.get("revision") or ""))


def with_recorded_revision(cfg, run_dir: str | os.PathLike):
    """``cfg`` reading its hub dataset at the commit the run in ``run_dir`` trained on, so
    training it again does not quietly take a newer revision; ``cfg`` itself otherwise."""
    import dataclasses

    revision = recorded_revision(run_dir, cfg.data_path, cfg.data_subset)
    return dataclasses.replace(cfg, data_revision=revision) if revision else cfg


# ---------------------------------------------------------------- downloads


@dataclass
class DownloadProgress:
    """How far the files of a hub dataset have come down."""

    repo_id: str
    files_done: int
    files_total: int
    bytes_done: int
    bytes_total: int  # 0 while the sizes are not known
    current: str = ""  # the file coming down now
    file_done: int = 0  # its bytes so far
    file_total: int = 0  # its size, once its download has said (0 before)
    preparing: bool = False  # every file is down; `datasets` is writing its Arrow cache

    def fraction(self) -> float | None:
        """Share done, by bytes when every size is known, else by files (the current one in
        part once its size is known); None when neither is."""
        if self.bytes_total:
            return min(1.0, self.bytes_done / self.bytes_total)
        if not self.files_total:
            return None
        part = min(1.0, self.file_done / self.file_total) if self.file_total and not self.preparing else 0.0
        return min(1.0, (self.files_done + part) / self.files_total)

    def text(self) -> str:
        """e.g. "Downloading acme/prefs… 43% (1.2 of 2.8 MB), file 2 of 5"."""
        if self.preparing:
            return f"Preparing {self.repo_id} for reading ({self.files_total} files downloaded)…"
        files = f"file {min(self.files_done + 1, self.files_total)} of {self.files_total}"
        if self.bytes_total:
            percent = min(100, 100 * self.bytes_done // self.bytes_total)
            amount = f"{percent}% ({_amount(self.bytes_done, self.bytes_total)})"
        else:
            amount = f"{_amount(self.bytes_done)} so far"
        return f"Downloading {self.repo_id}… {amount}, {files}"


def _amount(done: int, total: int = 0) -> str:
    """"1.2 of 2.8 MB", or "1.2 MB" without a total."""
    top = total or done
    unit, scale = next(((u, s) for u, s in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10)) if top >= s), ("bytes", 1))
    number = (lambda n: f"{n / scale:.1f}") if scale > 1 else str
    return f"{number(done)} of {number(total)} {unit}" if total else f"{number(done)} {unit}"


# Who hears about downloads, and who may stop them, in this thread's load (reporting_downloads).
_listener: contextvars.ContextVar[tuple[Callable[[DownloadProgress], None], Callable[[], bool] | None] | None] = \
    contextvars.ContextVar("hub_download_listener", default=None)


@contextlib.contextmanager
def reporting_downloads(on_progress: Callable[[DownloadProgress], None],
                        should_stop: Callable[[], bool] | None = None):
    """While this block runs (in this thread), a hub dataset whose files are not cached yet
    reports its download to ``on_progress`` a few times a second, and ``should_stop()``
    returning True ends it with LoadCancelled at the next chunk. The loading functions'
    own ``progress`` speaks of bytes scanned; a download is a different phase, said
    differently, so it has its own listener."""
    token = _listener.set((on_progress, should_stop))
    try:
        yield
    finally:
        _listener.reset(token)


@dataclass
class HubFile:
    url: str  # hf://datasets/owner/name@revision/path, as `datasets` names it
    repo_id: str
    revision: str
    path: str


_HF_URL = re.compile(r"^hf://datasets/([^/@]+/[^/@]+)@([^/]+)/(.+)$")


def _hub_files(data_files) -> list[HubFile]:
    """The files of a builder's data files that live on the Hub; others `datasets` fetches itself."""
    found: dict[str, HubFile] = {}
    for urls in (data_files or {}).values():
        for url in urls:
            match = _HF_URL.match(str(url))
            if match and url not in found:
                found[url] = HubFile(url, match.group(1), urllib.parse.unquote(match.group(2)), match.group(3))
    return list(found.values())


def _download_split(repo_id: str, subset: str, split: str, revision: str):
    """One split, online: the builder finds the data files, they come down into the hub cache
    with progress, then `datasets` prepares its Arrow cache from those local copies."""
    import datasets
    from datasets.data_files import DataFilesDict, DataFilesList

    builder = datasets.load_dataset_builder(repo_id, subset or None, revision=revision or None)
    prepared = Path(builder.cache_dir, datasets.config.DATASET_INFO_FILENAME).exists()
    files = [] if prepared else _hub_files(builder.config.data_files)
    listener = _listener.get()
    if files:
        local = _fetch_files(repo_id, files, listener)
        # The builder reads the copies just fetched instead of asking the Hub for each again.
        builder.config.data_files = DataFilesDict({
            name: DataFilesList([local.get(url, url) for url in urls], list(urls.origin_metadata))
            for name, urls in builder.config.data_files.items()})
    _check_stop(listener)
    builder.download_and_prepare()
    return builder.as_dataset(split=split)


def _fetch_files(repo_id: str, files: list[HubFile], listener) -> dict[str, str]:
    """Each file into the hub cache (a cached one returns at once): url -> local path."""
    import huggingface_hub

    watch = _DownloadWatch(repo_id, len(files), _sizes(files), listener)
    local = {}
    for number, file in enumerate(files):
        _check_stop(listener)
        watch.begin(file)
        local[file.url] = huggingface_hub.hf_hub_download(
            file.repo_id, file.path, repo_type="dataset", revision=file.revision, tqdm_class=watch.bar_class)
        watch.end(number + 1)
    watch.preparing()
    return local


def _sizes(files: list[HubFile]) -> dict[str, int]:
    """Each file's size from one listing per revision; empty when the Hub does not say."""
    from huggingface_hub import HfApi

    sizes: dict[str, int] = {}
    by_revision: dict[tuple[str, str], list[HubFile]] = {}
    for file in files:
        by_revision.setdefault((file.repo_id, file.revision), []).append(file)
    try:
        for (repo, revision), group in by_revision.items():
            infos = HfApi().get_paths_info(repo, [f.path for f in group], repo_type="dataset", revision=revision)
            by_path = {info.path: getattr(info, "size", None) for info in infos}
            sizes.update({f.url: by_path[f.path] for f in group if by_path.get(f.path)})
    except Exception:  # the sizes only make the progress exact; each file's own total follows anyway
        return {}
    return sizes if len(sizes) == len(files) else {}


def _check_stop(listener) -> None:
    if listener is not None and listener[1] is not None and listener[1]():
        from backend.data.loading import LoadCancelled

        raise LoadCancelled("Loading was stopped; the files downloaded so far stay in the hub cache.")


class _DownloadWatch:
    """Adds up the bytes of every file's progress bar and passes them on (throttled)."""

    def __init__(self, repo_id: str, files_total: int, sizes: dict[str, int], listener) -> None:
        # Held here: a Xet download reports from threads of its own, where the context is not set.
        self._listener = listener
        self.progress = DownloadProgress(repo_id, 0, files_total, 0, sum(sizes.values()))
        self._sizes = sizes
        self._finished_bytes = 0  # of the files already down
        self._last_sent = 0.0
        self.bar_class = _bar_class(self)

    def begin(self, file: HubFile) -> None:
        step = self.progress
        step.current, step.file_done, step.file_total = file.path, 0, self._sizes.get(file.url, 0)
        self._send(force=True)

    def file_total(self, total: int | None, initial: int) -> None:
        if total and not self.progress.file_total:
            self.progress.file_total = total
        self.advance(initial or 0)

    def advance(self, count: int) -> None:
        step = self.progress
        step.file_done += count
        step.bytes_done = self._finished_bytes + step.file_done
        _check_stop(self._listener)
        self._send()

    def end(self, files_done: int) -> None:
        step = self.progress
        self._finished_bytes += max(step.file_done, step.file_total)
        step.files_done, step.bytes_done = files_done, self._finished_bytes
        step.file_done = step.file_total = 0
        self._send(force=True)

    def preparing(self) -> None:
        self.progress.preparing, self.progress.current = True, ""
        self._send(force=True)

    def _send(self, force: bool = False) -> None:
        now = time.monotonic()
        if self._listener is None or (not force and now - self._last_sent < 0.1):
            return
        self._last_sent = now
        self._listener[0](DownloadProgress(**vars(self.progress)))


class _NullStream:
    def write(self, _text: str) -> None:
        pass

    def flush(self) -> None:
        pass


def _bar_class(watch: _DownloadWatch):
    """A progress-bar class for ``hf_hub_download(tqdm_class=...)`` that tells ``watch``
    (plain HTTP and Xet downloads both drive it; it draws nothing)."""
    from tqdm import tqdm

    class _WatchedBar(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs.pop("name", None)
            kwargs.update(file=_NullStream(), disable=False)
            super().__init__(*args, **kwargs)
            watch.file_total(kwargs.get("total"), kwargs.get("initial") or 0)

        def update(self, n=1):
            watch.advance(int(n or 0))
            return super().update(n)

        # Xet's second counter (bytes over the wire) would count the same file twice.
        def update_transfer(self, _n=1) -> None:
            pass

        def set_transfer_postfix_str(self, *_args, **_kwargs) -> None:
            pass

    return _WatchedBar


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
    root = _cache_root(repo_id)
    builds: dict[str, dict[str, int]] = {}
    for info_file in sorted(glob.glob(str(root / "*" / "*" / "*" / "dataset_info.json")), key=os.path.getmtime):
        try:
            info = json.loads(Path(info_file).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        subset = info.get("config_name") or Path(info_file).parts[-4]
        builds[subset] = {s: v.get("num_examples", 0) for s, v in (info.get("splits") or {}).items()}
    return builds


_COMMIT = re.compile(r"^[0-9a-f]{7,40}$")


def _cached_revision_build(repo_id: str, subset: str, revision: str):
    """Offline, `datasets` reads the newest build it has of a dataset whatever revision is
    asked for; a commit asked for (a run trained again) is read from that commit's build,
    and refused when only other commits are cached. None: no commit was asked for (a branch
    name offline can only mean the newest build)."""
    if not _COMMIT.match(revision or ""):
        return None
    import datasets
    from datasets.packaged_modules.cache.cache import Cache

    root = _cache_root(repo_id)
    builds = [Path(p) for p in glob.glob(str(root / (subset or "*") / "*" / "*"))
              if (Path(p) / datasets.config.DATASET_INFO_FILENAME).is_file()]
    if not subset:  # the default subset first, as `datasets` would choose it
        builds.sort(key=lambda p: p.parts[-3] != "default")
    match = next((p for p in builds if p.name.startswith(revision)), None)
    if match is None:
        cached = sorted({p.name[:12] for p in builds})
        raise DatasetError(
            f"Revision {revision[:12]} of the Hugging Face dataset {repo_id}"
            + (f" ({subset})" if subset else "") + " is not in the local cache, and downloads are off; "
            + (f"cached: {', '.join(cached)}. " if cached else "")
            + "Go online once to download it, or empty the revision to read the newest cached one.")
    return Cache(cache_dir=str(datasets.config.HF_DATASETS_CACHE), dataset_name=repo_id.split("/")[1],
                 repo_id=repo_id, config_name=match.parts[-3], version=match.parts[-2], hash=match.name)


def _cache_root(repo_id: str) -> Path:
    """Where `datasets` keeps its builds of ``repo_id``: ``<owner>___<name>``."""
    import datasets
    from datasets.naming import camelcase_to_snakecase

    owner, name = repo_id.split("/")
    return Path(datasets.config.HF_DATASETS_CACHE) / f"{owner}___{camelcase_to_snakecase(name)}"


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
