"""The hub-dataset picker in the real studio window: an id found in the local cache
offers its subsets and splits, loads the chosen split, and the run config carries it;
an uncached id offline is refused in the picker at once. Screens go to SHOTS when set."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from PySide6.QtWidgets import QApplication

from gui_helpers import make_studio_window, wait_for_dataset
from test_dataset_sources import REPO, fill_datasets_cache, hub_caches, pairs  # noqa: F401 (fixture)

pytestmark = pytest.mark.gui


@pytest.fixture
def window(qtbot, studio_home):
    return make_studio_window(qtbot)


def _shot(widget, name: str) -> None:
    folder = os.environ.get("SHOTS")
    if folder:
        for _ in range(3):  # let the layout take the new text's height first
            QApplication.processEvents()
        Path(folder).mkdir(parents=True, exist_ok=True)
        assert widget.grab().save(str(Path(folder) / name))


def test_picker_finds_a_cached_id_and_loads_the_chosen_split(qtbot, window, hub_caches):
    fill_datasets_cache(hub_caches[0], {"train": pairs(12), "test": pairs(4, tag="held ")})
    panel = window.data_panel
    panel.hub_section.set_expanded(True)
    picker = panel.hub_picker
    picker.id_edit.setText(REPO)
    picker.find_button.click()
    qtbot.waitUntil(lambda: picker.load_button.isEnabled(), timeout=15_000)
    assert [picker.split_combo.itemText(i) for i in range(picker.split_combo.count())] == ["train", "test"]
    assert picker.split_combo.currentText() == "train" and picker.subset_combo.currentText() == "default"
    assert "test split will be held out" in picker.status.text()
    _shot(panel, "hub-picker-found.png")

    picker.load_button.click()
    wait_for_dataset(qtbot, window)
    result = panel.current()
    assert result is not None and result.loaded.rows_kept == 12 and result.loaded.heldout.rows_kept == 4
    assert result.loaded.hub["revision"]
    cfg, problems = window.build_config()
    assert (cfg.data_path, cfg.data_split, cfg.data_subset) == (REPO, "train", "")
    qtbot.wait(600)  # the Train hint is re-checked on a short timer
    _shot(window, "hub-dataset-loaded-window.png")


def test_picker_refuses_an_uncached_id_offline_at_once(qtbot, window, hub_caches):
    panel = window.data_panel
    panel.hub_section.set_expanded(True)
    picker = panel.hub_picker
    picker.id_edit.setText("acme/never-downloaded")
    started = time.monotonic()
    picker.find_button.click()
    qtbot.waitUntil(lambda: "not in the local cache" in picker.status.text(), timeout=5_000)
    assert time.monotonic() - started < 3
    assert not picker.load_button.isEnabled() and picker.find_button.isEnabled()
    assert panel.current() is None
    _shot(panel, "hub-picker-refused.png")


def test_train_again_puts_a_hub_run_back_in_the_picker_and_loads_it_offline(qtbot, window, hub_caches):
    """The Runs tab's "Train again with these settings" on a run that trained on a hub split:
    the picker shows the id, subset and split again, and the cached split loads offline."""
    from backend.core.paths import runs_dir
    from backend.runs.config import default_config, save_yaml
    from test_dataset_sources import COMMIT

    fill_datasets_cache(hub_caches[0], {"train": pairs(12), "test": pairs(4, tag="held ")})
    run_dir = runs_dir() / "hub-run"
    run_dir.mkdir(parents=True)
    save_yaml(default_config("dpo", data_path=REPO, data_split="test", data_subset="", max_steps=7),
              run_dir / "config.yaml")
    (run_dir / "data_source.json").write_text(json.dumps(
        {"id": REPO, "subset": "default", "split": "test", "revision": COMMIT, "splits": ["train", "test"],
         "heldout_split": "", "rows": 4}))
    tab = window.runs_tab
    tab.refresh()
    qtbot.waitUntil(lambda: str(run_dir) in tab.run_dirs(), timeout=10_000)
    tab.select_runs([str(run_dir)])
    assert tab.reuse_button.isEnabled()
    tab.reuse_button.click()
    wait_for_dataset(qtbot, window)

    panel, picker = window.data_panel, window.data_panel.hub_picker
    result = panel.current()
    assert result is not None, panel.failure()
    assert panel.current_path() == REPO and result.loaded.hub["split"] == "test" and result.loaded.rows_kept == 4
    assert panel.hub_section.is_expanded() and picker.id_edit.text() == REPO
    qtbot.waitUntil(lambda: picker.split_combo.count() == 2, timeout=10_000)
    assert picker.split_combo.currentText() == "test" and picker.subset_combo.currentText() == "default"
    cfg, _problems = window.build_config()
    assert (cfg.data_path, cfg.data_split, cfg.data_subset, cfg.max_steps) == (REPO, "test", "", 7)
    _shot(window, "hub-run-trained-again.png")


def test_train_again_names_a_local_file_that_is_gone(qtbot, window, tmp_path):
    from backend.runs.config import default_config, save_yaml

    run_dir = tmp_path / "old-run"
    run_dir.mkdir()
    gone = tmp_path / "deleted.jsonl"
    save_yaml(default_config("dpo", data_path=str(gone)), run_dir / "config.yaml")
    window.use_run_settings(str(run_dir))
    assert panel_notice(window) and str(gone) in panel_notice(window)
    assert window.data_panel.current() is None and not window.data_panel.loader.is_busy()


def panel_notice(window) -> str:
    banner = window.data_panel.banner
    return banner._text.text() if banner.isVisible() else ""
