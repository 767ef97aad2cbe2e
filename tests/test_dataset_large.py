"""Big JSON Lines files: streamed, normalised into a memory-mapped prepared copy,
reported with bounded memory, cancellable, and read without freezing the window.

The prepared-copy threshold is lowered so that a file of tens of megabytes
takes the path a multi-gigabyte one takes; bench/bench_large_dataset.py runs
the real thing.
"""

from __future__ import annotations

import io
import json
import os
import sys
import time
import tracemalloc
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402

from backend.cli import main as cli  # noqa: E402
from backend.data import loading as dataset_loading  # noqa: E402
from backend.data.cache import KEEP_COPIES, cache_folder  # noqa: E402
from backend.data.loading import LoadCancelled, load_dataset_file, preview_rows  # noqa: E402
from backend.data.report import build_report  # noqa: E402

LINES = 80_000
SPILL_AT = 2**20
_WORDS = ("river stone light answer question garden window paper number music table green quick "
          "slow bright quiet early later simple clear warm cold open close north south east west "
          "morning evening letter picture market bridge forest island winter summer").split()
_TEXT = " ".join(_WORDS[(i * 7) % len(_WORDS)] for i in range(3000))

INVALID = {n for n in range(10_000, LINES + 1, 10_000)}
NULL_CHOSEN, DUPLICATE_OF_FIRST, IDENTICAL = 33_333, 55_555, 66_666
DROPPED = sorted(INVALID | {NULL_CHOSEN, DUPLICATE_OF_FIRST, IDENTICAL})


def _row(line: int) -> dict:
    start = (line * 37) % 2000
    return {
        "prompt": f"Question {line}: {_TEXT[start:start + 60 + line % 140]}?",
        "chosen": _TEXT[start + 5:start + 150 + line % 300],
        "rejected": _TEXT[start + 9:start + 120 + line % 250],
    }


def _line(line: int) -> str:
    if line in INVALID:
        return f'{{"prompt": "a row cut short on line {line}'
    row = _row(1 if line == DUPLICATE_OF_FIRST else line)
    if line == NULL_CHOSEN:
        row["chosen"] = None
    if line == IDENTICAL:
        row["rejected"] = row["chosen"]
    return json.dumps(row)


@pytest.fixture(scope="module")
def big_jsonl(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("big") / "big.jsonl"
    with path.open("w", encoding="utf-8") as fh:
        fh.writelines(_line(n) + "\n" for n in range(1, LINES + 1))
    return path


@pytest.fixture
def private_cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("ALIGNSTUDIO_CACHE", str(tmp_path / "cache"))
    return cache_folder()


@pytest.mark.slow  # tracemalloc makes every allocation several times slower
def test_big_file_streams_into_a_memory_mapped_copy_with_bounded_memory(big_jsonl, private_cache):
    import datasets  # noqa: F401  (imported before measuring: it is not part of the load)

    size = big_jsonl.stat().st_size
    assert size > 40 * 2**20
    tracemalloc.start()
    try:
        loaded = load_dataset_file(big_jsonl, spill_bytes=SPILL_AT)
        report = build_report(loaded)
        preview = preview_rows(loaded, 50)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert peak < 0.25 * size, f"peak Python memory {peak / 2**20:.1f} MB for a {size / 2**20:.0f} MB file"
    [cached] = loaded.dataset.cache_files
    assert Path(cached["filename"]).parent == private_cache
    assert loaded.rows_total == LINES and loaded.rows_kept == LINES - len(DROPPED) == len(loaded.dataset)
    assert [d.line for d in loaded.dropped] == DROPPED
    assert loaded.drop_counts == {"invalid_json": len(INVALID), "missing": 1, "duplicate": 1, "identical_pair": 1}
    assert loaded.dropped[DROPPED.index(DUPLICATE_OF_FIRST)].reason == "repeats an earlier line (first seen at line 1)"
    assert loaded.dropped[DROPPED.index(NULL_CHOSEN)].field == "chosen"
    assert loaded.dataset[LINES - len(DROPPED) - 1] == _row(LINES - 1)
    assert preview[0] == _row(1) and len(preview) == 50
    assert report.rows_kept == loaded.rows_kept and report.rows_measured == 20_000
    assert report.drop_reasons["not valid JSON"] == len(INVALID)


def test_a_prepared_copy_is_reused_and_replaced_when_the_file_changes(tmp_path, private_cache):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(_line(n) + "\n" for n in range(1, 201)), encoding="utf-8")
    first = load_dataset_file(path, spill_bytes=0)
    copy = Path(first.dataset.cache_files[0]["filename"])
    written = copy.stat().st_mtime_ns

    again = load_dataset_file(path, spill_bytes=0)
    assert Path(again.dataset.cache_files[0]["filename"]) == copy and copy.stat().st_mtime_ns == written
    assert (again.rows_kept, again.dropped, again.notes) == (first.rows_kept, first.dropped, first.notes)

    with path.open("a", encoding="utf-8") as fh:
        fh.write(_line(201) + "\n")
    changed = load_dataset_file(path, spill_bytes=0)
    assert changed.rows_kept == first.rows_kept + 1
    assert not copy.exists()  # the copy of the old version is gone
    assert sorted(p.suffix for p in private_cache.iterdir()) == [".arrow", ".json"]


