"""A failing memory estimate is shown, never swallowed: the launch goes on without it (it is
advice), but the card says it failed and the traceback reaches the console."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402

pytestmark = pytest.mark.gui


def test_the_launch_estimate_failing_is_said_on_the_card(qtbot, capsys):
    from app.train.memory_panel import MemoryPanel
    from backend.runs.config import default_config

    panel = MemoryPanel()
    qtbot.addWidget(panel)

    def broken(config, device, answer_tokens=None):
        raise KeyError("hidden_size")

    panel._estimate_fn = broken
    assert panel.estimate_now(default_config("sft"), {"kind": "cpu"}) is None
    assert "The memory estimate failed" in panel.headline.text() and "hidden_size" in panel.headline.text()
    assert "KeyError: 'hidden_size'" in capsys.readouterr().err

    panel._estimate_fn = lambda config, device, answer_tokens=None: "an estimate"
    assert panel.estimate_now(default_config("sft"), {"kind": "cpu"}) == "an estimate"
