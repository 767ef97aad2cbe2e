"""Broken datasets dropped on the window one after another: each gets its message
or its list of rows left out, the window keeps answering, and a good file loads after."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402
from PySide6.QtCore import QTimer  # noqa: E402

from tests.gui_helpers import drop_paths, make_studio_window, wait_for_dataset, write_preference_file  # noqa: E402

pytestmark = pytest.mark.gui

MALFORMED = Path(__file__).parent / "fixtures" / "malformed"


@pytest.fixture
def window(qtbot, studio_home):
    return make_studio_window(qtbot)


def _assert_window_answers(qtbot, window) -> None:
    """A queued timer fires and a tab switch takes effect: the event loop is not stuck."""
    fired = []
    QTimer.singleShot(0, lambda: fired.append(True))
    qtbot.waitUntil(lambda: bool(fired), timeout=2000)
    window.tabs.setCurrentIndex(1)
    assert window.tabs.currentIndex() == 1
    window.tabs.setCurrentWidget(window.train_page)


def _assert_refused(window, phrases) -> None:
    panel = window.data_panel
    assert panel.current() is None and panel.failure() is not None
    assert panel.banner.isVisible() and panel.banner.severity() == "error"
    for phrase in phrases:
        assert phrase in panel.banner.text()
    assert not panel.report_view.isVisible() and not panel.preview.isVisible()
    assert not window.live.train_button.isEnabled()


def _assert_partly_loaded(window, kept, phrases) -> None:
    panel = window.data_panel
    assert panel.current() is not None, panel.failure()
    assert not panel.banner.isVisible()
    report = panel.report_view.toPlainText()
    for phrase in phrases:
        assert phrase in report
    assert panel.preview.isVisible() and panel.preview.row_count() == kept


def test_a_run_of_broken_files_then_a_good_one(qtbot, window, tmp_path):
    picture = tmp_path / "photo.jsonl"
    picture.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10")
    sequence = [
        (MALFORMED / "windows1252.jsonl", None, ("windows1252.jsonl, line 2", "not UTF-8", "save it as UTF-8")),
        (MALFORMED / "ragged_rows.csv", 2, ("2 rows left out", "line 3", "line 4 · rejected", "has 5 values")),
        (picture, None, ("photo.jsonl", "PNG image")),
        (MALFORMED / "folder_without_data", None, ("holds no dataset",)),
        (MALFORMED / "truncated_last_line.jsonl", 3, ("1 row left out", "line 4", "is cut off")),
        (MALFORMED / "chosen_equals_rejected.jsonl", None, ("None of the 3 rows", "line 1, 'rejected'")),
        (MALFORMED / "mixed_preference_and_sft.jsonl", 2, ("line 2 · chosen", "this row has prompt, completion")),
    ]
    for path, kept, phrases in sequence:
        assert drop_paths(window, [path])
        wait_for_dataset(qtbot, window)
        if kept is None:
            _assert_refused(window, phrases)
        else:
            _assert_partly_loaded(window, kept, phrases)
        _assert_window_answers(qtbot, window)

    good = write_preference_file(tmp_path / "good.jsonl", n=24)
    assert drop_paths(window, [good])
    wait_for_dataset(qtbot, window)
    _assert_partly_loaded(window, 24, ("No duplicates, no identical pairs, no dropped rows.",))
    qtbot.waitUntil(lambda: window.live.train_button.isEnabled(), timeout=5000)


def test_a_newer_drop_replaces_a_broken_one_still_loading(qtbot, window, tmp_path):
    good = write_preference_file(tmp_path / "good.jsonl", n=12)
    assert drop_paths(window, [MALFORMED / "trailing_comma.json"])
    assert drop_paths(window, [good])  # before the first has been read
    wait_for_dataset(qtbot, window)
    qtbot.wait(200)  # a late answer for the first file would land now
    assert window.data_panel.current() is not None
    assert window.data_panel.current().path == str(good)
    assert not window.data_panel.banner.isVisible()
