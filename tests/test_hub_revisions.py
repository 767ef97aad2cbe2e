"""A hub dataset read at a given commit: offline, `datasets` itself would take the newest
build it has whatever revision is asked, so a run trained again (in the window or from its
config.yaml on the command line) would quietly train on newer rows. Two commits of one
dataset are cached here, the older with fewer rows; the network is off throughout."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from backend.data.formats import DatasetError
from backend.data.loading import load_dataset_file
from test_dataset_sources import REPO, hub_caches, pairs, write_parquet  # noqa: F401 (fixture)

OLD = "1111111111111111111111111111111111111111"
NEW = "2222222222222222222222222222222222222222"
ROWS = {OLD: 5, NEW: 8}


def cache_commit(cache: Path, commit: str, age_s: float) -> None:
    """``datasets``' build of REPO at ``commit`` (``acme___tiny-prefs/default/0.0.0/<commit>``),
    made ``age_s`` seconds ago: a train and a test split, the train one ROWS[commit] long."""
    from datasets.packaged_modules.parquet.parquet import Parquet

    upload, staging = cache.parent / "upload" / commit[:6], cache.parent / "staging" / commit[:6]
    files = {"train": str(write_parquet(upload / "train.parquet", pairs(ROWS[commit], tag=f"{commit[:4]} "))),
             "test": str(write_parquet(upload / "test.parquet", pairs(3, tag="held ")))}
    Parquet(cache_dir=str(staging), dataset_name="tiny-prefs", config_name="default", hash=commit,
            data_files=files).download_and_prepare()
    built = next((staging / "tiny-prefs").glob("default*")) / "0.0.0" / commit
    target = cache / "acme___tiny-prefs" / "default" / "0.0.0" / commit
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(built), str(target))
    info = json.loads((target / "dataset_info.json").read_text())
    assert info["config_name"] == "default"
    stamp = time.time() - age_s
    os.utime(target, (stamp, stamp))


@pytest.fixture
def two_commits(hub_caches):
    cache_commit(hub_caches[0], OLD, age_s=3600)
    cache_commit(hub_caches[0], NEW, age_s=60)
    return hub_caches


def write_hub_run(run_dir: Path, revision: str, config_revision: str = "", method: str = "dpo",
                  **settings) -> Path:
    """A run folder that trained on REPO's train split at ``revision`` (as data_source.json says)."""
    from backend.runs.config import default_config, save_yaml

    run_dir.mkdir(parents=True)
    save_yaml(default_config(method, data_path=REPO, data_revision=config_revision, max_steps=7, **settings),
              run_dir / "config.yaml")
    (run_dir / "data_source.json").write_text(json.dumps(
        {"id": REPO, "subset": "default", "split": "train", "revision": revision, "splits": ["train", "test"],
         "heldout_split": "test", "rows": ROWS[revision]}))
    return run_dir


def test_offline_a_commit_reads_its_own_build_not_the_newest(two_commits):
    latest = load_dataset_file(REPO)
    assert latest.rows_kept == ROWS[NEW] and latest.hub["revision"] == NEW

    pinned = load_dataset_file(REPO, revision=OLD)
    assert pinned.rows_kept == ROWS[OLD] and pinned.hub["revision"] == OLD
    assert pinned.dataset[0]["prompt"].startswith("1111 ") and pinned.heldout.rows_kept == 3
    assert load_dataset_file(REPO, revision=OLD[:12]).hub["revision"] == OLD  # a short hash, as git shows it
    assert f"revision {OLD[:12]}" in pinned.notes[0]

    with pytest.raises(DatasetError) as refused:
        load_dataset_file(REPO, revision="3" * 40)
    message = str(refused.value)
    assert f"Revision {'3' * 12} of the Hugging Face dataset {REPO} is not in the local cache" in message
    assert f"cached: {OLD[:12]}, {NEW[:12]}" in message and "empty the revision to read the newest cached one" in message


def test_recorded_revision_only_for_the_same_dataset_and_subset(tmp_path):
    from backend.data.hub import recorded_revision

    run = write_hub_run(tmp_path / "run", OLD)
    assert recorded_revision(run, REPO, "") == OLD == recorded_revision(run, f"hf://datasets/{REPO}", "default")
    assert recorded_revision(run, "acme/other", "") == ""
    assert recorded_revision(run, REPO, "another-subset") == ""
    assert recorded_revision(tmp_path / "no-run", REPO, "") == ""
    (run / "data_source.json").write_text("{not json")
    assert recorded_revision(run, REPO, "") == ""


def _cli_config(*argv: str):
    from backend.cli.main import build_parser, config_and_problems

    return config_and_problems(build_parser().parse_args(["train", *argv]))


def test_cli_retrain_from_a_run_config_reads_the_recorded_commit(two_commits, tmp_path, capsys):
    from backend.data.run_data import load_run_data

    run = write_hub_run(tmp_path / "run", OLD)
    cfg, problems = _cli_config("--config", str(run / "config.yaml"))
    assert problems == [] and cfg.data_revision == OLD
    assert f"read at revision {OLD[:12]}, the commit this run trained on" in capsys.readouterr().err
    assert load_run_data(cfg).rows_kept == ROWS[OLD]

    latest, _ = _cli_config("--config", str(run / "config.yaml"), "--set", "data_revision=")
    assert latest.data_revision == "" and load_run_data(latest).rows_kept == ROWS[NEW]
    other, _ = _cli_config("--config", str(run / "config.yaml"), "--data", "acme/other")
    assert (other.data_path, other.data_revision) == ("acme/other", "")
    # A config file that is not in a run folder is read as written.
    (tmp_path / "mine").mkdir()
    shutil.copy(run / "config.yaml", tmp_path / "mine" / "config.yaml")
    assert _cli_config("--config", str(tmp_path / "mine" / "config.yaml"))[0].data_revision == ""


