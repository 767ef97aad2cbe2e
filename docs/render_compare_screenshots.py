"""Render the Compare tab offscreen to PNG, from a real DPO run.

Screens: one prompt answered by both models with their scores
(07-compare.png), a batch compare over held-out prompts with its verdict
(08-compare-batch.png), and the playground chat (09-playground.png).

The run is real: by default the embedded Gemma 3 270M trained with DPO on the
demo preference data through the studio's own worker (a few minutes on a
laptop CPU), so the answers are readable text. ``--model tiny`` uses a tiny
random Llama instead (seconds, but its answers are byte soup); ``--run DIR``
reuses a finished run folder and skips training.

Run: python docs/render_compare_screenshots.py [--out docs/screenshots] [--model embedded|tiny] [--run DIR]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "docs"))

from screenshot_timing import settle as _settle, wait_for as _wait  # noqa: E402
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
DEMO = ROOT / "resources" / "demo" / "demo_preferences.jsonl"
SIZE = (1480, 920)
SINGLE_PROMPT_INDEX = 3  # a held-out arithmetic question reads well in both panes


def _save(window, out: Path, name: str) -> Path:
    path = out / f"{name}.png"
    window.grab().save(str(path))
    print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}", flush=True)
    return path


def _train(work: Path, model: str, steps: int) -> Path:
    """A DPO run through the studio's worker; returns its folder."""
    from backend.runs.config import default_config
    from backend.training.client import run_to_completion

    if model == "tiny":
        model_dir = work / "tiny-llama"
        subprocess.run([sys.executable, "-c",
                        f"from backend.testing.tiny_model import build_tiny_model; build_tiny_model({str(model_dir)!r})"],
                       cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), check=True,
                       stdout=subprocess.DEVNULL)
        model_value, lr = str(model_dir), 2e-3
    else:
        # "" is the embedded Gemma 3 270M. A gentler rate than this drifts too little in 30 steps to
        # show; a steeper one teaches "Gladly!" so well that the facts after it suffer.
        model_value, lr = "", 1e-4
    cfg = default_config(
        "dpo", model=model_value, data_path=str(DEMO), quantization="none", max_steps=steps,
        per_device_train_batch_size=4, gradient_accumulation_steps=1, gradient_checkpointing=False,
        eval_fraction=0.05, eval_steps=max(5, steps // 2), learning_rate=lr, beta=0.1, max_length=64,
        save_steps=0, lora_r=16, lora_alpha=32, warmup_ratio=0.1, run_name=f"dpo-demo-{model}",
    )
    started = time.time()

    def progress(_run, event):
        step = getattr(event, "step", None)
        if type(event).__name__ == "TrainLog" and step and step % 5 == 0:
            print(f"  training step {step}/{steps} ({time.time() - started:.0f} s)", flush=True)

    run, events = run_to_completion(cfg, on_event=progress, timeout=3600)
    if type(events[-1]).__name__ != "RunFinished":
        raise RuntimeError(f"the run did not finish: {events[-1]}")
    return Path(run.run_dir)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "docs" / "screenshots"))
    parser.add_argument("--model", choices=("embedded", "tiny"), default="embedded")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--run", help="a finished run folder to compare (skips training)")
    parser.add_argument("--batch", type=int, default=12, help="prompts in the batch screenshot")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="alignstudio-compare-screens-"))
    os.environ["ALIGNSTUDIO_HOME"] = str(work / "home")

    if args.run:
        run_dir = Path(args.run).resolve()
    else:
        print(f"training a DPO run on the {args.model} model…", flush=True)
        run_dir = _train(work, args.model, args.steps)
    print(f"comparing {run_dir}", flush=True)

    from app.studio_app import create_application, open_window

    app = create_application()
    window = open_window()
    window.resize(*SIZE)
    _wait(app, lambda: window.device_probe.info is not None or not window.device_probe.is_running(), 60,
          "the device probe")
    window.settings.set_value("runs/extra_roots", [str(run_dir.parent)])
    _settle(app, 0.5)
    window.runs_tab.refresh()
    tab = window.compare_tab
    _wait(app, lambda: tab.picker.select(run_dir), 30, "the run in the compare list")
    tab.sampling_panel.set_values({"greedy": True, "max_new_tokens": 40, "seed": 1234})
    window.tabs.setCurrentWidget(tab)
    _wait(app, lambda: tab.link.state() == "ready", 300, "the model to load")

    # ---- one prompt, both answers
    view = tab.side_by_side
    choices = view.picker.choices("heldout")
    view.use_choice(choices[min(SINGLE_PROMPT_INDEX, len(choices) - 1)])
    view.generate_button.click()
    _wait(app, lambda: not view.is_running(), 300, "both answers")
    _settle(app, 0.8)
    _save(window, out, "07-compare")

    # ---- batch over the held-out split
    tab.views.setCurrentWidget(tab.batch)
    tab.sampling_panel.set_values({"max_new_tokens": 32})
    tab.batch.count.setValue(min(args.batch, tab.batch.count.maximum()))
    tab.batch.run_button.click()
    _wait(app, lambda: not tab.batch.is_running(), 900, "the batch compare")
    tab.batch.table.selectRow(0)
    _settle(app, 0.8)
    _save(window, out, "08-compare-batch")

    # ---- playground
    play = tab.playground
    tab.views.setCurrentWidget(play)
    tab.sampling_panel.set_values({"max_new_tokens": 48})
    for message in ("What is the capital of France?", "And of Italy?"):
        play.input.setPlainText(message)
        play.send_button.click()
        _wait(app, lambda: not play.is_running(), 300, "the chat reply")
    play.input.setPlainText("How many legs does a spider have?")
    _settle(app, 0.8)
    _save(window, out, "09-playground")

    tab.views.setCurrentWidget(view)
    window.close()
    tab.link.wait_released(15)
    return 0


if __name__ == "__main__":
    sys.exit(main())
