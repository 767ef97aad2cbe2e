"""Render the RLHF screens to PNG, offscreen, from real runs on a tiny model.

Screens: the RLHF pipeline (the reward-model run picked in stage 2, PPO in stage 3), a PPO
run's live view (scores, RLHF reward, KL, losses, clip fractions, the sampled answers with
their scores), Best-of-N in Compare (N answers ranked, the winner highlighted, the batch
report) and an AI-feedback preference file in the Data panel.

The runs are real: a tiny random Llama and a reward model on it (trained in a child
process, since the window's process never imports torch), then PPO started from the
window through the same worker the studio uses. The AI-feedback file is any file the
``alignstudio generate ai-feedback`` job wrote (``--feedback``), e.g. one labelled by the
small instruct judge.

Run: python docs/render_rlhf_screenshots.py --out DIR [--feedback FILE.jsonl] [--steps 12]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "docs"))

from screenshot_timing import settle as _settle, wait_for as _wait  # noqa: E402
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
SIZE = (1480, 1000)

# Trained in a child process: the tiny model and a reward model that prefers polite answers.
PREPARE = """
import json, sys
from pathlib import Path
sys.path.insert(0, {root!r})
from bench.bench_ppo_vs_rloo import train_reward_model, write_pairs
from backend.testing.tiny_model import build_tiny_model
work = Path({work!r})
build_tiny_model(str(work / "tiny-model"))
pairs = write_pairs(work / "pairs.jsonl")
reward = train_reward_model(str(work / "tiny-model"), pairs, work / "home" / "runs",
                            dict(quantization="none", per_device_train_batch_size=8, gradient_accumulation_steps=1,
                                 gradient_checkpointing=False, logging_steps=1, warmup_ratio=0.0))
print(json.dumps({{"model": str(work / "tiny-model"), "pairs": str(pairs), "reward": str(reward)}}))
"""


def _save(widget, out: Path, name: str) -> Path:
    path = out / f"{name}.png"
    widget.grab().save(str(path))
    print(f"wrote {path}", flush=True)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "docs" / "screenshots"))
    parser.add_argument("--feedback", default="", help="an AI-feedback output file to open in the Data panel")
    parser.add_argument("--steps", type=int, default=12, help="PPO steps of the live-view run")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="alignstudio-rlhf-screens-"))
    os.environ["ALIGNSTUDIO_HOME"] = str(work / "home")
    print("training a reward model on a tiny model…", flush=True)
    done = subprocess.run([sys.executable, "-c", PREPARE.format(root=str(ROOT), work=str(work))], cwd=ROOT,
                          capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    made = json.loads(done.stdout.strip().splitlines()[-1])

    from app.studio_app import create_application, open_window

    app = create_application()
    window = open_window()
    window.resize(*SIZE)
    window.data_panel.load_path(made["pairs"])
    _wait(app, lambda: window.data_panel.current() is not None, 60, "the pairs")
    window.model_panel.set_kind("local")
    window.model_panel.text.setText(made["model"])
    _settle(app, 1.0)

    # ---- the pipeline, stage 2's reward model picked, PPO in stage 3
    action = next(a for a in window.menuBar().actions() if a.text() == "&Run")
    next(a for a in action.menu().actions() if a.text() == "RLHF pipeline…").trigger()
    dialog = window.rlhf_pipeline
    _wait(app, lambda: dialog.picked_run(1) == made["reward"], 30, "the reward-model run in stage 2")
    dialog.resize(820, dialog.sizeHint().height())
    _settle(app, 0.5)
    _save(dialog, out, "rlhf-pipeline")
    started = []
    real_start = window.start_training
    window.start_training = lambda: started.append(window.build_config()[0]) or True
    dialog.train_buttons[2].click()  # one click: the Train tab now holds PPO scored by that reward model
    window.start_training = real_start
    dialog.close()
    cfg = started[0]
    assert cfg.method == "ppo" and cfg.reward_model == made["reward"], cfg

    # ---- a PPO run, live: small enough for the tiny model to finish in a minute or two
    window.method_panel.set_values(dict(
        quantization="none", max_steps=args.steps, per_device_train_batch_size=8, gradient_accumulation_steps=1,
        # Held-out prompts (never evaluated during the run) are what Best-of-N's batch report reads.
        gradient_checkpointing=False, eval_fraction=0.2, eval_steps=1000, save_steps=0, learning_rate=5e-3, max_length=96,
        max_completion_length=8, logging_steps=1, warmup_ratio=0.0, run_name="ppo-polite",
    ))
    _settle(app, 1.0)
    if not window.start_training():
        raise RuntimeError(f"Train refused: {window.live.ready_hint.text()}")
    _wait(app, lambda: not window.controller.is_running(), 900, "the PPO run")
    _settle(app, 1.0)
    window.live.plots.redraw_now()
    if window.live.sample_table is not None:
        window.live.sample_table.view.selectRow(0)
    _settle(app, 0.5)
    _save(window, out, "ppo-run")
    run_dir = window.live.run_dir()

    # ---- Best-of-N in Compare, on the PPO run's aligned model
    tab = window.compare_tab
    window.tabs.setCurrentWidget(tab)
    window.runs_tab.refresh()
    _wait(app, lambda: tab.picker.select(Path(run_dir)), 60, "the PPO run in the compare list")
    _wait(app, lambda: tab.link.state() == "ready", 300, "the model to load")
    view = tab.best_of_n
    tab.views.setCurrentWidget(view)
    tab.sampling_panel.set_values({"greedy": False, "temperature": 1.0, "max_new_tokens": 12, "seed": 3})
    view.reward_model.setText(made["reward"])
    view.n.setValue(4)
    view.prompt_edit.setPlainText("Question 3: can you help me with task 3?")
    _wait(app, view.sample_button.isEnabled, 60, "the sample button")
    view.sample_button.click()
    _wait(app, lambda: len(view.cards()) == 4 and not view.is_running(), 600, "the N ranked answers")
    _settle(app, 0.8)
    _save(window, out, "compare-best-of-n")
    view.report_count.setValue(min(8, view.report_count.maximum()))
    _wait(app, view.report_button.isEnabled, 60, "the report button")
    view.report_button.click()
    _wait(app, lambda: view.report() is not None and not view.is_running(), 600, "the best-of-N report")
    view.table.selectRow(0)
    _settle(app, 0.8)
    _save(window, out, "compare-best-of-n-report")
    tab.release_worker()

    # ---- an AI-feedback file in the Data panel
    if args.feedback:
        window.tabs.setCurrentWidget(window.train_page)
        window.data_panel.load_path(args.feedback)
        _wait(app, lambda: window.data_panel.current() is not None
              and Path(window.data_panel.current().path) == Path(args.feedback), 60, "the AI-feedback file")
        _settle(app, 1.0)
        _save(window, out, "ai-feedback-in-data-panel")
    window.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
