"""The hub-dataset picker in the real studio window: an id found in the local cache
offers its subsets and splits, loads the chosen split, and the run config carries it;
an uncached id offline is refused in the picker at once. Screens go to SHOTS when set."""

from __future__ import annotations

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
