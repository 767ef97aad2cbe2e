"""Render the studio's main screens to PNG, offscreen, from real runs.

Screens: the empty window, the demo data loaded, training in progress, a
finished run, a reopened run in the Runs tab and an overlay of two runs.

The runs are real: a tiny random Llama (built in a child process, since the
window's process never imports torch) trained with DPO on the demo preference
data through the same worker the studio uses. The tiny model makes the
screenshots take about three minutes instead of an hour; the curves are the
ones it really produced.

Run: python docs/render_screenshots.py [--out docs/screenshots] [--steps 40]
"""

from __future__ import annotations

import argparse
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
DEMO = ROOT / "resources" / "demo" / "demo_preferences.jsonl"
SIZE = (1480, 920)


def _save(window, out: Path, name: str) -> Path:
    window.live.plots.redraw_now() if window.live._grid is not None else None
    if window.runs_tab._grid is not None:
        window.runs_tab.plots.redraw_now()
    path = out / f"{name}.png"
    window.grab().save(str(path))
    print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return path


def _start(window) -> None:
    if not window.start_training():
        raise RuntimeError(f"Train refused: {window.live.ready_hint.text()}")


def _configure_run(window, model_dir: Path, steps: int, learning_rate: float, beta: float, name: str) -> None:
    window.method_panel.set_method("dpo")
    window.model_panel.set_kind("local")
    window.model_panel.text.setText(str(model_dir))
    window.method_panel.set_values(dict(
        quantization="none", max_steps=steps, per_device_train_batch_size=4, gradient_accumulation_steps=1,
        gradient_checkpointing=False, eval_fraction=0.1, eval_steps=max(5, steps // 4), learning_rate=learning_rate,
        beta=beta, max_length=96, save_steps=0, lora_r=8, lora_alpha=16, warmup_ratio=0.1, run_name=name,
    ))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "docs" / "screenshots"))
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="alignstudio-screens-"))
    os.environ["ALIGNSTUDIO_HOME"] = str(work / "home")
    model_dir = work / "tiny-llama"
    builder = build_tiny_model_in_background(ROOT, model_dir)

    from app.studio_app import create_application, open_window

    app = create_application()
    window = open_window()
    window.resize(*SIZE)
    _settle(app, 1.0)
    _save(window, out, "01-empty")

    window.data_panel.load_path(str(DEMO))
    _wait(app, lambda: window.data_panel.current() is not None, 60, "the demo data")
    window.method_panel.set_method("dpo")
    _settle(app, 1.0)
    window.data_panel.preview.select_cell(1, 1)
    _wait(app, lambda: window.device_probe.info is not None or not window.device_probe.is_running(), 60,
          "the device probe")
    _settle(app, 0.8)
    _save(window, out, "02-data-loaded")

    if builder.wait() != 0:
        raise RuntimeError(builder.stderr.read().decode()[-2000:])
    _configure_run(window, model_dir, args.steps, 2e-3, 0.1, "dpo-lr2e-3-beta0.1")
    _settle(app, 1.0)  # the report is re-measured with the tiny model's tokenizer
    _wait(app, lambda: not window.data_panel.loader.is_busy(), 60, "the data report")
    _start(window)
    _wait(app, lambda: window.live.plots.series_length("loss") >= args.steps // 2, 600, "half of the first run")
    window.live.plots.show_readout_at(args.steps // 3)  # what hovering a plot shows
    _settle(app, 0.8)
    _save(window, out, "03-training")
    window.live.plots.show_readout_at(float("nan"))
    _wait(app, lambda: not window.controller.is_running(), 600, "the first run to finish")
    _settle(app, 1.0)
    _save(window, out, "04-finished")
    first_run = window.live.run_dir()

    _configure_run(window, model_dir, args.steps, 5e-4, 0.3, "dpo-lr5e-4-beta0.3")
    _settle(app, 0.5)
    _start(window)
    _wait(app, lambda: not window.controller.is_running(), 600, "the second run to finish")
    second_run = window.live.run_dir()

    tab = window.runs_tab
    window.tabs.setCurrentWidget(tab)
    tab.refresh()
    _wait(app, lambda: {first_run, second_run} <= set(tab.run_dirs()), 30, "the runs list")
    tab.select_runs([first_run])
    _wait(app, lambda: tab.shown_runs() == [first_run], 30, "the reopened run")
    _settle(app, 1.5)
    _save(window, out, "05-run-reopened")
    tab.select_runs([first_run, second_run])
    _wait(app, lambda: sorted(tab.shown_runs()) == sorted([first_run, second_run]), 30, "the overlay")
    _settle(app, 1.5)
    _save(window, out, "06-overlay")
    window.close()
    shutil.rmtree(work, ignore_errors=True)  # the temporary home: two runs, their adapters, the tiny model

    return 0


if __name__ == "__main__":
    sys.exit(main())
