"""The main window without training: data by drag and drop, method choice,
validation, persistence, the runs list, the launcher."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402

from tests.gui_helpers import (  # noqa: E402
    drop_paths,
    make_studio_window,
    wait_for_dataset,
    write_completion_file,
    write_preference_file,
)

pytestmark = pytest.mark.gui


@pytest.fixture
def window(qtbot, studio_home):
    return make_studio_window(qtbot)


ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "resources" / "demo" / "demo_preferences.jsonl"


def _run_python(code: str, env_home: Path, timeout: int = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, ALIGNSTUDIO_HOME=str(env_home), QT_QPA_PLATFORM="offscreen",
               PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_window_never_imports_torch(tmp_path):
    """A fresh process: build the window, load a dataset, and check what got imported."""
    data = write_preference_file(tmp_path / "prefs.jsonl")
    result = _run_python(f"""
        import sys, time
        from app.studio_app import create_application, open_window
        app = create_application()
        window = open_window(probe_device=False)
        window.data_panel.load_path({str(data)!r})
        deadline = time.time() + 60
        while window.data_panel.current() is None and time.time() < deadline:
            app.processEvents()
            time.sleep(0.02)
        assert window.data_panel.current() is not None, window.data_panel.failure()
        heavy = [m for m in ("torch", "transformers", "trl", "peft", "bitsandbytes") if m in sys.modules]
        print("HEAVY", heavy)
        window.close()
    """, tmp_path / "home")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "HEAVY []" in result.stdout


def test_cli_subcommands_bypass_qt(tmp_path):
    data = write_preference_file(tmp_path / "prefs.jsonl")
    result = _run_python(f"""
        import sys
        from app.launcher import main
        code = main(["data", "inspect", {str(data)!r}])
        print("QT", "PySide6" in sys.modules, "CODE", code)
    """, tmp_path / "home")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "QT False CODE 0" in result.stdout
    assert "Preference pairs" in result.stdout


def test_dropping_a_file_shows_report_preview_and_methods(qtbot, window, tmp_path):
    data = DEMO if DEMO.exists() else write_preference_file(tmp_path / "prefs.jsonl")
    assert not window.live.train_button.isEnabled()
    assert drop_paths(window, [data])  # anywhere on the window works
    wait_for_dataset(qtbot, window)
    result = window.data_panel.current()
    assert result is not None, window.data_panel.failure()
    report = window.data_panel.report_view.toPlainText()
    assert "Preference pairs" in report and "rows kept" in report
    preview = window.data_panel.preview
    assert preview.row_count() > 0
    assert preview.model.columns()[:3] == ["prompt", "chosen", "rejected"]
    combo = window.method_panel.method_combo
    enabled = {combo.itemData(i) for i in range(combo.count()) if combo.model().item(i).isEnabled()}
    from backend.methods import methods_for_data

    assert enabled == set(methods_for_data("pairs")) and {"sft", "dpo", "orpo"} <= enabled
    window.method_panel.set_method("dpo")
    qtbot.waitUntil(lambda: window.live.train_button.isEnabled(), timeout=5000)
    assert window.settings.recent_files()[0] == str(Path(data).resolve())
    memory = window.memory_panel
    # the estimate for the embedded model, before any training
    qtbot.waitUntil(lambda: memory.last_estimate is not None, timeout=10_000)
    assert "Peak memory" in memory.headline.text() and "MB" in memory.parts.text()


def test_sft_only_data_disables_preference_methods_with_a_reason(qtbot, window, tmp_path):
    window.method_panel.set_method("dpo")
    assert drop_paths(window.data_panel.drop_zone, [write_completion_file(tmp_path / "sft.jsonl")])
    wait_for_dataset(qtbot, window)
    combo = window.method_panel.method_combo
    items = {combo.itemData(i): combo.model().item(i) for i in range(combo.count())}
    assert items["sft"].isEnabled() and not items["dpo"].isEnabled() and not items["orpo"].isEnabled()
    assert "chosen" in items["dpo"].toolTip()
    reason = window.method_panel.reason_label
    assert reason.isVisible()
    # The method that was picked gets its reason in full; the others are named, not explained at length.
    assert items["dpo"].toolTip() in reason.text() and items["orpo"].toolTip() not in reason.text()
    assert "Not for this data:" in reason.text() and "ORPO" in reason.text()
    assert len(reason.text().splitlines()) == 2
    assert window.method_panel.method() == "sft"  # switched to a method the data supports


def test_malformed_file_shows_an_error_and_the_window_keeps_working(qtbot, window, tmp_path):
    bad = tmp_path / "broken.jsonl"
    bad.write_text('{"prompt": "a", "chosen": \n not json at all\n', encoding="utf-8")
    assert drop_paths(window, [bad])
    wait_for_dataset(qtbot, window)
    banner = window.data_panel.banner
    assert banner.isVisible() and banner.severity() == "error"
    assert "broken.jsonl" in banner.text()
    assert not window.live.train_button.isEnabled()
    assert "dataset" in window.live.ready_hint.text().lower()
    good = write_preference_file(tmp_path / "good.jsonl")
    assert drop_paths(window, [good])
    wait_for_dataset(qtbot, window)
    assert window.data_panel.current() is not None
    assert not banner.isVisible()


def test_column_mapping_is_remembered_for_the_file(qtbot, window, tmp_path):
    odd = tmp_path / "odd_columns.jsonl"
    with odd.open("w", encoding="utf-8") as fh:
        for i in range(12):
            fh.write(json.dumps({"q": f"question {i}", "a_plus": f"good answer {i}", "a_minus": f"bad {i}"}) + "\n")
    window.data_panel.load_path(str(odd))
    wait_for_dataset(qtbot, window)
    assert window.data_panel.current() is None  # nothing recognisable
    assert window.data_panel.override_section.isVisible()
    qtbot.waitUntil(lambda: window.data_panel.format_combo.count() > 1, timeout=20000)
    panel = window.data_panel
    panel.format_combo.setCurrentIndex(panel.format_combo.findData("preference"))
    for name, column in (("prompt", "q"), ("chosen", "a_plus"), ("rejected", "a_minus")):
        panel._mapping_combos[name].setCurrentText(column)
    panel.apply_override_button.click()
    wait_for_dataset(qtbot, window)
    assert panel.current() is not None, panel.failure()
    assert panel.current().loaded.column_mapping["chosen"] == "a_plus"
    remembered = window.settings.data_override(str(odd))
    assert remembered["column_map"] == {"prompt": "q", "chosen": "a_plus", "rejected": "a_minus"}
    # Loading the same file again (a new session would do the same) applies the mapping by itself.
    window.data_panel.load_path(str(odd))
    wait_for_dataset(qtbot, window)
    assert panel.current() is not None
    cfg, problems = window.build_config()
    assert cfg.column_map == remembered["column_map"] and cfg.data_format == "preference"


def test_invalid_settings_are_flagged_inline_and_block_training(qtbot, window, tmp_path):
    window.data_panel.load_path(str(write_preference_file(tmp_path / "prefs.jsonl")))
    wait_for_dataset(qtbot, window)
    window.method_panel.set_method("dpo")
    qtbot.waitUntil(lambda: window.live.train_button.isEnabled(), timeout=5000)
    lr = window.method_panel.editor("learning_rate")
    lr.setText("fast")
    lr.textEdited.emit("fast")
    qtbot.waitUntil(lambda: not window.live.train_button.isEnabled(), timeout=3000)
    assert "learning_rate" in window.method_panel.shown_problems()
    lr.setText("1e-5")
    lr.textEdited.emit("1e-5")
    loss = window.method_panel.editor("loss_type")
    loss.setCurrentIndex(loss.findData("robust"))  # robust DPO needs label smoothing > 0
    qtbot.waitUntil(lambda: "label_smoothing" in window.method_panel.shown_problems(), timeout=3000)
    assert not window.live.train_button.isEnabled()
    window.method_panel.editor("label_smoothing").setText("0.1")
    window.method_panel.editor("label_smoothing").textEdited.emit("0.1")
    qtbot.waitUntil(lambda: window.live.train_button.isEnabled(), timeout=3000)


def test_method_and_settings_persist_between_sessions(qtbot, window):
    from app.main_window import StudioWindow

    window.method_panel.set_method("orpo")
    beta = window.method_panel.editor("beta")
    beta.setText("0.25")
    beta.textEdited.emit("0.25")
    window.method_panel.set_method("dpo")  # DPO keeps its own defaults
    assert window.method_panel.values()["beta"] == pytest.approx(0.1)
    window.method_panel.set_method("orpo")
    window.close()
    again = StudioWindow(probe_device=False)
    qtbot.addWidget(again)
    assert again.method_panel.method() == "orpo"
    assert again.method_panel.values()["beta"] == pytest.approx(0.25)
    again.close()


def _fake_run(root: Path, name: str, method: str, margins: list[float], stopped: bool = False) -> Path:
    from backend.core.events import RunFinished, RunStarted, TrainLog
    from backend.runs.config import default_config
    from backend.runs.folder import append_event, create_run_dir

    cfg = default_config(method, run_name=name, data_path=str(root / "data.jsonl"))
    run_dir = create_run_dir(cfg, root)
    append_event(run_dir, RunStarted(run_dir=str(run_dir), method=method, config={}, device={"kind": "cpu"},
                                     total_params=1000, trainable_params=10, total_steps=len(margins),
                                     train_rows=10, eval_rows=0, time=1_700_000_000.0))
    for step, margin in enumerate(margins, start=1):
        append_event(run_dir, TrainLog(step=step, epoch=step / 10, total_steps=len(margins),
                                       metrics={"loss": 0.7 - margin / 10, "rewards/margins": margin,
                                                "rewards/chosen": margin / 2, "rewards/rejected": -margin / 2},
                                       time=1_700_000_000.0 + step))
    append_event(run_dir, RunFinished(adapter_path=str(run_dir / "adapter"), stopped=stopped, step=len(margins),
                                      total_steps=len(margins), elapsed_seconds=len(margins), summary={},
                                      time=1_700_000_000.0 + len(margins) + 1))
    return run_dir


def test_runs_tab_reopens_overlays_and_deletes_runs(qtbot, window, studio_home):
    from backend.core.paths import runs_dir

    first = _fake_run(runs_dir(), "beta-low", "dpo", [0.0, 0.1, 0.3, 0.6])
    second = _fake_run(runs_dir(), "beta-high", "dpo", [0.0, 0.3, 0.9, 1.5, 2.0], stopped=True)
    tab = window.runs_tab
    tab.refresh()
    qtbot.waitUntil(lambda: len(tab.run_dirs()) == 2, timeout=5000)
    window.tabs.setCurrentWidget(tab)
    statuses = {tab.table.item(r, 0).text(): tab.table.item(r, 1).text() for r in range(2)}
    assert statuses == {"beta-low": "completed", "beta-high": "stopped"}

    with qtbot.waitSignal(tab.sig_runs_opened, timeout=5000):
        tab.select_runs([str(first)])
    assert tab.plots.series_length("rewards/margins", run=str(first)) == 4
    assert "method: dpo" in tab.config_view.toPlainText()

    with qtbot.waitSignal(tab.sig_runs_opened, timeout=5000):
        tab.select_runs([str(first), str(second)])
    assert set(tab.plots.runs()) == {str(first), str(second)}
    assert tab.plots.series_length("rewards/margins", run=str(second)) == 5
    # Already overlaid by the selection: the button does not offer the same again.
    assert not tab.overlay_button.isEnabled()

    tab.confirm = lambda title, text: False
    tab.select_runs([str(second)])
    tab.delete_selected()
    assert second.exists()
    tab.confirm = lambda title, text: True
    tab.delete_selected()
    assert not second.exists()
    qtbot.waitUntil(lambda: tab.run_dirs() == [str(first)], timeout=5000)


def test_reusing_a_runs_settings_fills_the_train_tab(qtbot, window, tmp_path):
    from backend.runs.config import default_config, save_yaml

    data = write_preference_file(tmp_path / "prefs.jsonl")
    run_dir = tmp_path / "runs" / "old"
    run_dir.mkdir(parents=True)
    save_yaml(default_config("orpo", data_path=str(data), beta=0.3, max_steps=12), run_dir / "config.yaml")
    window.use_run_settings(str(run_dir))
    wait_for_dataset(qtbot, window)
    assert window.method_panel.method() == "orpo"
    values = window.method_panel.values()
    assert values["beta"] == pytest.approx(0.3) and values["max_steps"] == 12
    assert window.data_panel.current_path() == str(data)


def test_demo_config_opens_with_demo_settings_and_data(qtbot, window):
    """`alignstudio --demo` (the README's first command) loads the demo run's settings and data."""
    from backend.cli.main import DEMO_CONFIG, load_config_file

    window.open_config_file(str(DEMO_CONFIG))
    wait_for_dataset(qtbot, window)
    demo = load_config_file(DEMO_CONFIG)
    assert window.method_panel.method() == "dpo"
    values = window.method_panel.values()
    assert values["max_steps"] == demo.max_steps and values["learning_rate"] == pytest.approx(demo.learning_rate)
    assert window.data_panel.current_path() == str(DEMO)


def test_unreadable_config_file_is_a_message_not_a_crash(qtbot, window, tmp_path, monkeypatch):
    from PySide6.QtWidgets import QMessageBox

    shown = []
    monkeypatch.setattr(QMessageBox, "warning", lambda *a, **k: shown.append(a[2]))
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: dpo\nbeta: [oops\n")
    window.open_config_file(str(bad))
    assert shown and "bad.yaml" in shown[0]
    assert window.isVisible()


def test_no_stale_refusal_or_data_error_survives_a_fix(qtbot, window, tmp_path, monkeypatch):
    """A model refused at Train, then fixed by going back to the embedded model; a data
    error, then a good file: nothing of the old messages stays on screen."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))
    monkeypatch.setattr("backend.runs.preflight.hub_unreachable_reason", lambda timeout=3.0: "no network here")
    window.data_panel.load_path(str(write_preference_file(tmp_path / "prefs.jsonl")))
    wait_for_dataset(qtbot, window)
    window.method_panel.set_method("dpo")
    panel = window.model_panel
    panel.source_combo.setCurrentIndex(panel.source_combo.findData("hub"))
    panel.text.setText("someone/not-downloaded")
    qtbot.waitUntil(lambda: window.live.train_button.isEnabled(), timeout=10_000)

    assert window.start_training() is False
    banner = window.live.banner
    assert banner.isVisible() and "someone/not-downloaded" in banner.text() and "no network here" in banner.text()
    assert "model" in window.method_panel.shown_problems() or "someone/not-downloaded" in banner.text()
    assert "Training was not started" in window.statusBar().currentMessage()

    panel.source_combo.setCurrentIndex(panel.source_combo.findData("embedded"))  # what the user picks
    # "Ready to train DPO on prefs.jsonl (48 rows) with Gemma 3 270M (embedded)."
    qtbot.waitUntil(lambda: "Gemma 3 270M" in window.live.phase_label.text(), timeout=10_000)
    assert window.live.train_button.isEnabled()
    assert not banner.isVisible()
    assert "not started" not in window.statusBar().currentMessage()
    assert not panel.message.isVisible()
    assert window.method_panel.shown_problems() == {}

    bad = tmp_path / "broken.jsonl"
    bad.write_text("{not json\n{nor this\n", encoding="utf-8")
    window.data_panel.load_path(str(bad))
    wait_for_dataset(qtbot, window)
    assert window.data_panel.banner.isVisible() and window.data_panel.banner.severity() == "error"
    assert window.start_training() is False  # refused again, this time for the data
    refusal = window.statusBar().currentMessage()
    assert "dataset cannot be used" in refusal
    good = write_preference_file(tmp_path / "good.jsonl", n=30)
    window.data_panel.load_path(str(good))
    qtbot.waitUntil(lambda: window.data_panel.current() is not None
                    and window.data_panel.current().path == str(good), timeout=30_000)
    assert not window.data_panel.banner.isVisible()
    assert not banner.isVisible()
    assert window.statusBar().currentMessage() != refusal
