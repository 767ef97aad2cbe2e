"""Train a tiny model through the window and the real worker process:
drop the data, pick DPO, watch every DPO metric reach the plots, stop,
find the run in the list and reopen its plots. Then close mid-run."""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402

from app.train.metric_catalog import EXPECTED_KEYS  # noqa: E402
from tests.gui_helpers import (  # noqa: E402
    drop_paths,
    make_studio_window,
    prepare_tiny_dpo,
    wait_pid_gone,
    write_preference_file,
)

pytestmark = [pytest.mark.gui, pytest.mark.slow]


@pytest.fixture
def window(qtbot, studio_home):
    return make_studio_window(qtbot)



def _prepare(qtbot, window, data: Path, model_dir: Path, max_steps: int) -> None:
    prepare_tiny_dpo(qtbot, window, data, model_dir, max_steps=max_steps)


def test_train_watch_stop_and_reopen(qtbot, window, tiny_model_dir, tmp_path):
    _prepare(qtbot, window, write_preference_file(tmp_path / "prefs.jsonl"), tiny_model_dir, max_steps=400)
    # With a local model picked, the report counts lengths in that model's tokens.
    qtbot.waitUntil(lambda: "Lengths (tokens" in window.data_panel.report_view.toPlainText(), timeout=20_000)

    with qtbot.waitSignal(window.controller.supervisor.sig_launched, timeout=20_000) as launched:
        window.live.train_button.click()
    run_dir = Path(launched.args[0])
    pid = window.controller.worker_pid()
    assert pid is not None

    plots = window.live.plots
    # Every DPO metric must reach its plot, and the plots must actually hold the points.
    qtbot.waitUntil(lambda: all(plots.series_length(k) >= 2 for k in EXPECTED_KEYS["dpo"]), timeout=90_000)
    # Visible plots are drawn by the timer; the rest wait until scrolled into view. Draw all now.
    qtbot.waitUntil(lambda: not plots.pending_plot_ids() and plots.drawn_length("loss") >= 1, timeout=10_000)
    plots.redraw_now()
    for key in EXPECTED_KEYS["dpo"]:
        xs, ys = plots.series_data(key)
        assert len(xs) >= 2 and all(x > 0 for x in xs), key
        assert plots.drawn_length(key) == len(xs), key
    assert {"rewards", "logps", "margins", "accuracy"} <= set(plots.plot_ids())
    # Progress text is refreshed at most ten times a second.
    qtbot.waitUntil(lambda: window.live.progress.value() >= 2, timeout=3000)
    assert window.live.progress.maximum() == 400
    assert "tokens/s" in window.live.stats_label.text() and "ETA" in window.live.stats_label.text()
    qtbot.waitUntil(lambda: "[studio]" in window.live.console.toPlainText() or
                    window.live.console.toPlainText().strip() != "", timeout=10_000)

    with qtbot.waitSignal(window.controller.supervisor.sig_finished, timeout=60_000) as finished:
        window.live.stop_button.click()
    assert finished.args[0].stopped
    qtbot.waitUntil(lambda: not window.controller.is_running(), timeout=30_000)
    assert wait_pid_gone(pid), "the worker process outlived the stop"
    assert (run_dir / "adapter").is_dir()
    # the estimate is kept next to the measured peak
    record = json.loads((run_dir / "memory.json").read_text())
    assert record["measured_peak_mb"] > 0 and record["estimate"]["total_mb"] > 0
    assert window.live.banner.isVisible() and "Stopped" in window.live.banner.title()
    assert window.live.train_button.isEnabled()

    tab = window.runs_tab
    qtbot.waitUntil(lambda: str(run_dir) in tab.run_dirs(), timeout=10_000)
    qtbot.waitUntil(lambda: tab._summaries[str(run_dir)].status == "stopped", timeout=10_000)
    window.tabs.setCurrentWidget(tab)
    with qtbot.waitSignal(tab.sig_runs_opened, timeout=10_000):
        tab.select_runs([str(run_dir)])
    live_steps = len(plots.series_data("loss")[0])
    for key in EXPECTED_KEYS["dpo"]:
        assert tab.plots.series_length(key, run=str(run_dir)) == live_steps, key
    assert "method: dpo" in tab.config_view.toPlainText()


