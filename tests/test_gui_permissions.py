"""In the window, only the user's confirmation lets a model run code (issue 12): the
confirmation names the model, says what it could do and shows where the code is;
the answer is remembered for those exact files and listed, and revocable, under
Settings → Code permissions."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402
from PySide6.QtCore import QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from app.permission_dialog import PermissionDialog  # noqa: E402
from tests.gui_helpers import make_studio_window, prepare_tiny_dpo, write_preference_file  # noqa: E402
from tests.test_permissions import make_remote_code_model  # noqa: E402

pytestmark = pytest.mark.gui
SHOTS = Path(os.environ.get("ALIGNSTUDIO_SHOTS", "/work/notes/shots/G"))


@pytest.fixture
def window(qtbot, studio_home):
    return make_studio_window(qtbot)


def answer_next_confirmation(allow: bool, seen: list, shot: str = "") -> None:
    """Answer the permission dialog as soon as it is up, as a user would, noting what it said."""
    def answer():
        dialog = QApplication.activeModalWidget()
        if not isinstance(dialog, PermissionDialog):
            QTimer.singleShot(50, answer)
            return
        seen.append({"title": dialog.windowTitle(), "text": dialog.explanation(False),
                     "files": dialog.files.toPlainText(), "default_refuses": dialog.refuse_button.isDefault()})
        if shot:
            SHOTS.mkdir(parents=True, exist_ok=True)
            dialog.grab().save(str(SHOTS / shot))
        (dialog.allow_button if allow else dialog.refuse_button).click()
    QTimer.singleShot(50, answer)


def copied_run_on_pickle_weights(tmp_path: Path, tiny_model_dir: Path) -> tuple[Path, Path]:
    """A run folder as received from elsewhere, on a model whose weights are only pickle."""
    from backend.runs.config import save_yaml
    from tests.conftest import tiny_run_config

    model = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, model)
    (model / "model.safetensors").rename(model / "pytorch_model.bin")
    run_dir = tmp_path / "copied-run"
    save_yaml(tiny_run_config("dpo", model, tmp_path / "data.jsonl"), run_dir / "config.yaml")
    return model, run_dir


@pytest.mark.slow
def test_train_asks_before_model_code_runs_and_remembers_the_answer(qtbot, window, tmp_path, tiny_model_dir):
    marker = tmp_path / "remote-code-ran"
    model = make_remote_code_model(tiny_model_dir, tmp_path / "sneaky-model", marker)
    prepare_tiny_dpo(qtbot, window, write_preference_file(tmp_path / "prefs.jsonl"), model,
                     max_steps=2, trust_remote_code=True)
    seen: list = []
    answer_next_confirmation(False, seen)
    assert window.start_training() is False
    assert not window.controller.is_running() and not marker.exists()
    assert window.grants.grants() == []
    assert "you did not allow sneaky-model" in window.statusBar().currentMessage()
    said = seen[0]
    assert said["title"] == "Run this model's own code?" and said["default_refuses"]
    assert "sneaky-model" in said["text"] and "read, change or delete your files" in said["text"]
    assert "configuration_sneaky.py" in said["files"] and "modeling_sneaky.py" in said["files"]

    answer_next_confirmation(True, seen, shot="permission-confirmation.png")
    with qtbot.waitSignal(window.controller.supervisor.sig_finished, timeout=120_000):
        assert window.start_training() is True
    assert marker.read_text() == "the model code ran"
    [grant] = window.grants.grants()
    assert grant["permission"] == "trust_remote_code" and grant["location"] == str(model.resolve())

    # Remembered: the next run of the same files asks nothing ...
    assert window.confirm_permissions(window.build_config()[0])
    assert len(seen) == 2
    # ... and the settings page lists the grant and revokes it.
    from app.settings_dialog import CodePermissionsPage

    page = CodePermissionsPage(window.grants, window)
    qtbot.addWidget(page)
    page.show()
    assert page.table.rowCount() == 1 and page.table.item(0, 1).text() == "sneaky-model"
    assert page.table.item(0, 0).text() == "model code"
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.grab().save(str(SHOTS / "code-permissions-page.png"))
    page.table.selectRow(0)
    page.revoke_button.click()
    assert window.grants.grants() == [] and page.table.rowCount() == 0 and not page.empty.isHidden()


def test_a_run_folder_from_elsewhere_asks_before_anything_loads(qtbot, window, tmp_path, tiny_model_dir):
    """Resume goes through granted_run_config: the run folder's own say-so counts for nothing."""
    model, run_dir = copied_run_on_pickle_weights(tmp_path, tiny_model_dir)
    with (run_dir / "config.yaml").open("a") as fh:
        fh.write("allow_pickle_weights: true\ntrust_remote_code: true\n")

    seen: list = []
    answer_next_confirmation(False, seen)
    assert window.granted_run_config(str(run_dir)) is False
    assert seen and seen[0]["title"] == "Load this model's pickle weights?" and "pytorch_model.bin" in seen[0]["files"]
    assert window.grants.grants() == []

    answer_next_confirmation(True, seen)
    cfg = window.granted_run_config(str(run_dir))
    assert cfg.allow_pickle_weights and not cfg.trust_remote_code  # only what the model needs, only when asked
    assert len(window.grants.grants()) == 1
    # Changed weights ask again.
    (model / "pytorch_model.bin").write_bytes((model / "pytorch_model.bin").read_bytes() + b"\0")
    answer_next_confirmation(False, seen)
    assert window.granted_run_config(str(run_dir)) is False and len(seen) == 3


