"""Faults seen through the window: a worker killed mid-run is shown with its log and
resumed from its checkpoint with the plots going on where they stopped; an
out-of-memory failure leaves the window usable and no worker behind."""

from __future__ import annotations

import os
import signal
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402

from backend.testing.fault_injection import ENV_VAR  # noqa: E402
from tests.gui_helpers import make_studio_window, prepare_tiny_dpo, wait_pid_gone, write_preference_file  # noqa: E402

pytestmark = [pytest.mark.gui, pytest.mark.slow]


@pytest.fixture
def window(qtbot, studio_home):
    return make_studio_window(qtbot)


def _prepare(qtbot, window, data: Path, model_dir: Path, **values) -> None:
    prepare_tiny_dpo(qtbot, window, data, model_dir, logging_steps=1, **values)


def test_killed_worker_is_shown_with_its_log_and_resumes_without_a_gap(qtbot, window, tiny_model_dir, tmp_path,
                                                                         monkeypatch):
    monkeypatch.setenv(ENV_VAR, "slow_step=0.3")
    _prepare(qtbot, window, write_preference_file(tmp_path / "prefs.jsonl"), tiny_model_dir,
             max_steps=12, save_steps=4)
    with qtbot.waitSignal(window.controller.supervisor.sig_launched, timeout=20_000) as launched:
        window.live.train_button.click()
    run_dir = Path(launched.args[0])
    pid = window.controller.worker_pid()
    plots = window.live.plots
    qtbot.waitUntil(lambda: plots.series_length("loss") >= 6, timeout=90_000)

    with qtbot.waitSignal(window.controller.supervisor.sig_failed, timeout=30_000) as failed:
        os.kill(pid, signal.SIGKILL)
    assert failed.args[0].kind == "killed"
    qtbot.waitUntil(lambda: not window.controller.is_running(), timeout=30_000)
    banner = window.live.banner
    assert banner.isVisible() and banner.severity() == "error" and "killed" in banner.title()
    assert banner.details_open() and "step 5/12" in banner.details()  # the end of the worker log
    assert "step 5/12" in window.live.console.toPlainText()  # the console got the log's last lines too
    steps_before = list(plots.series_data("loss")[0])
    assert window.live.train_button.isEnabled()  # the window is usable again

    resume = window.live.resume_button
    qtbot.waitUntil(lambda: resume.isVisible() and resume.text() == "Resume from step 4", timeout=10_000)
    tab = window.runs_tab
    qtbot.waitUntil(lambda: getattr(tab._summaries.get(str(run_dir)), "status", "") == "failed", timeout=10_000)
    tab.select_runs([str(run_dir)])
    assert tab.resume_button.isEnabled() and "step 4 of 12" in tab.resume_button.toolTip()

    monkeypatch.delenv(ENV_VAR)
    with qtbot.waitSignal(window.controller.supervisor.sig_finished, timeout=120_000) as finished:
        resume.click()
        # The history is back on the plots at once, before the worker has loaded anything.
        assert list(plots.series_data("loss")[0]) == steps_before
    assert finished.args[0].step == 12 and not finished.args[0].stopped
    window.live.flush()
    xs = [int(x) for x in plots.series_data("loss")[0]]
    assert xs == list(range(1, 13))  # steps 5-6 were replaced by the resumed ones: no gap, no repeat
    assert not resume.isVisible()
    qtbot.waitUntil(lambda: tab._summaries.get(str(run_dir)) is not None
                    and tab._summaries[str(run_dir)].status == "completed", timeout=10_000)
    # Reopened from the folder, the run reads as one continuous curve as well.
    window.tabs.setCurrentWidget(tab)
    with qtbot.waitSignal(tab.sig_runs_opened, timeout=10_000):
        tab.select_runs([str(run_dir)])
    assert tab.plots.series_length("loss", run=str(run_dir)) == 12


def test_out_of_memory_is_explained_and_the_window_stays_usable(qtbot, window, tiny_model_dir, tmp_path,
                                                                monkeypatch):
    monkeypatch.setenv(ENV_VAR, "oom@2")
    _prepare(qtbot, window, write_preference_file(tmp_path / "prefs.jsonl"), tiny_model_dir, max_steps=10)
    with qtbot.waitSignal(window.controller.supervisor.sig_launched, timeout=20_000):
        window.live.train_button.click()
    pid = window.controller.worker_pid()
    with qtbot.waitSignal(window.controller.supervisor.sig_failed, timeout=90_000) as failed:
        pass
    assert failed.args[0].kind == "out_of_memory"
    qtbot.waitUntil(lambda: not window.controller.is_running(), timeout=30_000)
    assert wait_pid_gone(pid)  # the worker's memory went with it
    banner = window.live.banner
    assert "out of memory" in banner.title() and "max length" in banner.text()
    assert window.live.train_button.isEnabled()
    with qtbot.waitSignal(window.runs_tab.sig_runs_listed, timeout=10_000):
        window.runs_tab.refresh()  # a listing after the run ended, which decides about Resume
    assert not window.live.resume_button.isVisible()  # no checkpoint yet: nothing to resume

    # Usable means usable: the same window trains again once the fault is gone.
    monkeypatch.delenv(ENV_VAR)
    window.method_panel.set_values({"max_steps": 2})
    with qtbot.waitSignal(window.controller.supervisor.sig_finished, timeout=90_000) as finished:
        window.live.train_button.click()
    assert finished.args[0].step == 2


