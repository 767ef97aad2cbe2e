"""The window says before training what Max length will do to long examples."""

from __future__ import annotations

import pytest

from backend.testing.synthetic_long_prompts import write_long_prompt_set
from tests.gui_helpers import make_studio_window, prepare_tiny_dpo

pytestmark = pytest.mark.gui


@pytest.fixture
def window(qtbot, studio_home):
    return make_studio_window(qtbot)


def test_ready_line_counts_the_examples_max_length_would_cut(qtbot, window, tmp_path, tiny_model_dir):
    data = write_long_prompt_set(tmp_path / "long_prompts.jsonl")
    prepare_tiny_dpo(qtbot, window, data, tiny_model_dir, max_length=128)
    assert window.live.phase_label.text().startswith("Ready to train DPO on long_prompts.jsonl")
    note = window.live.ready_hint
    assert note.isVisible() and "Max length 128" in note.text() and "cut" in note.text(), note.text()
    window.grab().save(str(tmp_path / "ready.png"))

    # Every example fits at a generous length: no note.
    window.method_panel.set_values({"max_length": 4096})
    qtbot.waitUntil(lambda: window.live.phase_label.text().startswith("Ready to train DPO")
                    and not window.live.ready_hint.isVisible(), timeout=10_000)


def test_the_memory_card_counts_only_the_answers_the_head_projects(qtbot, window, tmp_path, tiny_model_dir):
    from backend.training.memory_estimate import estimate_memory, model_shape

    data = write_long_prompt_set(tmp_path / "long_prompts.jsonl")
    prepare_tiny_dpo(qtbot, window, data, tiny_model_dir, max_length=128)
    report = window.data_panel.current().report
    longest = max(answer for _prompt, answer in report.example_lengths)
    assert window._answer_tokens(window.build_config()[0]) == longest
    cfg, problems = window.build_config()
    assert not problems
    # DPO's speed options score only trained positions on a CPU: the card counts the answers.
    expected = estimate_memory(cfg, {"kind": "cpu"}, model_shape(str(tiny_model_dir)), answer_tokens=longest)
    every_position = estimate_memory(cfg, {"kind": "cpu"}, model_shape(str(tiny_model_dir)))
    assert expected.parts["logits"] < every_position.parts["logits"]
    qtbot.waitUntil(lambda: window.memory_panel.last_estimate is not None
                    and window.memory_panel.last_estimate.parts == expected.parts, timeout=10_000)