def test_a_received_config_changes_neither_permissions_nor_the_studio_settings(qtbot, window, tmp_path,
                                                                              tiny_model_dir):
    from backend.runs.config import save_yaml
    from tests.conftest import tiny_run_config

    data = write_preference_file(tmp_path / "prefs.jsonl")
    received = tmp_path / "received.yaml"
    save_yaml(tiny_run_config("dpo", tiny_model_dir, data), received)
    with received.open("a") as fh:
        fh.write(f"trust_remote_code: true\nallow_pickle_weights: true\noutput_dir: {tmp_path / 'elsewhere'}\n")
    window.open_config_file(str(received))
    cfg = window.build_config()[0]
    assert cfg.model == str(tiny_model_dir) and cfg.method == "dpo"  # the recipe is taken ...
    assert (cfg.trust_remote_code, cfg.allow_pickle_weights, cfg.output_dir) == (False, False, "")  # ... not these
    window.method_panel.remember()  # what Train does with the form's values
    window.settings.sync()
    assert b"elsewhere" not in window.settings.path.read_bytes()
    assert window.settings.value("runs/extra_roots", []) == []
    assert not window.settings.method_values("dpo").get("trust_remote_code")
    assert window.grants.grants() == []


def test_compare_asks_before_loading_a_model_that_needs_permission(qtbot, window, tmp_path, tiny_model_dir):
    model, run_dir = copied_run_on_pickle_weights(tmp_path, tiny_model_dir)
    (run_dir / "adapter").mkdir()
    (run_dir / "adapter" / "adapter_config.json").write_text('{"peft_type": "LORA"}')

    seen: list = []
    answer_next_confirmation(False, seen)
    with qtbot.waitSignal(window.compare_tab.link.sig_error, timeout=10_000) as error:
        assert window.compare_tab.link.load({"run_dir": str(run_dir)}) is False
    assert error.args[0].kind == "not_allowed" and "did not allow" in error.args[0].message
    assert seen[0]["title"] == "Load this model's pickle weights?"
    assert window.compare_tab.link.pid() is None  # no worker was started for it
    answer_next_confirmation(True, seen)
    assert window.confirm_model_code(str(model)) == "granted"
    assert window.confirm_model_code(str(model)) == "ok" and len(seen) == 2  # remembered: not asked again