def test_only_the_most_recently_used_copies_are_kept(tmp_path, private_cache):
    sources = []
    for i in range(KEEP_COPIES + 2):
        path = tmp_path / f"pairs{i}.jsonl"
        path.write_text("".join(_line(n) + "\n" for n in range(1 + 10 * i, 11 + 10 * i)), encoding="utf-8")
        load_dataset_file(path, spill_bytes=0)
        sources.append(str(path.resolve()))
        if i == 0:  # what a crash between writing a copy and describing it leaves
            orphan = private_cache / "orphan.arrow"
            orphan.write_bytes(b"half a copy")
            os.utime(orphan, (time.time() - 3 * 86400,) * 2)

    descriptions = list(private_cache.glob("*.json"))
    assert {json.loads(d.read_text())["source"] for d in descriptions} == set(sources[-KEEP_COPIES:])
    assert sorted(p.name for p in private_cache.iterdir()) == sorted(
        name for d in descriptions for name in (d.name, d.with_suffix(".arrow").name))


def test_should_stop_ends_the_scan_promptly_and_leaves_no_partial_copy(big_jsonl, private_cache):
    seen = []

    def progress(done, total):
        seen.append((time.perf_counter(), done, total))

    with pytest.raises(LoadCancelled):
        load_dataset_file(big_jsonl, spill_bytes=SPILL_AT, progress=progress, should_stop=lambda: bool(seen))
    stopped_at = time.perf_counter()
    (asked, done, total), = seen
    assert done < total and stopped_at - asked < 0.5
    assert not private_cache.exists() or not any(private_cache.iterdir())


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_cli_inspect_shows_how_far_the_scan_is_on_a_terminal(tmp_path, monkeypatch, capsys):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(_line(n) + "\n" for n in range(1, 2001)), encoding="utf-8")
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert cli.main(["data", "inspect", str(path), "--tokenizer", ""]) == 0
    shown = terminal.getvalue()
    assert "Scanning… 100% (" in shown and " MB)" in shown
    assert shown.endswith("\r\033[K")  # the progress line is wiped before the report
    assert "2000 read, 2000 kept, 0 dropped" in capsys.readouterr().out


# ------------------------------------------------------------------- the window


