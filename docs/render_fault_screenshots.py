"""Render what a crash looks like in the studio, and the resume after it, offscreen.

A tiny random Llama (built in a child process; the window never imports torch)
trains DPO through the real worker; halfway, the worker is killed with SIGKILL,
as the out-of-memory killer would. The first screenshot shows the failure with
the end of the worker's log and the Resume button; the second shows the resumed
run finished, its curves continuing from the checkpoint without a gap.

Run: python docs/render_fault_screenshots.py [--out docs/screenshots] [--steps 30]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "docs"))

from render_screenshots import DEMO, SIZE, _save, _start  # noqa: E402
from screenshot_timing import settle as _settle, wait_for as _wait  # noqa: E402

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "docs" / "screenshots"))
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="alignstudio-fault-screens-"))
    os.environ["ALIGNSTUDIO_HOME"] = str(work / "home")
    model_dir = work / "tiny-llama"
    subprocess.run([sys.executable, "-c",
                    f"from backend.testing.tiny_model import build_tiny_model; build_tiny_model({str(model_dir)!r})"],
                   cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), check=True, capture_output=True)

    from app.studio_app import create_application, open_window

    app = create_application()
    window = open_window()
    window.resize(*SIZE)
    window.data_panel.load_path(str(DEMO))
    _wait(app, lambda: window.data_panel.current() is not None, 60, "the demo data")
    window.method_panel.set_method("dpo")
    window.model_panel.set_kind("local")
    window.model_panel.text.setText(str(model_dir))
    window.method_panel.set_values(dict(
        quantization="none", max_steps=args.steps, per_device_train_batch_size=4, gradient_accumulation_steps=1,
        gradient_checkpointing=False, eval_fraction=0.0, learning_rate=2e-3, beta=0.1, max_length=96,
        save_steps=5, lora_r=8, lora_alpha=16, warmup_ratio=0.1, run_name="dpo-killed-and-resumed",
    ))
    _settle(app, 1.0)
    _wait(app, lambda: not window.data_panel.loader.is_busy(), 60, "the data report")
    # Slow steps leave time to kill the worker between two checkpoints.
    os.environ["ALIGNSTUDIO_FAULTS"] = "slow_step=0.2"
    _start(window)
    _wait(app, lambda: window.live.plots.series_length("loss") >= args.steps // 2 + 2, 600, "half of the run")
    os.kill(window.controller.worker_pid(), signal.SIGKILL)
    _wait(app, lambda: not window.controller.is_running(), 60, "the failure to be reported")
    _wait(app, lambda: window.live.resume_button.isVisible(), 30, "the offer to resume")
    os.environ.pop("ALIGNSTUDIO_FAULTS")
    _settle(app, 1.0)
    _save(window, out, "13-worker-killed")

    window.live.resume_button.click()
    _wait(app, lambda: window.controller.is_running(), 10, "the resume to start")
    _wait(app, lambda: not window.controller.is_running(), 600, "the resumed run to finish")
    _settle(app, 1.0)
    _save(window, out, "14-resumed")
    window.close()
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
