"""A hub dataset that is not cached, online: its files come down into the hub cache one
after another with progress, can be stopped between chunks, and are then prepared by
`datasets` from those copies.

No network here: the two calls that would reach the Hub are replaced. The builder
`load_dataset_builder` would return (a real Parquet builder whose data files are
``hf://`` URLs of the commit, as the Hub's listing gives them) and the file fetch
(``hf_hub_download``: it writes the file into the hub cache in chunks, driving the
progress bar it is handed exactly as huggingface_hub's own download does). Everything
else is the real path: the studio's loader, `datasets` preparing its Arrow cache, the
Data panel."""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from backend.data.loading import LoadCancelled, load_dataset_file
from test_dataset_sources import COMMIT, REPO, hub_caches, pairs, write_parquet  # noqa: F401 (fixture)

SPLITS = {"train": 30, "test": 6}


def _path_in_repo(split: str) -> str:
    return f"data/{split}-00000-of-00001.parquet"


class FakeHub:
    """The Hub as `datasets` and huggingface_hub see it, for one parquet repository."""

    def __init__(self, tmp_path: Path, hub_cache: Path, ds_cache: Path, chunks: int = 6, delay: float = 0.0):
        self.upload = tmp_path / "upload"
        for split, rows in SPLITS.items():
            write_parquet(self.upload / _path_in_repo(split), pairs(rows, tag=f"{split} "))
        self.hub_cache, self.ds_cache = hub_cache, ds_cache
        self.chunks, self.delay = chunks, delay
        self.fetched: list[str] = []
        self.stopped: list[BaseException] = []
        self.finished = threading.Event()
        self.sizes_known = True

    def size(self, path: str) -> int:
        return (self.upload / path).stat().st_size

    def load_dataset_builder(self, path, name=None, revision=None, **_kwargs):
        from datasets.data_files import DataFilesDict, DataFilesList
        from datasets.load import configure_builder_class
        from datasets.packaged_modules.parquet.parquet import Parquet, ParquetConfig

        assert path == REPO and name in (None, "default")
        files = DataFilesDict({split: DataFilesList([f"hf://datasets/{REPO}@{COMMIT}/{_path_in_repo(split)}"],
                                                    [(COMMIT,)]) for split in SPLITS})
        # As the Hub's module factory builds it: "default" is the repository's own config (not a
        # custom one with a hash suffix) and repo_id names the cache folder acme___tiny-prefs, so
        # a later offline load (another process) finds what was prepared here.
        builder_cls = configure_builder_class(Parquet, builder_configs=[ParquetConfig(name="default", data_files=files)],
                                              default_config_name="default", dataset_name="tiny-prefs")
        return builder_cls(cache_dir=str(self.ds_cache), dataset_name="tiny-prefs", config_name="default",
                           hash=COMMIT, repo_id=REPO)

    def get_paths_info(self, repo_id, paths, *, repo_type, revision, **_kwargs):
        assert (repo_id, repo_type, revision) == (REPO, "dataset", COMMIT)
        if not self.sizes_known:
            raise ConnectionError("the Hub did not answer")
        return [SimpleNamespace(path=p, size=self.size(p)) for p in paths]

    def hf_hub_download(self, repo_id, filename, *, repo_type, revision, tqdm_class, **_kwargs):
        from huggingface_hub.utils.tqdm import _get_progress_bar_context

        assert (repo_id, repo_type, revision) == (REPO, "dataset", COMMIT)
        data = (self.upload / filename).read_bytes()
        target = self.hub_cache / "datasets--acme--tiny-prefs" / "snapshots" / revision / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".incomplete")
        step = math.ceil(len(data) / self.chunks)
        try:
            with _get_progress_bar_context(desc=filename, log_level=30, total=len(data), initial=0,
                                           name="huggingface_hub.http_get", tqdm_class=tqdm_class) as bar, \
                    open(partial, "wb") as out:
                for start in range(0, len(data), step):
                    out.write(data[start:start + step])
                    bar.update(len(data[start:start + step]))
                    time.sleep(self.delay)
        except BaseException as exc:
            self.stopped.append(exc)
            raise
        finally:
            self.finished.set()
        partial.rename(target)
        self.fetched.append(filename)
        return str(target)

    def install(self, monkeypatch) -> None:
        import datasets
        import huggingface_hub

        monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(datasets, "load_dataset_builder", self.load_dataset_builder)
        monkeypatch.setattr(huggingface_hub, "hf_hub_download", self.hf_hub_download)
        monkeypatch.setattr(huggingface_hub.HfApi, "get_paths_info", self.get_paths_info)


@pytest.fixture
def fake_hub(tmp_path, hub_caches, monkeypatch):
    hub = FakeHub(tmp_path, hub_caches[1], hub_caches[0])
    hub.install(monkeypatch)
    return hub


