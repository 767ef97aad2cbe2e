"""The window refuses what cannot train, before anything starts, and says where:
the setting flagged inline, Train disabled with the setting named, or (for what
only Train checks: disk, runs folder) a banner and no run folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402

from tests.gui_helpers import make_studio_window, wait_for_dataset, write_preference_file  # noqa: E402

pytestmark = pytest.mark.gui


@pytest.fixture
def window(qtbot, studio_home):
    return make_studio_window(qtbot)


def _ready(qtbot, window, data: Path) -> None:
    """Load ``data`` for DPO on the embedded model and wait until Train is enabled."""
    window.data_panel.load_path(str(data))
    wait_for_dataset(qtbot, window)
    window.method_panel.set_method("dpo")
    qtbot.waitUntil(lambda: window.live.train_button.isEnabled(), timeout=10_000)


def _type(qtbot, line_edit, text: str) -> None:
    line_edit.selectAll()
    qtbot.keyClicks(line_edit, text)


def _pickle_only_model(folder: Path) -> Path:
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (folder / "pytorch_model.bin").write_bytes(b"not really weights")
    (folder / "tokenizer.json").write_text("{}")
    return folder


def test_beta_of_zero_is_flagged_on_beta_and_train_names_it(qtbot, window, tmp_path):
    _ready(qtbot, window, write_preference_file(tmp_path / "prefs.jsonl"))
    _type(qtbot, window.method_panel.editor("beta"), "0")
    qtbot.waitUntil(lambda: not window.live.train_button.isEnabled(), timeout=5_000)
    shown = window.method_panel.shown_problems()
    assert list(shown) == ["beta"]
    assert "Beta must be above 0" in shown["beta"]
    assert "Beta" in window.live.ready_hint.text() and "above 0" in window.live.ready_hint.text()
    assert window.start_training() is False
    assert not window.controller.is_running()

    _type(qtbot, window.method_panel.editor("beta"), "0.2")
    qtbot.waitUntil(lambda: window.live.train_button.isEnabled(), timeout=5_000)
    assert window.method_panel.shown_problems() == {}


def test_max_length_shorter_than_the_prompts_is_flagged_on_max_length(qtbot, window, tmp_path):
    data = tmp_path / "long_prompts.jsonl"
    with data.open("w", encoding="utf-8") as fh:
        for i in range(30):
            prompt = f"Case {i}: " + "Please read this long description carefully. " * 14  # ~640 characters
            fh.write(json.dumps({"prompt": prompt, "chosen": " Yes, gladly.", "rejected": " No."}) + "\n")
    window.data_panel.load_path(str(data))
    wait_for_dataset(qtbot, window)
    window.method_panel.set_method("dpo")
    window.method_panel.editor("max_length").setValue(64)
    qtbot.waitUntil(lambda: "max_length" in window.method_panel.shown_problems(), timeout=5_000)
    message = window.method_panel.shown_problems()["max_length"]
    assert "Max length (tokens) is 64" in message and "prompts" in message and "long_prompts.jsonl" in message
    assert not window.live.train_button.isEnabled()
    assert "Max length" in window.live.ready_hint.text()

    window.method_panel.editor("max_length").setValue(256)
    qtbot.waitUntil(lambda: window.live.train_button.isEnabled(), timeout=5_000)


def test_pickle_only_model_is_refused_until_allowed(qtbot, window, tmp_path):
    _ready(qtbot, window, write_preference_file(tmp_path / "prefs.jsonl"))
    model = _pickle_only_model(tmp_path / "pickled")
    window.model_panel.set_kind("local")
    window.model_panel.text.setText(str(model))
    qtbot.waitUntil(lambda: not window.live.train_button.isEnabled(), timeout=5_000)
    assert window.model_panel.message.isVisible()
    assert "pickle" in window.model_panel.message.text() and "pytorch_model.bin" in window.model_panel.message.text()
    assert "Model:" in window.live.ready_hint.text()
    # The setting that allows it is flagged, and its folded section opened, so it can be found.
    assert "allow_pickle_weights" in window.method_panel.shown_problems()
    assert window.method_panel.model_form.advanced_section().is_expanded()

    window.method_panel.editor("allow_pickle_weights").click()  # what a click on the box does
    qtbot.waitUntil(lambda: window.live.train_button.isEnabled(), timeout=5_000)
    assert not window.model_panel.message.isVisible()
    assert window.method_panel.shown_problems() == {}


def test_model_that_needs_remote_code_is_refused_with_the_setting_flagged(qtbot, window, tmp_path):
    _ready(qtbot, window, write_preference_file(tmp_path / "prefs.jsonl"))
    model = tmp_path / "custom"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({
        "model_type": "my_own_arch", "auto_map": {"AutoModelForCausalLM": "modeling_mine.MyModel"}}))
    (model / "model.safetensors").write_bytes(b"\0" * 16)
    (model / "tokenizer.json").write_text("{}")
    window.model_panel.set_kind("local")
    window.model_panel.text.setText(str(model))
    qtbot.waitUntil(lambda: not window.live.train_button.isEnabled(), timeout=5_000)
    text = window.model_panel.message.text()
    assert "its own Python code" in text and "modeling_mine.py" in text and "Trust remote code" in text
    assert "trust_remote_code" in window.method_panel.shown_problems()


def test_full_disk_refuses_train_with_a_banner_and_no_run_folder(qtbot, window, tmp_path, studio_home):
    _ready(qtbot, window, write_preference_file(tmp_path / "prefs.jsonl"))
    window.free_space = lambda folder: 5 * 2**20  # 5 MB left
    assert window.start_training() is False
    banner = window.live.banner
    assert banner.isVisible() and banner.severity() == "error"
    assert "Training was not started" in banner.title()
    assert window.live.phase_label.text().startswith("Training was not started")  # not "Ready to train"
    assert not window.live.ready_hint.isVisible()
    assert "Not enough free disk space" in banner.text() and "5 MB free" in banner.text()
    assert str(studio_home / "runs") in banner.text()
    assert "output_dir" in window.method_panel.shown_problems()
    assert not window.controller.is_running()
    runs = studio_home / "runs"
    assert not runs.exists() or not any(runs.iterdir())


def test_runs_folder_under_a_file_refuses_train_naming_the_folder(qtbot, window, tmp_path):
    _ready(qtbot, window, write_preference_file(tmp_path / "prefs.jsonl"))
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    editor = window.method_panel.editor("output_dir")
    _type(qtbot, editor, str(blocker / "runs"))
    qtbot.waitUntil(lambda: window.build_config()[0].output_dir == str(blocker / "runs"), timeout=5_000)
    assert window.start_training() is False
    assert "is a file, not a folder" in window.live.banner.text()
    assert str(blocker) in window.live.banner.text()
    assert "Runs folder" in window.method_panel.shown_problems()["output_dir"]
    assert not (blocker.parent / "runs").exists()


def test_cross_field_problem_is_flagged_on_the_field_to_change_even_when_folded(qtbot, window, tmp_path):
    _ready(qtbot, window, write_preference_file(tmp_path / "prefs.jsonl"))
    advanced = window.method_panel.form.advanced_section()
    assert not advanced.is_expanded()
    combo = window.method_panel.editor("loss_type")
    combo.setCurrentIndex(combo.findData("robust"))  # robust DPO needs a label smoothing above 0
    qtbot.waitUntil(lambda: "label_smoothing" in window.method_panel.shown_problems(), timeout=5_000)
    assert list(window.method_panel.shown_problems()) == ["label_smoothing"]
    assert advanced.is_expanded()  # the flagged field was folded away; it is shown
    assert "Label smoothing" in window.live.ready_hint.text()


def test_hub_id_that_cannot_be_had_offline_is_refused_in_the_model_card(qtbot, window, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))
    _ready(qtbot, window, write_preference_file(tmp_path / "prefs.jsonl"))
    window.model_panel.set_kind("hub")
    window.model_panel.text.setText("someone/not-downloaded")
    qtbot.waitUntil(lambda: not window.live.train_button.isEnabled(), timeout=5_000)
    message = window.model_panel.message.text()
    assert window.model_panel.message.isVisible()
    assert "offline" in message and "not in the Hugging Face cache" in message and "embedded" in message
    assert window.live.ready_hint.text().startswith("Model:")
