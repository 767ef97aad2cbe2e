"""Render the method screens to PNG, offscreen, from real runs on a tiny model.

Screens: the grouped method dropdown open on thumbs-up/down data (the pair methods
disabled, each saying why), a KTO run's live plots, a reward model run's live plots,
and the reward evaluation of that run on pairs with a subset column.

The runs are real: a tiny random Llama (built in a child process, since the window's
process never imports torch) trained through the studio's own worker.

Run: python docs/render_method_screenshots.py [--out docs/screenshots] [--steps 24]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "docs"))

from screenshot_timing import build_tiny_model_in_background, settle as _settle, wait_for as _wait  # noqa: E402,E501

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
SIZE = (1480, 920)
GOOD = ["Sure, happy to help with that question.", "Thank you for asking! Here is a clear answer."]
BAD = ["No. Figure it out yourself.", "Whatever."]


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _data(work: Path) -> tuple[Path, Path, Path]:
    """Thumbs-up/down answers (three good to one bad), pairs, and pairs with a subset column."""
    unpaired = _write(work / "thumbs.jsonl", [
        {"prompt": f"Question {i}: can you help me with task {i % 7}?",
         "completion": " " + (GOOD if i % 4 else BAD)[i % 2], "label": bool(i % 4)} for i in range(64)])
    pairs = _write(work / "pairs.jsonl", [
        {"prompt": f"Question {i}: can you help me with task {i % 7}?", "chosen": " " + GOOD[i % 2],
         "rejected": " " + BAD[i % 2]} for i in range(64)])
    subsets = _write(work / "pairs_with_subsets.jsonl", [
        {"prompt": f"Request {i}: please help with item {i % 5}.", "chosen": " " + GOOD[i % 2],
         "rejected": " " + BAD[(i // 2) % 2], "subset": ("chat", "chat-hard", "safety")[i % 3]} for i in range(30)])
    return unpaired, pairs, subsets


def _save(widget, out: Path, name: str) -> Path:
    path = out / f"{name}.png"
    widget.grab().save(str(path))
    print(f"wrote {path}")
    return path


def _save_with_popup(window, combo, out: Path, name: str) -> Path:
    """The window with the combo's open list painted where it pops up (a popup is a window of its own)."""
    from PySide6.QtGui import QPainter

    shot = window.grab()
    popup = combo.view().window()
    painter = QPainter(shot)
    painter.drawPixmap(window.mapFromGlobal(popup.mapToGlobal(popup.rect().topLeft())), popup.grab())
    painter.end()
    path = out / f"{name}.png"
    shot.save(str(path))
    print(f"wrote {path}")
    return path


def _train(app, window, method: str, model_dir: Path, data: Path, steps: int, **values) -> str:
    window.data_panel.load_path(str(data))
    _wait(app, lambda: window.data_panel.current() is not None and not window.data_panel.loader.is_busy(), 120,
          f"{data.name}")
    window.method_panel.set_method(method)
    window.model_panel.set_kind("local")
    window.model_panel.text.setText(str(model_dir))
    window.method_panel.set_values(dict(
        quantization="none", max_steps=steps, per_device_train_batch_size=4, gradient_accumulation_steps=1,
        gradient_checkpointing=False, eval_fraction=0.1, eval_steps=max(4, steps // 3), learning_rate=5e-3,
        max_length=64, save_steps=0, lora_r=8, lora_alpha=16, warmup_ratio=0.0, logging_steps=1,
        run_name=f"{method}-tiny", **values))
    _settle(app, 1.0)
    _wait(app, lambda: not window.data_panel.loader.is_busy(), 60, "the data report")
    if not window.start_training():
        raise RuntimeError(f"Train refused: {window.live.ready_hint.text()}")
    _wait(app, lambda: not window.controller.is_running(), 900, f"the {method} run to finish")
    _settle(app, 1.5)
    window.live.plots.redraw_now()
    return window.live.run_dir()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "docs" / "screenshots"))
    parser.add_argument("--steps", type=int, default=24)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="alignstudio-method-screens-"))
    os.environ["ALIGNSTUDIO_HOME"] = str(work / "home")
    model_dir = work / "tiny-llama"
    builder = build_tiny_model_in_background(ROOT, model_dir)
    unpaired, pairs, subsets = _data(work)

    from app.studio_app import create_application, open_window

    app = create_application()
    window = open_window()
    window.resize(*SIZE)
    _settle(app, 1.0)

    # The dropdown on thumbs-up/down data: the pair methods are disabled, each with its reason.
    window.data_panel.load_path(str(unpaired))
    _wait(app, lambda: window.data_panel.current() is not None and not window.data_panel.loader.is_busy(), 120,
          "the thumbs-up/down data")
    window.method_panel.set_method("kto")
    _settle(app, 1.0)
    combo = window.method_panel.method_combo
    combo.showPopup()
    _settle(app, 1.0)
    _save_with_popup(window, combo, out, "method_dropdown_grouped")
    combo.hidePopup()

    if builder.wait() != 0:
        raise RuntimeError(builder.stderr.read().decode()[-2000:])
    _train(app, window, "kto", model_dir, unpaired, args.steps, undesirable_weight=2.5)
    _save(window, out, "kto-run")
    reward_run = _train(app, window, "bradley_terry", model_dir, pairs, args.steps)
    _save(window, out, "reward-model-run")

    from app.runs.reward_eval_panel import RewardEvalPanel

    panel = RewardEvalPanel(reward_run, run_dirs=[reward_run], data_path=str(subsets), parent=window)
    panel.resize(820, 640)
    panel.show()
    _settle(app, 0.5)
    panel.start()
    _wait(app, lambda: panel.report is not None and not panel.following, 600, "the reward evaluation")
    _settle(app, 1.0)
    _save(panel, out, "reward-evaluation")
    panel.close()
    window.close()
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