def test_download_reports_bytes_and_files_then_loads_from_the_copies(fake_hub):
    from backend.data.hub import reporting_downloads

    fake_hub.chunks, fake_hub.delay = 20, 0.02  # 0.4 s a file: the 0.1 s throttle lets steps within a file through
    steps = []
    with reporting_downloads(steps.append):
        loaded = load_dataset_file(REPO)
    assert loaded.rows_kept == SPLITS["train"] and loaded.heldout.rows_kept == SPLITS["test"]
    assert loaded.hub["id"] == REPO and loaded.hub["split"] == "train"
    assert sorted(fake_hub.fetched) == sorted(_path_in_repo(s) for s in SPLITS)

    total = sum(fake_hub.size(_path_in_repo(s)) for s in SPLITS)
    downloading = [s for s in steps if not s.preparing]
    assert {s.bytes_total for s in downloading} == {total} and {s.files_total for s in downloading} == {2}
    done = [s.bytes_done for s in downloading]
    assert done == sorted(done) and done[-1] == total and len(set(done)) >= 4, done
    assert 0 < done[1] < total  # part of a file, not only whole files
    assert downloading[-1].files_done == 2 and downloading[-1].fraction() == 1.0
    assert steps[-1].preparing and steps[-1].text() == f"Preparing {REPO} for reading (2 files downloaded)…"
    middle = next(s for s in downloading if 0 < s.bytes_done < total)
    assert middle.text().startswith(f"Downloading {REPO}… ") and "of 2" in middle.text() and "KB)" in middle.text()

    # Prepared once, the split loads again without fetching anything.
    fake_hub.fetched.clear()
    steps.clear()
    with reporting_downloads(steps.append):
        again = load_dataset_file(REPO, split="test", eval_split="none")
    assert again.rows_kept == SPLITS["test"] and fake_hub.fetched == [] and steps == []


def test_unknown_sizes_count_files_and_stop_ends_the_download_between_chunks(fake_hub):
    from backend.data.hub import reporting_downloads

    fake_hub.sizes_known = False
    fake_hub.chunks, fake_hub.delay = 50, 0.01  # half a second a file
    steps = []
    stop = threading.Event()

    def heard(step):
        steps.append(step)
        if step.bytes_done:
            stop.set()

    with pytest.raises(LoadCancelled, match="stopped"):
        with reporting_downloads(heard, stop.is_set):
            load_dataset_file(REPO)
    assert steps[0].bytes_total == 0 and steps[0].fraction() == 0.0 and "so far, file 1 of 2" in steps[0].text()
    # Each file's own size arrives with its download: the share then moves within the file.
    assert steps[-1].file_total == fake_hub.size(_path_in_repo("train")) and 0 < steps[-1].fraction() < 0.5
    assert len(fake_hub.stopped) == 1 and fake_hub.fetched == []  # ended inside the first file
    assert not list(fake_hub.hub_cache.rglob("*.parquet"))  # nothing under a final name


@pytest.mark.gui
def test_data_panel_shows_the_download_moving_and_stop_keeps_the_dataset_before(qtbot, studio_home, fake_hub,
                                                                                 tmp_path):
    import os

    from PySide6.QtWidgets import QApplication

    from gui_helpers import drop_paths, make_studio_window, wait_for_dataset
    from test_dataset_sources import write_jsonl

    window = make_studio_window(qtbot)
    panel = window.data_panel
    local = write_jsonl(tmp_path / "before.jsonl", pairs(9))
    assert drop_paths(window, [local])
    wait_for_dataset(qtbot, window)
    before = panel.current()

    fake_hub.sizes_known = False  # the bar then counts files; the text says the bytes so far
    fake_hub.chunks, fake_hub.delay = 40, 0.05  # two seconds a file
    seen = []
    panel.loader.sig_progress.connect(
        lambda _p: seen.append((panel.busy_label.text(), panel.busy_bar.maximum(), panel.busy_bar.value())))
    panel.hub_section.set_expanded(True)
    panel.hub_picker.id_edit.setText(REPO)  # as typed; its Find would ask the Hub
    panel.hub_picker.sig_load.emit(REPO, "", "train", "")
    qtbot.waitUntil(lambda: panel.busy_row.isVisible() and "KB so far" in panel.busy_label.text(), timeout=10_000)
    first = panel.busy_label.text()
    qtbot.waitUntil(lambda: panel.busy_label.text() != first, timeout=5_000)  # it moves
    assert panel.busy_label.text().startswith(f"Downloading {REPO}… ") and "file 1 of 2" in panel.busy_label.text()
    # No size from the Hub: the bar goes by files, the first in part as its bytes come.
    assert panel.busy_bar.maximum() == 1000 and 0 < panel.busy_bar.value() < 500
    assert panel.stop_button.isVisible() and panel.stop_button.isEnabled()
    if os.environ.get("SHOTS"):
        QApplication.processEvents()
        assert panel.grab().save(str(Path(os.environ["SHOTS"]) / "hub-download-progress.png"))

    panel.stop_button.click()
    assert not panel.loader.is_busy() and not panel.busy_row.isVisible()
    assert panel.current() is before and panel.current_path() == str(local)
    assert "acme/tiny-prefs was not loaded; before.jsonl is still the dataset." in panel.banner._text.text()
    if os.environ.get("SHOTS"):
        QApplication.processEvents()
        assert panel.grab().save(str(Path(os.environ["SHOTS"]) / "hub-download-stopped.png"))
    assert fake_hub.finished.wait(2)  # the download itself ended at its next chunk
    assert len(fake_hub.stopped) == 1 and fake_hub.fetched == []
    cfg, _problems = window.build_config()
    assert cfg.data_path == str(local)

    # Loaded to the end this time: the bar counts the files, then the split is the dataset.
    fake_hub.delay = 0.005
    fake_hub.finished.clear()
    seen.clear()
    panel.hub_picker.sig_load.emit(REPO, "", "train", "")
    wait_for_dataset(qtbot, window)
    qtbot.waitUntil(lambda: panel.current() is not before, timeout=30_000)
    result = panel.current()
    assert result.path == REPO and result.loaded.rows_kept == SPLITS["train"]
    assert result.loaded.heldout.rows_kept == SPLITS["test"]
    values = [value for text, maximum, value in seen if maximum and text.startswith("Downloading")]
    assert values == sorted(values) and 500 in values and values[-1] == 1000, seen
    assert any(text == f"Preparing {REPO} for reading (2 files downloaded)…" and maximum == 0
               for text, maximum, _value in seen), seen