@pytest.mark.slow
def test_cli_retrain_trains_on_the_recorded_commit(two_commits, tmp_path, tiny_model_dir, studio_home, capsys):
    from backend.cli.main import main
    from backend.runs.config import load_yaml

    run = write_hub_run(tmp_path / "run", OLD, method="orpo", model=str(tiny_model_dir))
    runs = tmp_path / "runs"
    code = main(["train", "--config", str(run / "config.yaml"), "--steps", "1",
                 "--batch-size", "2", "--max-length", "64", "--set", "gradient_checkpointing=false",
                 "--set", "save_steps=0", "--runs-dir", str(runs), "--quiet"])
    assert code == 0, capsys.readouterr().err
    source = json.loads((next(runs.iterdir()) / "data_source.json").read_text())
    assert (source["revision"], source["rows"]) == (OLD, ROWS[OLD])
    assert load_yaml(next(runs.iterdir()) / "config.yaml").data_revision == OLD


@pytest.mark.slow
def test_a_resumed_run_keeps_the_commit_it_started_on(two_commits, tmp_path, tiny_model_dir, studio_home, capsys):
    """Stopped before its first checkpoint, resumed after a newer commit arrived: the worker
    reads the commit data_source.json recorded, not the newest."""
    from backend.cli.main import main

    run = write_hub_run(tmp_path / "runs" / "hub-run", OLD, method="orpo", model=str(tiny_model_dir),
                        per_device_train_batch_size=2, gradient_accumulation_steps=1, max_length=64,
                        gradient_checkpointing=False, save_steps=0)
    assert main(["train", "--resume", str(run), "--quiet"]) == 0, capsys.readouterr().err
    source = json.loads((run / "data_source.json").read_text())
    assert (source["revision"], source["rows"]) == (OLD, ROWS[OLD])


# ---------------------------------------------------------------- the window


def _shot(widget, name: str) -> None:
    from PySide6.QtWidgets import QApplication

    folder = os.environ.get("SHOTS")
    if folder:
        for _ in range(3):
            QApplication.processEvents()
        Path(folder).mkdir(parents=True, exist_ok=True)
        assert widget.grab().save(str(Path(folder) / name))


@pytest.mark.gui
def test_train_again_reads_the_recorded_commit_and_the_picker_shows_it(qtbot, studio_home, two_commits):
    from backend.core.paths import runs_dir
    from gui_helpers import make_studio_window, wait_for_dataset

    window = make_studio_window(qtbot)
    run = write_hub_run(runs_dir() / "hub-run", OLD)  # its config says "latest", as runs before pinning did
    window.use_run_settings(str(run))
    wait_for_dataset(qtbot, window)
    panel, picker = window.data_panel, window.data_panel.hub_picker
    result = panel.current()
    assert result is not None, panel.failure()
    assert result.loaded.rows_kept == ROWS[OLD] and result.loaded.hub["revision"] == OLD
    assert picker.revision_edit.text() == OLD and picker.revision_edit.isVisible()
    qtbot.waitUntil(lambda: picker.load_button.isEnabled(), timeout=10_000)
    cfg, _problems = window.build_config()
    assert (cfg.data_path, cfg.data_split, cfg.data_revision, cfg.max_steps) == (REPO, "train", OLD, 7)
    _shot(panel, "hub-picker-revision-pinned.png")

    # Emptied: the latest commit loads, and the run would train on that one (pinned as read).
    picker.revision_edit.clear()
    picker.load_button.click()
    qtbot.waitUntil(lambda: panel.current() is not result and not panel.loader.is_busy(), timeout=15_000)
    assert panel.current().loaded.rows_kept == ROWS[NEW]
    assert window.build_config()[0].data_revision == NEW

    # A commit that is not cached is refused by name.
    picker.revision_edit.setText("3" * 40)
    picker.load_button.click()
    qtbot.waitUntil(lambda: not panel.loader.is_busy() and panel.failure() is not None, timeout=15_000)
    assert "Revision 333333333333" in panel.failure().message and "not in the local cache" in panel.failure().message
    _shot(panel, "hub-picker-revision-refused.png")

    # Another id typed starts from its latest again.
    picker.revision_edit.setText(OLD)
    qtbot.keyClicks(picker.id_edit, "x")
    assert picker.revision_edit.text() == ""


@pytest.mark.gui
def test_a_dropped_file_after_a_pinned_hub_run_trains_without_subset_or_revision(qtbot, studio_home, two_commits,
                                                                                  tmp_path):
    from backend.core.paths import runs_dir
    from gui_helpers import drop_paths, make_studio_window, wait_for_dataset
    from test_dataset_sources import write_jsonl

    window = make_studio_window(qtbot)
    window.use_run_settings(str(write_hub_run(runs_dir() / "hub-run", OLD, config_revision=OLD)))
    wait_for_dataset(qtbot, window)
    assert window.build_config()[0].data_revision == OLD
    local = write_jsonl(tmp_path / "mine.jsonl", pairs(9))
    assert drop_paths(window, [local])
    qtbot.waitUntil(lambda: window.data_panel.current() is not None
                    and window.data_panel.current().path == str(local), timeout=15_000)
    cfg, problems = window.build_config()
    assert cfg.data_path == str(local) and cfg.data_revision == "" and cfg.data_subset == ""
    assert "data_revision" not in problems