@pytest.mark.gui
def test_the_window_stays_responsive_while_a_big_file_is_scanned(qtbot, big_jsonl, tmp_path, monkeypatch):
    from PySide6.QtCore import QElapsedTimer, QTimer

    from app.train.dataset_loader import DatasetLoader

    monkeypatch.setattr(dataset_loading, "SPILL_BYTES", SPILL_AT)
    monkeypatch.setenv("ALIGNSTUDIO_CACHE", str(tmp_path / "first-cache"))
    loader = DatasetLoader()
    events = []
    loader.sig_progress.connect(lambda p: events.append(("progress", p.bytes_done, p.text)))
    loader.sig_preview.connect(lambda rows: events.append(("preview", len(rows))))
    loader.sig_loaded.connect(lambda result: events.append(("loaded", result)))

    # The window has loaded its data layer before a user drops a big file (DataPanel.preload,
    # then usually the demo); a first small load does the same one-time imports here, which in
    # a fresh environment (no bytecode yet) held the interpreter for 0.6 s once in CI.
    warm_up = tmp_path / "warm_up.jsonl"
    warm_up.write_text("".join(_line(n) + "\n" for n in range(1, 11)), encoding="utf-8")
    loader.load(str(warm_up))
    qtbot.waitUntil(lambda: bool(events) and events[-1][0] == "loaded", timeout=60_000)
    assert loader.wait(30_000)
    events.clear()

    # The window freezes its long-lived heap (StudioWindow.freeze_heap) so that a full garbage
    # collection does not pause the GUI; this process holds every earlier test's objects too.
    import gc

    gc.collect()
    gc.freeze()
    # The stall probe: a 10 ms timer notes the longest gap between its ticks.
    clock, gaps = QElapsedTimer(), []
    clock.start()
    probe = QTimer()
    probe.setInterval(10)
    probe.timeout.connect(lambda: gaps.append(clock.restart()))
    probe.start()
    started = time.perf_counter()
    loader.load(str(big_jsonl))
    qtbot.waitUntil(lambda: bool(events) and events[-1][0] == "loaded", timeout=60_000)
    full_scan = time.perf_counter() - started
    probe.stop()
    gc.unfreeze()  # the objects of this test process stay collectable for the tests after it

    kinds = [e[0] for e in events]
    assert kinds.index("preview") < kinds.index("loaded")
    scanned = [e[1] for e in events if e[0] == "progress" and e[2].startswith("Scanning")]
    assert len(scanned) >= 2 and scanned == sorted(scanned)
    assert any("%" in e[2] and "MB)" in e[2] for e in events if e[0] == "progress")
    assert events[-1][1].loaded.rows_kept == LINES - len(DROPPED)
    assert max(gaps) < 500, f"the event loop stalled for {max(gaps)} ms"

    # A new drop while a scan runs: the old scan stops at once, the new file wins.
    monkeypatch.setenv("ALIGNSTUDIO_CACHE", str(tmp_path / "second-cache"))  # no copy to reuse
    events.clear()
    small = tmp_path / "small.jsonl"
    small.write_text("".join(_line(n) + "\n" for n in range(1, 21)), encoding="utf-8")
    scans = []
    real_load = dataset_loading.load_dataset_file

    def watched_load(path, *args, progress=None, **kwargs):
        scan = {"path": str(path), "bytes": 0, "ended": "running"}
        scans.append(scan)

        def noted(done, total):
            scan["bytes"] = done
            if progress is not None:
                progress(done, total)

        try:
            loaded = real_load(path, *args, progress=noted, **kwargs)
        except BaseException as err:
            scan["ended"] = type(err).__name__
            raise
        scan["ended"] = "finished"
        return loaded

    monkeypatch.setattr(dataset_loading, "load_dataset_file", watched_load)
    loader.load(str(big_jsonl))
    qtbot.waitUntil(lambda: any(e[0] == "preview" for e in events), timeout=30_000)
    replaced = time.perf_counter()
    loader.load(str(small))
    qtbot.waitUntil(lambda: events[-1][0] == "loaded", timeout=30_000)
    assert loader.wait(30_000)
    # The scan of the big file itself ended early, cancelled: how far it read, and how it ended.
    # (The whole scan takes under a second on an idle machine, so a timing bound alone cannot
    # tell a stopped scan from a finished one; it stays as a bound on the swap.)
    (big_scan,) = [s for s in scans if s["path"] == str(big_jsonl)]
    assert big_scan["ended"] == "LoadCancelled", big_scan
    assert big_scan["bytes"] < 0.9 * big_jsonl.stat().st_size, big_scan
    assert time.perf_counter() - replaced < max(full_scan / 2, 2.0)
    assert events[-1][1].path == str(small)
    assert [e for e in events if e[0] == "loaded"] == [events[-1]]


@pytest.mark.gui
def test_the_data_panel_shows_how_far_the_scan_is_and_the_first_rows_early(qtbot, big_jsonl, tmp_path, monkeypatch):
    import re

    from tests.gui_helpers import drop_paths, make_studio_window, wait_for_dataset

    monkeypatch.setattr(dataset_loading, "SPILL_BYTES", SPILL_AT)
    monkeypatch.setenv("ALIGNSTUDIO_CACHE", str(tmp_path / "cache"))
    window = make_studio_window(qtbot)
    panel = window.data_panel
    # Connected after the panel's own slots, so these see what the panel made of each signal.
    shown = []
    panel.loader.sig_progress.connect(
        lambda _: shown.append(("label", panel.busy_label.isVisible(), panel.busy_label.text())))
    panel.loader.sig_preview.connect(lambda _: shown.append(
        ("rows", panel.preview.isVisible(), panel.preview.row_count(), panel.report_view.isVisible(),
         panel.current())))

    assert drop_paths(window, [big_jsonl])
    wait_for_dataset(qtbot, window)

    labels = [text for kind, visible, text, *_ in shown if kind == "label" and visible]
    assert any(re.fullmatch(r"Scanning… \d{1,3}% \(\d+\.\d of 5\d\.\d MB\)", text) for text in labels), labels
    assert ("rows", True, 50, False, None) in shown  # the first rows, before the report and the result
    assert panel.current() is not None and panel.report_view.isVisible() and not panel.busy_label.isVisible()
    assert panel.preview.row_count() == 50
    assert f"{LINES - len(DROPPED):,} rows kept" in panel.report_view.toPlainText()