def test_closing_during_a_run_stops_it_and_leaves_no_process(qtbot, window, tiny_model_dir, tmp_path,
                                                              monkeypatch):
    _prepare(qtbot, window, write_preference_file(tmp_path / "prefs.jsonl"), tiny_model_dir, max_steps=400)
    with qtbot.waitSignal(window.controller.supervisor.sig_run_started, timeout=60_000):
        window.start_training()
    pid = window.controller.worker_pid()
    run_dir = Path(window.live.run_dir())

    asked = []
    monkeypatch.setattr(window, "ask_stop_on_close", lambda: asked.append(True) or False)
    window.close()
    assert asked and window.isVisible() and window.controller.is_running()  # "No" keeps training

    monkeypatch.setattr(window, "ask_stop_on_close", lambda: True)
    window.close()
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=60_000)
    assert not window.controller.is_running()
    assert wait_pid_gone(pid)
    assert (run_dir / "adapter").is_dir()


def test_a_failing_run_shows_its_error_and_hint(qtbot, window, tmp_path):
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "llama"}')  # passes the file checks, fails to load
    (broken / "model.safetensors").write_bytes(b"not really weights")
    (broken / "tokenizer.json").write_text("{}")
    _prepare(qtbot, window, write_preference_file(tmp_path / "prefs.jsonl"), broken, max_steps=4)
    with qtbot.waitSignal(window.controller.supervisor.sig_failed, timeout=90_000) as failed:
        window.live.train_button.click()
    event = failed.args[0]
    qtbot.waitUntil(lambda: not window.controller.is_running(), timeout=30_000)
    banner = window.live.banner
    assert banner.isVisible() and banner.severity() == "error"
    assert event.message and event.message.splitlines()[0][:40] in banner.text()
    if event.hint:
        assert "What to try" in banner.text()
    assert window.live.train_button.isEnabled()  # the window is ready for another try
    qtbot.waitUntil(lambda: any(s.status == "failed" for s in window.runs_tab.summaries()), timeout=10_000)


def test_evaluation_progress_one_clock_and_a_cleared_outcome(qtbot, window, tiny_model_dir, tmp_path, monkeypatch,
                                                            capsys):
    from backend.cli.main import main as cli_main
    from backend.testing.fault_injection import ENV_VAR
    from backend.runs.clock import format_duration

    monkeypatch.setenv(ENV_VAR, "slow_eval=0.7")  # 8 evaluation batches of 0.7 s: long enough to watch
    prepare_tiny_dpo(qtbot, window, write_preference_file(tmp_path / "prefs.jsonl"), tiny_model_dir, max_steps=2,
                     eval_fraction=0.5, eval_steps=0, eval_max_rows=8, eval_batch_size=1)
    window.live.train_button.click()
    live = window.live
    qtbot.waitUntil(lambda: live.progress.format().startswith("final evaluation"), timeout=90_000)
    assert live.progress.maximum() == 8
    qtbot.waitUntil(lambda: "evaluation ETA" in live.stats_label.text(), timeout=5_000)
    assert live.phase_label.text().startswith("Final evaluation")
    qtbot.waitUntil(lambda: live.progress.value() >= 2, timeout=10_000)
    if os.environ.get("ALIGNSTUDIO_SHOTS"):  # a folder to keep a screen of the window mid-evaluation
        window.grab().save(os.path.join(os.environ["ALIGNSTUDIO_SHOTS"], "window-final-evaluation.png"))

    with qtbot.waitSignal(window.controller.supervisor.sig_finished, timeout=60_000) as finished:
        pass
    event = finished.args[0]
    qtbot.waitUntil(lambda: not window.controller.is_running(), timeout=30_000)
    took = format_duration(event.elapsed_seconds)
    # One clock: the banner, the live elapsed, the Runs tab and the CLI say the same.
    assert live.banner.title() == f"Finished 2 steps in {took}"
    assert live.stats_label.text().startswith(f"Elapsed {took}")
    tab = window.runs_tab
    run_dir = live.run_dir()
    qtbot.waitUntil(lambda: run_dir in tab.run_dirs() and tab._summaries[run_dir].status == "completed",
                    timeout=10_000)
    row = tab.run_dirs().index(run_dir)
    assert tab.table.item(row, 6).text() == took
    capsys.readouterr()
    assert cli_main(["runs", "--runs-dir", str(Path(run_dir).parent)]) == 0
    assert f"took {took:>7}" in capsys.readouterr().out

    # A data error after the run: "Done" goes, the error is the news.
    assert live.phase_label.text().startswith("Done")
    bad = tmp_path / "bad.jsonl"
    bad.write_text("this is not json\n")
    assert drop_paths(window, [bad])
    qtbot.waitUntil(lambda: window.data_panel.failure() is not None, timeout=30_000)
    assert not live.banner.isVisible() and not live.phase_label.text().startswith("Done")