def test_force_stop_ends_a_worker_that_does_not_stop(qtbot, window, tiny_model_dir, tmp_path, monkeypatch):
    import app.train.live_training_view as live_view

    monkeypatch.setattr(live_view, "FORCE_STOP_AFTER_MS", 500)
    window.live._force_timer.setInterval(500)
    monkeypatch.setenv(ENV_VAR, "hang@3")
    _prepare(qtbot, window, write_preference_file(tmp_path / "prefs.jsonl"), tiny_model_dir,
             max_steps=10, save_steps=1)
    with qtbot.waitSignal(window.controller.supervisor.sig_checkpoint, timeout=90_000,
                          check_params_cb=lambda e: e.step == 2):
        window.live.train_button.click()
    pid = window.controller.worker_pid()
    window.live.stop_button.click()
    stop = window.live.stop_button
    qtbot.waitUntil(lambda: stop.isEnabled() and stop.text() == "Force stop", timeout=10_000)
    stop.click()
    qtbot.waitUntil(lambda: not window.controller.is_running(), timeout=30_000)
    assert wait_pid_gone(pid)
    assert window.live.banner.isVisible()
    resume = window.live.resume_button
    qtbot.waitUntil(lambda: resume.isVisible() and resume.text() == "Resume from step 2", timeout=10_000)


STUDIO_SCRIPT = """
import sys, time
from app.studio_app import create_application, open_window
from tests.gui_helpers import write_preference_file
app = create_application()
window = open_window(data=str(write_preference_file(__import__('pathlib').Path(sys.argv[2]))))
def wait(cond, seconds):
    end = time.time() + seconds
    while not cond():
        app.processEvents()
        time.sleep(0.02)
        if time.time() > end:
            raise SystemExit('timed out')
wait(lambda: window.data_panel.current() is not None, 60)
window.method_panel.set_method('dpo')
window.model_panel.set_kind('local')
window.model_panel.text.setText(sys.argv[1])
window.method_panel.set_values(dict(quantization='none', max_steps=100000, per_device_train_batch_size=2,
    gradient_checkpointing=False, eval_fraction=0.0, max_length=64, save_steps=0, lora_r=8, lora_alpha=16))
wait(lambda: window.live.train_button.isEnabled(), 30)
window.live.train_button.click()
wait(lambda: window.live.plots.series_length('loss') >= 1, 120)
print(window.controller.worker_pid(), window.live.run_dir(), flush=True)
while True:
    app.processEvents()
    time.sleep(0.02)
"""


def test_a_killed_studio_leaves_no_worker_behind(tiny_model_dir, tmp_path, studio_home):
    """The whole window process dies (SIGKILL: no closeEvent, no atexit); its worker notices
    that its supervisor is gone, saves the adapter and exits."""
    import subprocess
    import sys

    import psutil

    from backend.core.events import RunFinished
    from backend.runs.folder import read_events

    root = Path(__file__).resolve().parent.parent
    studio = subprocess.Popen([sys.executable, "-c", STUDIO_SCRIPT, str(tiny_model_dir), str(tmp_path / "p.jsonl")],
                              cwd=root, stdout=subprocess.PIPE, text=True,
                              env=dict(os.environ, ALIGNSTUDIO_HOME=str(studio_home), PYTHONPATH=str(root)))
    try:
        pid_text, run_dir = studio.stdout.readline().split()
    except ValueError:
        studio.kill()
        raise AssertionError("the studio did not start a run") from None
    worker = psutil.Process(int(pid_text))
    os.kill(studio.pid, signal.SIGKILL)
    studio.wait()
    worker.wait(timeout=60)  # raises TimeoutExpired if the worker keeps training
    events = read_events(run_dir)
    assert isinstance(events[-1], RunFinished) and events[-1].stopped
    assert (Path(run_dir) / "adapter" / "adapter_config.json").exists()


def test_resuming_a_run_whose_data_moved_is_refused_in_place(qtbot, window, tiny_model_dir, easy_preferences,
                                                             studio_home):
    from backend.core.paths import runs_dir
    from tests.conftest import tiny_run_config
    from tests.test_preflight import fake_crashed_run

    run_dir = fake_crashed_run(runs_dir(), tiny_run_config("dpo", tiny_model_dir, easy_preferences))
    easy_preferences.unlink()
    tab = window.runs_tab
    tab.refresh()
    qtbot.waitUntil(lambda: str(run_dir) in tab.run_dirs(), timeout=10_000)
    tab.select_runs([str(run_dir)])
    assert tab.resume_button.isEnabled()  # resumable as far as the folder knows
    tab.resume_button.click()
    banner = window.live.banner
    assert banner.isVisible() and "was not resumed" in banner.title() and "no longer there" in banner.text()
    assert not window.controller.is_running() and not window.live.is_running()
    assert not (run_dir / "worker.pid").exists()
