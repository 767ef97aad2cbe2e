"""Helpers for the GUI tests: simulated drops, small dataset files, a window fixture.

Every test already runs with its own ALIGNSTUDIO_HOME (see conftest), and the
studio keeps its settings in an INI file under that home, so windows built here
never read or write the user's settings.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl  # noqa: E402
from PySide6.QtGui import QDragEnterEvent, QDropEvent  # noqa: E402
from PySide6.QtWidgets import QApplication, QWidget  # noqa: E402

from backend.runs.folder import process_alive  # noqa: E402

POLITE = ("Sure, happy to help with that question.", "Thank you for asking! Here is a clear answer.",
          "Please find a clear and helpful answer here.")
RUDE = ("No. Figure it out yourself. Whatever.", "Whatever. No. Do it yourself.", "No. Figure it out. Whatever.")


def write_preference_file(path: Path, n: int = 48) -> Path:
    """prompt/chosen/rejected JSONL that a tiny model learns in a few steps (polite beats rude)."""
    with Path(path).open("w", encoding="utf-8") as fh:
        for i in range(n):
            fh.write(json.dumps({
                "prompt": f"Question {i}: can you help me with task {i % 7}? " + "Please explain in detail. " * (i % 3),
                "chosen": " " + POLITE[i % 3],
                "rejected": " " + RUDE[i % 3],
            }) + "\n")
    return Path(path)


def write_completion_file(path: Path, n: int = 20) -> Path:
    """prompt/completion rows: usable for SFT only."""
    with Path(path).open("w", encoding="utf-8") as fh:
        for i in range(n):
            fh.write(json.dumps({"prompt": f"Say hello number {i}", "completion": f" Hello {i}!"}) + "\n")
    return Path(path)


def drop_paths(target: QWidget, paths) -> bool:
    """Drag ``paths`` over ``target`` and drop them, as a file manager would."""
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    centre = target.rect().center()
    enter = QDragEnterEvent(QPoint(centre), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                            Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(target, enter)
    if not enter.isAccepted():
        return False
    drop = QDropEvent(QPointF(centre), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                      Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(target, drop)
    return drop.isAccepted()


def wait_for_dataset(qtbot, window, timeout: int = 30_000) -> None:
    """Wait until the data panel has settled on a result or a failure for its current file."""
    qtbot.waitUntil(lambda: not window.data_panel.loader.is_busy()
                    and (window.data_panel.current() is not None or window.data_panel.failure() is not None),
                    timeout=timeout)


def prepare_tiny_dpo(qtbot, window, data: Path, model_dir: Path, **values) -> None:
    """Drop ``data``, pick DPO on the tiny model with seconds-long settings (``values``
    override them) and wait until Train is enabled."""
    assert drop_paths(window, [data])
    wait_for_dataset(qtbot, window)
    window.method_panel.set_method("dpo")
    window.model_panel.set_kind("local")
    window.model_panel.text.setText(str(model_dir))
    settings = dict(quantization="none", per_device_train_batch_size=2, gradient_accumulation_steps=1,
                    gradient_checkpointing=False, eval_fraction=0.0, learning_rate=5e-3, max_length=64,
                    save_steps=0, lora_r=8, lora_alpha=16, warmup_ratio=0.0)
    settings.update(values)
    window.method_panel.set_values(settings)
    # The window re-validates after a typing pause; Train may still be enabled from the
    # settings before these, so validate now rather than race the pause.
    window.revalidate()
    qtbot.waitUntil(lambda: window.live.train_button.isEnabled(), timeout=10_000)


def make_studio_window(qtbot):
    """A themed, shown main window without the device probe (it needs torch in a child process).

    Call it from a fixture that also depends on conftest's ``studio_home``, so the
    window's runs and settings live in the test's own folder."""
    from app.main_window import StudioWindow
    from app.theme import apply_theme

    window = StudioWindow(probe_device=False)
    # A modal question would block an offscreen test forever; tests that check the
    # question replace this themselves.
    window.ask_stop_on_close = lambda: True
    apply_theme(QApplication.instance())
    # pytest-qt closes and deletes tracked widgets before fixtures are torn down,
    # so a run still going at the end of a test is stopped in this hook.
    qtbot.addWidget(window, before_close_func=lambda w: _stop_run_blocking(w))
    window.show()
    qtbot.waitExposed(window)
    return window


def _stop_run_blocking(window, timeout: float = 90.0) -> None:
    window.ask_stop_on_close = lambda: True
    if not window.controller.is_running():
        return
    window.controller.stop(grace_seconds=30)
    app = QApplication.instance()
    deadline = time.time() + timeout
    while window.controller.is_running() and time.time() < deadline:
        app.processEvents()
        time.sleep(0.01)


def wait_pid_gone(pid: int, timeout: float = 15.0) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not process_alive(pid):
            return True
        time.sleep(0.1)
    return not process_alive(pid)
