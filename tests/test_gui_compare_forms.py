"""The Compare tab's forms and table without a worker: the stop-strings field, the batch
table's headers, the batch's planned count, and the request bookkeeping every view shares."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402

pytestmark = pytest.mark.gui


def test_the_stop_field_shows_the_run_default_until_edited(qtbot):
    from app.compare.sampling import SamplingPanel

    panel = SamplingPanel()
    qtbot.addWidget(panel)
    field = panel.form.editor("stop_strings")
    assert field.text() == "" and panel.settings()["stop_strings"] is None
    panel.set_default_stops(["Question:"])
    # Unedited, it shows the run's default and asks for it (None), so a request sent
    # while the model still loads gets the same default from the worker.
    assert field.text() == "Question:" and panel.settings()["stop_strings"] is None

    field.clear()
    qtbot.keyClicks(field, "Question:, \\nUser:")
    assert panel.settings()["stop_strings"] == ["Question:", "\nUser:"]
    panel.set_default_stops(["Human:"])  # another run loads: what the user typed stays
    assert field.text() == "Question:, \\nUser:"

    field.clear()
    qtbot.keyClicks(field, "Answer\\q")
    assert panel.settings() is None
    assert "not an escape" in panel.form.shown_problems()["stop_strings"]
    field.clear()
    qtbot.keyClicks(field, " ")
    assert panel.settings()["stop_strings"] == []  # emptied on purpose: no stop strings at all

    panel.set_values({"stop_strings": None})  # back to the run's default
    assert field.text() == "Human:" and panel.settings()["stop_strings"] is None


def test_batch_table_headers_are_words_with_tooltips(qtbot):
    from PySide6.QtCore import Qt

    from backend.compare.scoring import CompareRow, ResponseScore
    from app.compare.table_model import COLUMNS, CompareRowsModel

    model = CompareRowsModel()
    headers = [model.headerData(i, Qt.Orientation.Horizontal) for i in range(model.columnCount())]
    assert "Chosen? B A R" not in headers
    assert headers[-3:] == ["Base model\nprefers chosen", "Aligned model\nprefers chosen", "Reward\nprefers chosen"]
    for i, header in enumerate(headers):
        tip = model.headerData(i, Qt.Orientation.Horizontal, Qt.ItemDataRole.ToolTipRole)
        assert tip and len(tip) > 20, header
        # Words, not letters standing for words.
        assert header == "#" or all(len(word) > 1 or word in "→" for word in header.split()), header

    row = CompareRow(index=0, prompt="p", base_answer="a", aligned_answer="b", base_finish="stop",
                     aligned_finish="stop", chosen="good", rejected="bad")
    score = ResponseScore.from_sums
    row.set_pair_scores(score(0, "chosen", 3, -5.0, -4.0, 0.1), score(1, "rejected", 3, -6.0, -7.0, 0.1))
    model.add_row(row)
    cells = [model.data(model.index(0, i)) for i in range(len(COLUMNS))]
    assert cells[-3:] == ["✓", "✓", "✓"]
    assert "Aligned model prefers chosen: yes" in model.data(model.index(0, len(COLUMNS) - 1),
                                                            Qt.ItemDataRole.ToolTipRole)


def test_each_view_runs_one_request_with_stop_and_status_then_is_idle_again(qtbot, tmp_path, monkeypatch):
    """The bookkeeping the four views share (``RequestView``), without a worker: the
    link's own signals carry the events a worker would send."""
    from app.compare.tab import CompareTab
    from backend.generation.protocol import RequestFinished, WorkerStatus

    tab = CompareTab(log_path=str(tmp_path / "generation.log"))
    qtbot.addWidget(tab)
    tab.picker.add_adapter_folder(tmp_path)  # something picked, so only a running request blocks a start
    cancelled: list[str] = []
    monkeypatch.setattr(tab.link, "cancel", cancelled.append)
    status_lines = {tab.batch: lambda: tab.batch.progress_label.text(),
                    tab.best_of_n: lambda: tab.best_of_n.status.text()}
    for view in (tab.side_by_side, tab.batch, tab.playground, tab.best_of_n):
        others = [v for v in (tab.side_by_side, tab.playground) if v is not view]
        assert not view.stop_button.isEnabled()
        with qtbot.waitSignal(view.sig_busy_changed, timeout=1000) as busy:
            assert view.begin(f"{type(view).__name__}-request")
        assert busy.args == [True] and view.is_running() and view.stop_button.isEnabled()
        assert not view.start_button().isEnabled()
        # One request at a time on the one worker: every other view waits, and says why.
        assert all(not v.start_button().isEnabled() and "Wait for the current request" in
                   v.start_button().toolTip() for v in others)
        assert all(not w.isEnabled() for w in view.locked_while_running())

        request_id = view._request_id
        tab.link.sig_status.emit(WorkerStatus(request_id="someone-else", message="not mine"))
        tab.link.sig_status.emit(WorkerStatus(request_id=request_id, message="Sampling 4 answers"))
        if view in status_lines:
            assert status_lines[view]() == "Sampling 4 answers"
        view.stop_button.click()
        assert cancelled[-1] == request_id and view.is_running()  # ends when the worker answers

        tab.link.sig_finished.emit(RequestFinished(request_id="someone-else", op="generate"))
        assert view.is_running()
        with qtbot.waitSignal(view.sig_busy_changed, timeout=1000) as idle:
            tab.link.sig_finished.emit(RequestFinished(request_id=request_id, op="generate", ok=False,
                                                       cancelled=True))
        assert idle.args == [False] and not view.is_running() and not view.stop_button.isEnabled()
        assert all(w.isEnabled() for w in view.locked_while_running())
        assert all(v.start_button().isEnabled() for v in others)
    assert "Stopped" in tab.batch.progress_label.text() and tab.best_of_n.status.text() == "Stopped."
    # A link that refuses the request (no model loaded) leaves the view idle.
    assert not tab.playground.begin(None) and not tab.playground.is_running()
