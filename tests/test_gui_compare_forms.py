"""The Compare tab's forms and table without a worker: the stop-strings field, the batch
table's headers, the batch's planned count."""

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
