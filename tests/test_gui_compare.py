"""The Compare tab driven like a user would, on a tiny DPO run trained through the real engine.

One run is trained for the module and one tab (with its worker) serves the tests
in file order; a model load costs seconds even for the tiny model, so the tests
that need a fresh worker (crash, release) come last. Settings keep answers
short and greedy: the whole file runs in about a minute on two cores.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import psutil  # noqa: E402
import pytest  # noqa: E402

from backend.compare.export import read_jsonl_export, summary_path_for  # noqa: E402
from backend.runs.folder import list_runs  # noqa: E402

pytestmark = [pytest.mark.gui, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "Question 3: can you help me with task 3?"
FAST = {"greedy": True, "max_new_tokens": 10}


@pytest.fixture(scope="module")
def compare_run(trained_dpo_run):
    """The shared tiny DPO run: its runs folder and the run itself."""
    return trained_dpo_run.parent, trained_dpo_run


@pytest.fixture(scope="module")
def tab(qapp, compare_run, tmp_path_factory):
    from app.compare.tab import CompareTab
    from app.theme import apply_theme

    apply_theme(qapp)
    log = tmp_path_factory.mktemp("gui-compare-log") / "generation.log"
    widget = CompareTab(log_path=str(log))
    widget.resize(1480, 880)
    widget.set_runs(list_runs(compare_run[0]))
    widget.sampling_panel.set_values(FAST)
    widget.show()
    yield widget
    widget.release_worker()
    widget.link.wait_released(15)
    widget.close()
    widget.deleteLater()


def _ready(qtbot, tab, timeout=60_000):
    """Show the tab (which loads the picked run) and wait until the model serves."""
    if not tab.isVisible():
        tab.show()
    if tab.link.state() in ("off", "failed"):
        tab.picker.request_load()
    qtbot.waitUntil(lambda: tab.link.state() == "ready", timeout=timeout)
    return tab.link.ready_event()


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_token_deltas_merge_per_pane_and_never_pass_their_done():
    from app.compare.worker_link import _merge_tokens
    from backend.generation.protocol import GenerationDone, TokenStreamed

    def tok(side, text):
        return TokenStreamed(request_id="g", side=side, text=text)

    done = GenerationDone(request_id="g", side="base", text="abc")
    merged = _merge_tokens([tok("base", "a"), tok("aligned", "x"), tok("base", "b"), tok("aligned", "y"), done,
                            tok("aligned", "z")])
    assert [(type(e).__name__, getattr(e, "side", ""), e.text) for e in merged] == [
        ("TokenStreamed", "base", "ab"), ("TokenStreamed", "aligned", "xy"), ("GenerationDone", "base", "abc"),
        ("TokenStreamed", "aligned", "z")]


def test_numbers_become_plain_sentences():
    from app.compare.text_format import is_verbosity_shift, likelihood_sentence, preference_sentence

    assert "2.7× as likely" in likelihood_sentence(-10.0, -11.0)
    assert "less likely" in likelihood_sentence(-12.0, -10.0)
    assert "about equally likely" in likelihood_sentence(-10.0, -10.05)
    assert "Load a run" in likelihood_sentence(None, -10.0)
    assert "prefers its own answer" in preference_sentence(-0.2, 0.3)
    assert "prefers the base model's answer" in preference_sentence(0.3, -0.2)
    assert is_verbosity_shift(1.3) and is_verbosity_shift(0.7) and not is_verbosity_shift(1.1)


def test_the_finished_run_is_offered_and_loads_when_the_tab_opens(qtbot, tab, compare_run):
    _runs_root, run_dir = compare_run
    choices = tab.picker.choices()
    assert [c.path for c in choices] == [str(run_dir)]
    assert tab.picker.current_choice().kind == "run"
    # Loading takes seconds: the picker says so while it happens.
    assert tab.link.state() in ("loading", "ready")
    if tab.link.state() == "loading":
        assert tab.picker.busy_bar.isVisibleTo(tab) and "·" in tab.picker.status.text()
    ready = _ready(qtbot, tab)
    assert ready.has_adapter and ready.method == "dpo" and ready.prompt_style == "raw"
    assert not tab.picker.busy_bar.isVisibleTo(tab)
    assert tab.picker.status.text().startswith("Ready:") and "DPO" in tab.picker.status.text()
    # The held-out split fills the prompt picker; the batch defaults to it.
    assert len(tab.side_by_side.picker.choices("heldout")) == 16
    assert tab.batch.source.currentData() == "heldout" and tab.batch.count.value() == 16
    # The bar counts what Run batch will run, not a placeholder.
    assert tab.batch.progress.text() == "0 / 16 prompts"


def test_generate_streams_both_panes_and_scores_them(qtbot, tab):
    ready = _ready(qtbot, tab)
    view = tab.side_by_side
    tab.views.setCurrentWidget(view)
    streamed = {"base": 0, "aligned": 0}
    tab.link.sig_token.connect(lambda ev: streamed.__setitem__(ev.side, streamed[ev.side] + 1)
                               if ev.request_id == view._request_id else None)
    qtbot.keyClicks(view.prompt_edit, PROMPT)
    assert view.prompt_to_send() == PROMPT  # plain-text run: sent as typed, no template
    assert "exactly as written" in view.style_hint.text()

    view.generate_button.click()
    assert view.is_running() and view.stop_button.isEnabled() and not view.generate_button.isEnabled()
    panes = view.panes
    qtbot.waitUntil(lambda: not view.is_running(), timeout=30_000)
    assert streamed["base"] > 0 and streamed["aligned"] > 0
    for side, pane in panes.items():
        assert pane.text(), side
        assert 0 < pane.tokens() <= FAST["max_new_tokens"]
        assert "token" in pane.length_label.text()
        score = pane.score()
        assert score is not None and score.label == side
        assert score.implicit_reward == pytest.approx(
            ready.beta * (score.logp_aligned_sum - score.logp_base_sum), rel=1e-6)
        assert all(text != "–" for text in pane.score_texts().values())
        assert "likely" in pane.explanation.text()
    assert "prefers" in view.verdict.text() or "no clear preference" in view.verdict.text()
    assert view.generate_button.isEnabled() and not view.stop_button.isEnabled()

    # Greedy decoding: the same prompt gives the same answers again.
    first = {side: pane.text() for side, pane in panes.items()}
    view.generate_button.click()
    qtbot.waitUntil(lambda: not view.is_running(), timeout=30_000)
    assert {side: pane.text() for side, pane in panes.items()} == first


def test_stop_ends_both_answers_early(qtbot, tab):
    _ready(qtbot, tab)
    view = tab.side_by_side
    view.set_prompt(PROMPT)
    tab.sampling_panel.set_values({"max_new_tokens": 400, "min_new_tokens": 400})
    try:
        view.generate_button.click()
        qtbot.waitUntil(lambda: view.panes["aligned"].tokens() > 0, timeout=30_000)
        view.stop_button.click()
        qtbot.waitUntil(lambda: not view.is_running(), timeout=30_000)
    finally:
        tab.sampling_panel.set_values({**FAST, "min_new_tokens": 0})
    for pane in view.panes.values():
        assert "stopped" in pane.length_label.text() and pane.tokens() < 400
        assert pane.score() is None  # a stopped compare is not scored
    assert view.generate_button.isEnabled()


def test_a_picked_held_out_prompt_is_sent_as_stored(qtbot, tab, compare_run):
    _ready(qtbot, tab)
    view = tab.side_by_side
    choice = view.picker.choices("heldout")[2]
    view.picker.setCurrentIndex(view.picker.findData(choice))
    view.picker.activated.emit(view.picker.currentIndex())
    assert view.prompt_edit.toPlainText() == choice.text
    assert view.prompt_to_send() == choice.row["prompt"]
    qtbot.keyClicks(view.prompt_edit, " more")
    assert view.prompt_to_send() == choice.text + " more"


def test_invalid_sampling_is_flagged_and_nothing_is_sent(qtbot, tab):
    _ready(qtbot, tab)
    view = tab.side_by_side
    tab.sampling_panel.set_values({"seed": "abc"})
    view.set_prompt(PROMPT)
    view.generate_button.click()
    assert not view.is_running()
    assert tab.banner.isVisible() and "sampling" in tab.banner.title().lower()
    assert "seed" in tab.sampling_panel.form.shown_problems()
    tab.sampling_panel.set_values({"seed": 11})
    assert tab.sampling_panel.settings()["seed"] == 11
    tab.banner.hide_notice()


def test_an_answer_ends_at_a_stop_string_and_says_so(qtbot, tab):
    import re

    _ready(qtbot, tab)
    view = tab.side_by_side
    tab.views.setCurrentWidget(view)
    view.set_prompt(PROMPT)
    # This run's prompts frame no turn, so it has no default stop; the field starts empty.
    assert tab.sampling_panel.form.editor("stop_strings").text() == ""
    view.generate_button.click()
    qtbot.waitUntil(lambda: not view.is_running(), timeout=30_000)
    free = view.panes["aligned"].text()
    match = re.search(r"[A-Za-z]{3,}", free[1:])
    assert match is not None, free
    stop = match.group(0)
    tab.sampling_panel.set_values({"stop_strings": [stop]})
    try:
        view.generate_button.click()
        qtbot.waitUntil(lambda: not view.is_running(), timeout=30_000)
    finally:
        tab.sampling_panel.set_values({"stop_strings": None})
    pane = view.panes["aligned"]
    assert pane.text() == free[:free.find(stop)].rstrip() and stop not in pane.text()
    assert f"ended at \u201c{stop}\u201d" in pane.length_label.text()
    assert pane.score() is not None and pane.score().n_tokens == pane.tokens()


def test_batch_compare_fills_table_and_summary_and_exports(qtbot, tab, tmp_path):
    _ready(qtbot, tab)
    batch = tab.batch
    tab.views.setCurrentWidget(batch)
    batch.count.setValue(4)
    assert batch.progress.text() == "0 / 4 prompts"
    assert not batch.export_button.isEnabled()
    batch.run_button.click()
    assert batch.is_running() and batch.stop_button.isEnabled()
    assert batch.progress.text() == "0 / 4 prompts"
    qtbot.waitUntil(lambda: not batch.is_running(), timeout=60_000)
    assert batch.progress.text() == "4 / 4 prompts"

    assert batch.model.rowCount() == 4 and batch.table.model().rowCount() == 4
    rows = batch.rows()
    assert [r.index for r in rows] == [0, 1, 2, 3]
    assert all(r.base_answer and r.aligned_answer and r.has_pair for r in rows)
    summary = batch.summary()
    assert summary is not None and summary.n_rows == 4 and summary.n_pairs == 4 and not summary.cancelled
    assert summary.aligned_accuracy >= summary.base_accuracy
    assert summary.reward_accuracy >= 0.75
    panel = batch.summary_panel
    assert panel.tile_text("aligned_accuracy") == f"{summary.aligned_accuracy * 100:.0f}%"
    assert panel.tile_text("base_accuracy") == f"{summary.base_accuracy * 100:.0f}%"
    assert panel.tile_text("reward_accuracy") == f"{summary.reward_accuracy * 100:.0f}%"
    assert "→" in panel.tile_text("length") and panel.tile_note("length")
    assert "held-out pair" in panel.headline.text()
    # The table shows what the rows hold.
    index = batch.model.index(0, 4)
    assert batch.model.data(index) == f"{rows[0].base_tokens} → {rows[0].aligned_tokens}"
    batch.table.selectRow(1)
    assert rows[1].prompt in batch.detail.toPlainText()

    assert batch.export_button.isEnabled()
    written = batch.export_to(tmp_path / "compare.csv")
    assert written == [tmp_path / "compare.csv", summary_path_for(tmp_path / "compare.csv")]
    with (tmp_path / "compare.csv").open(encoding="utf-8") as fh:
        table = list(csv.DictReader(fh))
    assert [row["prompt"] for row in table] == [r.prompt for r in rows]
    batch.export_to(tmp_path / "compare.jsonl")
    saved_summary, saved_rows = read_jsonl_export(tmp_path / "compare.jsonl")
    assert saved_summary.aligned_accuracy == pytest.approx(summary.aligned_accuracy)
    assert [r.aligned_answer for r in saved_rows] == [r.aligned_answer for r in rows]
    batch.export_to(tmp_path / "compare.html")
    page = (tmp_path / "compare.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and page.count("<tr>") == 5
    assert tab.banner.severity() == "success" and "compare.html" in tab.banner.text()

    # The export button goes through a file dialog; answer it without showing one.
    from PySide6.QtWidgets import QFileDialog

    target = tmp_path / "from-dialog"
    original = QFileDialog.getSaveFileName
    QFileDialog.getSaveFileName = staticmethod(lambda *a, **k: (str(target), "JSON Lines (*.jsonl)"))
    try:
        batch.export_button.click()
    finally:
        QFileDialog.getSaveFileName = original
    assert json.loads((tmp_path / "from-dialog.jsonl").read_text(encoding="utf-8").splitlines()[0])["type"] == \
        "summary"

    # Double-clicking a row takes its prompt to the side-by-side view.
    batch.table.doubleClicked.emit(batch.model.index(2, 1))
    assert tab.views.currentWidget() is tab.side_by_side
    assert tab.side_by_side.prompt_to_send() == rows[2].prompt_source


def test_batch_stop_keeps_and_summarises_the_finished_rows(qtbot, tab):
    _ready(qtbot, tab)
    batch = tab.batch
    tab.views.setCurrentWidget(batch)
    tab.sampling_panel.set_values({"max_new_tokens": 24})
    batch.count.setValue(16)
    batch.run_button.click()
    try:
        qtbot.waitUntil(lambda: batch.model.rowCount() >= 1 or not batch.is_running(), timeout=30_000)
        batch.stop_button.click()
        qtbot.waitUntil(lambda: not batch.is_running(), timeout=30_000)
    finally:
        tab.sampling_panel.set_values(FAST)
    summary = batch.summary()
    assert summary is not None and summary.cancelled
    assert 1 <= batch.model.rowCount() < 16 and summary.n_rows == batch.model.rowCount()
    assert "Stopped" in batch.progress_label.text() and "Stopped early" in batch.summary_panel.headline.text()
    assert batch.run_button.isEnabled() and tab.side_by_side.generate_button.isEnabled()


def test_playground_chats_over_several_turns(qtbot, tab):
    _ready(qtbot, tab)
    play = tab.playground
    tab.views.setCurrentWidget(play)
    assert play.side.currentData() == "aligned"
    for turn, text in enumerate(["Hello there", "Tell me more"]):
        qtbot.keyClicks(play.input, text)
        play.send_button.click()
        assert play.is_running() and not play.input.toPlainText()
        qtbot.waitUntil(lambda: not play.is_running(), timeout=30_000)
        assert len(play.chat.turns()) == 2 * (turn + 1)
        play.side.setCurrentIndex(play.side.findData("base"))
    roles = [m["role"] for m in play.messages()]
    assert roles[0::2] == ["user", "user"] and all(r == "assistant" for r in roles[1::2])
    speakers = [t.speaker for t in play.chat.turns() if t.role == "assistant"]
    assert speakers == ["Aligned (adapter on)", "Base (adapter off)"]
    play.new_chat()
    assert play.messages() == [] and play.chat.turns() == []


def test_a_folder_that_is_not_an_adapter_is_refused_with_a_hint(qtbot, tab, tmp_path, compare_run):
    _ready(qtbot, tab)
    pid = tab.worker_pid()
    tab.open_adapter_folder(str(tmp_path), base_model="")
    assert tab.banner.isVisible() and tab.banner.severity() == "error"
    assert "not a LoRA adapter folder" in tab.banner.text() and "Pick a finished run" in tab.banner.text()
    # The model that was loaded still serves.
    assert tab.link.state() == "ready" and tab.worker_pid() == pid
    assert tab.picker.select(compare_run[1])
    assert tab.link.state() == "ready" and not tab.picker.load_button.isEnabled()
    tab.banner.hide_notice()
    # A run's own adapter folder picks the run rather than listing it twice.
    tab.open_adapter_folder(str(compare_run[1] / "adapter"), base_model="")
    assert tab.picker.current_choice().kind == "run" and tab.link.state() == "ready"
    assert [c.kind for c in tab.picker.choices()] == ["run", "adapter"]


def test_picking_a_run_loads_it_without_pressing_load(qtbot, tab, compare_run, tmp_path):
    import shutil

    from PySide6.QtCore import Qt

    _ready(qtbot, tab)
    copy = tmp_path / "adapter-copy"
    shutil.copytree(compare_run[1] / "adapter", copy)
    # Released as training does it; nothing may load by itself from here on...
    tab.release_worker("training")
    qtbot.waitUntil(lambda: tab.link.state() == "off", timeout=15_000)
    tab.picker.add_adapter_folder(copy)
    qtbot.wait(600)
    assert tab.picker.current_choice().path == str(copy)
    assert tab.link.state() == "off" and "Pick a run" in tab.picker.status.text()

    # ...but picking in the list is asking for that model. Arrowing up the list passes
    # the folder that is no adapter on the way; only the row it rests on is loaded.
    loads = []
    original = tab.link.load
    tab.link.load = lambda spec: (loads.append(spec), original(spec))[1]
    try:
        combo = tab.picker.combo
        combo.setFocus()
        qtbot.keyClick(combo, Qt.Key.Key_Up)
        qtbot.keyClick(combo, Qt.Key.Key_Up)
        run_path = tab.picker.current_choice().path
        assert run_path == str(compare_run[1])
        assert tab.link.state() == "off"  # not yet: the list may still be moving
        qtbot.waitUntil(lambda: tab.link.state() == "ready", timeout=60_000)
    finally:
        tab.link.load = original
    assert loads == [{"run_dir": run_path}]
    assert not tab.banner.isVisible()  # the folder passed on the way was never loaded
    assert tab.picker.status.text().startswith("Ready:") and not tab.picker.load_button.isEnabled()


def test_a_worker_that_dies_is_reported_and_can_be_started_again(qtbot, tab):
    _ready(qtbot, tab)
    pid = tab.worker_pid()
    os.kill(pid, signal.SIGKILL)
    qtbot.waitUntil(lambda: tab.banner.isVisible() and "stopped" in tab.banner.title(), timeout=15_000)
    assert tab.banner.severity() == "error" and "unexpectedly" in tab.banner.text()
    assert tab.link.state() == "off" and tab.side_by_side.generate_button.isEnabled()
    tab.banner.sig_action.emit()  # "Start again"
    ready = _ready(qtbot, tab)
    assert ready.has_adapter and tab.worker_pid() != pid


def test_leaving_the_tab_or_training_releases_the_worker(qtbot, tab):
    _ready(qtbot, tab)
    pid = tab.worker_pid()
    tab.hide()
    assert tab.link.state() == "off" and tab.worker_pid() is None
    qtbot.waitUntil(lambda: _gone(pid), timeout=15_000)
    assert "Released" in tab.picker.status.text()

    # Coming back loads it again; training starting releases it at once, even mid-load.
    tab.show()
    assert tab.link.state() == "loading"
    second = tab.worker_pid()
    tab.release_worker()
    qtbot.waitUntil(lambda: _gone(second), timeout=15_000)
    assert "training" in tab.picker.status.text()
    assert tab.picker.load_button.isEnabled() and not tab.picker.release_button.isEnabled()
    # Released for training: coming back does not load on its own.
    tab.hide()
    tab.show()
    assert tab.link.state() == "off"


def test_the_window_process_never_imports_torch(compare_run, tmp_path):
    """A fresh process drives the tab through a load and a generation, then lists its modules."""
    runs_root = compare_run[0]
    code = f"""
        import sys, time
        from PySide6.QtWidgets import QApplication
        app = QApplication([])
        from app.compare.tab import CompareTab
        from backend.runs.folder import list_runs
        tab = CompareTab(log_path={str(tmp_path / 'gen.log')!r})
        tab.set_runs(list_runs({str(runs_root)!r}))
        tab.sampling_panel.set_values({{"greedy": True, "max_new_tokens": 4}})
        tab.show()
        tab.side_by_side.set_prompt("Question 1: can you help me with task 1?")
        tab.side_by_side.generate_button.click()
        deadline = time.time() + 90
        while time.time() < deadline and tab.side_by_side.panes["aligned"].score() is None:
            app.processEvents()
            time.sleep(0.02)
        assert tab.side_by_side.panes["aligned"].score() is not None, "no answer"
        print("HEAVY", [m for m in ("torch", "transformers", "trl", "peft", "bitsandbytes") if m in sys.modules])
        tab.hide()
        assert tab.link.wait_released(15)
    """
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", PYTHONPATH=str(ROOT),
               ALIGNSTUDIO_HOME=str(tmp_path / "home"))
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "HEAVY []" in result.stdout
