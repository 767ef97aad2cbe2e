"""The Export dialog driven as a user would: a refused request, a real export, a stop."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from app.runs.export_dialog import ExportDialog  # noqa: E402
from backend.export.events import ExportFailed, ExportFinished  # noqa: E402

SHOTS = os.environ.get("ALIGNSTUDIO_SHOTS")  # a folder to save the dialog's screens in, when set


def shot(dialog, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        dialog.grab().save(str(Path(SHOTS) / name))


def test_formats_offer_their_own_precisions(qtbot, tmp_path):
    from test_export import fake_run

    dialog = ExportDialog(str(fake_run(tmp_path)))
    qtbot.addWidget(dialog)
    dialog.set_format("merged")
    assert [dialog.quant_box.itemData(i) for i in range(dialog.quant_box.count())] == ["float32", "bfloat16",
                                                                                       "float16"]
    assert dialog.quant_box.currentData() == "float32" and "exactly" in dialog.quant_hint.text()
    dialog.set_format("ollama")
    assert dialog.quant_box.currentData() == "q8_0"
    dialog.set_format("adapter")
    assert not dialog.quant_box.isEnabled() and dialog.request().quantization == ""
    shot(dialog, "export-dialog-adapter.png")


def test_bad_request_shows_a_banner_and_starts_nothing(qtbot, tmp_path):
    from test_export import fake_run

    dialog = ExportDialog(str(fake_run(tmp_path)))
    qtbot.addWidget(dialog)
    (tmp_path / "a-file").write_text("x")
    dialog.out_edit.setText(str(tmp_path / "a-file"))
    dialog.export_button.click()
    assert dialog.banner.isVisibleTo(dialog) and dialog.banner.severity() == "error"
    assert "is a file" in dialog.banner.text()
    assert not dialog.is_running() and dialog.export_button.isEnabled()
    dialog.out_edit.setText(str(tmp_path / "exports"))
    dialog.compare_edit.setText(str(tmp_path / "missing.jsonl"))
    dialog.export_button.click()
    assert "missing.jsonl cannot be read" in dialog.banner.text() and not dialog.is_running()


def merged_export_dialog(qtbot, run_dir: Path, out: Path, precision: str) -> ExportDialog:
    dialog = ExportDialog(str(run_dir))
    qtbot.addWidget(dialog)
    dialog.resize(620, 420)
    dialog.set_format("merged", precision)
    dialog.out_edit.setText(str(out))
    return dialog


@pytest.mark.slow
def test_merged_export_from_the_dialog_shows_its_checks(qtbot, trained_dpo_run, tmp_path):
    dialog = merged_export_dialog(qtbot, trained_dpo_run, tmp_path, "float32")
    with qtbot.waitSignal(dialog.sig_finished, timeout=180_000) as blocker:
        dialog.export_button.click()
        assert dialog.stop_button.isEnabled() and not dialog.export_button.isEnabled()
    event = blocker.args[0]
    qtbot.waitUntil(lambda: not dialog.following, timeout=30_000)
    assert isinstance(event, ExportFinished), event
    assert Path(event.path).is_dir() and dialog.progress.value() == 100
    assert "identical greedy output" in dialog.checks.text() and dialog.open_button.isEnabled()
    shot(dialog, "export-dialog-finished.png")


@pytest.mark.slow
def test_stop_from_the_dialog_leaves_nothing(qtbot, trained_dpo_run, tmp_path):
    dialog = merged_export_dialog(qtbot, trained_dpo_run, tmp_path, "bfloat16")
    with qtbot.waitSignal(dialog.sig_finished, timeout=120_000) as blocker:
        dialog.export_button.click()
        dialog.stop_button.click()
    event = blocker.args[0]
    qtbot.waitUntil(lambda: not dialog.following, timeout=30_000)
    assert isinstance(event, ExportFailed) and event.kind == "stopped", event
    assert dialog.banner.title() == "Export stopped" and dialog.export_button.isEnabled()
    assert not any(p.name.endswith("bfloat16") for p in tmp_path.iterdir())
    assert not list(tmp_path.glob(".export-*"))
    shot(dialog, "export-dialog-stopped.png")


@pytest.mark.slow
def test_runs_tab_export_button_opens_the_dialog_for_the_selected_run(qtbot, trained_dpo_run):
    from app.runs.tab import RunsTab

    tab = RunsTab(extra_roots=lambda: [str(trained_dpo_run.parent)])
    qtbot.addWidget(tab)
    tab.refresh()
    qtbot.waitUntil(lambda: tab.table.rowCount() >= 1, timeout=30_000)
    assert not tab.export_button.isEnabled()  # nothing selected yet
    tab.table.selectRow(0)
    assert tab.export_button.isEnabled()
    tab.export_button.click()
    assert tab.export_dialog.isVisible() and tab.export_dialog.run_dir == trained_dpo_run
