"""How responsive is the studio window? Prints three figures (and a few more):

1. launch -> visible: wall time from starting a fresh Python process to the
   window being shown and its first event-loop turn done (median of 5);
2. longest GUI event-loop stall while a run streams events, measured with a
   5 ms QTimer heartbeat: during a real DPO run of a tiny model through the
   worker process, and during a synthetic stream of 20,000 log events at
   1,000 per second from another thread into plots that already hold
   100,000 steps (goal: under 50 ms);
3. time to redraw and paint the plots with 100,000 points per curve (every
   DPO curve): every curve, a steady-state frame after one more point per
   curve, the same with smoothing on, and switching smoothing on; side by side
   for the grid's own min/max decimation and for pyqtgraph's peak downsampling
   of the whole series (how the grid drew before), frames interleaved. Wall
   time and the GUI thread's CPU time: on a machine that other work keeps
   busy, wall time measures the machine, CPU time the drawing (goal: < 16 ms).

Run: QT_QPA_PLATFORM=offscreen python bench/bench_gui.py [--steps 120] [--skip-real-run]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
DEMO = ROOT / "resources" / "demo" / "demo_preferences.jsonl"


# ------------------------------------------------------------ 1. launch time
LAUNCH_CHILD = """
import sys, time
from PySide6.QtCore import QTimer
from app.studio_app import create_application, open_window
app = create_application()
window = open_window()
def shown():
    print("VISIBLE", time.time(), window.isVisible(), flush=True)
    heavy = [m for m in ("torch", "transformers", "trl") if m in sys.modules]
    print("HEAVY", heavy, flush=True)
    window.device_probe.stop()
    app.quit()
QTimer.singleShot(0, shown)
app.exec()
"""


def bench_launch(home: Path, repeats: int = 5) -> dict:
    env = dict(os.environ, ALIGNSTUDIO_HOME=str(home), PYTHONPATH=str(ROOT))
    times = []
    heavy = []
    for _ in range(repeats):
        start = time.time()
        out = subprocess.run([sys.executable, "-c", LAUNCH_CHILD], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=120)
        line = next((ln for ln in out.stdout.splitlines() if ln.startswith("VISIBLE")), None)
        if line is None:
            raise RuntimeError(f"launch failed:\n{out.stderr[-2000:]}")
        times.append(float(line.split()[1]) - start)
        heavy = next(ln for ln in out.stdout.splitlines() if ln.startswith("HEAVY"))
    return {"launch_to_visible_s_median": statistics.median(times), "launch_to_visible_s_min": min(times),
            "launch_runs": len(times), "heavy_modules_in_gui": heavy}


# ------------------------------------------------------- heartbeat (stalls)
class Heartbeat:
    """A 5 ms timer; any gap much longer than that is time the event loop could not run."""

    def __init__(self, interval_ms: int = 5):
        from PySide6.QtCore import QTimer

        self.interval = interval_ms / 1000
        self.gaps: list[float] = []
        self.busy: list[float] = []  # CPU time this thread used during each gap
        self.ends: list[float] = []  # when each gap ended
        self._start = 0.0
        self._last = None
        self._last_cpu = None
        self._timer = QTimer()
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self._tick)

    def start(self):
        self._last = self._start = time.perf_counter()
        self._last_cpu = time.thread_time()
        self._timer.start()

    def stop(self):
        self._timer.stop()

    def _tick(self):
        now, cpu = time.perf_counter(), time.thread_time()
        self.gaps.append(now - self._last)
        self.busy.append(cpu - self._last_cpu)
        self.ends.append(now)
        self._last, self._last_cpu = now, cpu

    def summary(self, prefix: str) -> dict:
        gaps = sorted(self.gaps) or [0.0]
        worst = max(range(len(self.gaps)), key=self.gaps.__getitem__) if self.gaps else None
        return {
            f"{prefix}_longest_stall_ms": (gaps[-1] - self.interval) * 1000 if gaps[-1] > self.interval else 0.0,
            # Of that gap, the time the GUI thread actually ran; the rest it waited for a CPU
            # (on a 2-core machine the worker's torch threads compete for both cores).
            f"{prefix}_longest_stall_gui_cpu_ms": self.busy[worst] * 1000 if worst is not None else 0.0,
            f"{prefix}_longest_stall_ended_at_s": self.ends[worst] - self._start if worst is not None else 0.0,
            f"{prefix}_longest_gui_busy_ms": max(self.busy, default=0.0) * 1000,
            f"{prefix}_p99_gap_ms": gaps[int(0.99 * (len(gaps) - 1))] * 1000,
            f"{prefix}_heartbeats": len(self.gaps),
        }


def _spin(app, seconds: float):
    end = time.time() + seconds
    while time.time() < end:
        app.processEvents()
        time.sleep(0.002)


def _wait(app, predicate, timeout: float) -> bool:
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return True
        app.processEvents()
        time.sleep(0.002)
    return predicate()


def _dispose(app, widget) -> None:
    """Close and delete a top-level widget on this (the GUI) thread, now."""
    widget.close()
    widget.deleteLater()
    _spin(app, 0.2)


# ---------------------------------------------------- 2a. real run stalls
def bench_real_run(app, home: Path, steps: int, niceness: int | None = None, prefix: str = "real_run") -> dict:
    """``niceness``: how far below the window the worker runs (None: the studio's default;
    0: the window's own, which is what a plain nice amounted to where the kernel groups
    processes by session)."""
    from app.studio_app import open_window
    from app.train import training_supervisor

    lowered = {"pid": None}
    original = training_supervisor.lower_priority

    def lower(pid, *args, **kwargs):
        lowered["pid"] = pid
        if niceness is None:
            original(pid, *args, **kwargs)
        else:
            original(pid, niceness)

    training_supervisor.lower_priority = lower

    model_dir = home / "tiny-llama"
    # The tiny model needs torch; build it in a child so this (GUI) process stays torch-free.
    if not model_dir.exists():
        subprocess.run([sys.executable, "-c", f"from backend.testing.tiny_model import build_tiny_model; "
                                          f"build_tiny_model({str(model_dir)!r})"],
                       cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), check=True, capture_output=True)
    window = open_window(probe_device=False)
    window.data_panel.load_path(str(DEMO))
    assert _wait(app, lambda: window.data_panel.current() is not None, 60), window.data_panel.failure()
    window.method_panel.set_method("dpo")
    window.model_panel.set_kind("local")
    window.model_panel.text.setText(str(model_dir))
    window.method_panel.set_values(dict(
        quantization="none", max_steps=steps, per_device_train_batch_size=2, gradient_accumulation_steps=1,
        gradient_checkpointing=False, eval_fraction=0.05, eval_steps=max(10, steps // 5), learning_rate=2e-3,
        max_length=96, save_steps=0, lora_r=8, lora_alpha=16, logging_steps=1,
    ))
    _spin(app, 0.3)
    beat = Heartbeat()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    wall0 = time.time()
    beat.start()
    click_wall, click_cpu = time.perf_counter(), time.thread_time()
    assert window.start_training()
    click_wall, click_cpu = time.perf_counter() - click_wall, time.thread_time() - click_cpu
    priority = {}

    def done() -> bool:
        pid = lowered["pid"]
        if pid is not None and not priority:  # the worker's priority, once it has been lowered
            try:
                priority["nice"] = os.getpriority(os.PRIO_PROCESS, pid)
                group = Path(f"/proc/{pid}/autogroup")
                priority["autogroup"] = group.read_text().split()[-1] if group.exists() else "none"
            except OSError:
                priority["nice"] = "gone"
        return not window.controller.is_running()

    finished = _wait(app, done, 900)
    training_supervisor.lower_priority = original
    beat.stop()
    wall = time.time() - wall0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    gui_cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    result = beat.summary(prefix)
    result.update({f"{prefix}_steps_logged": window.live.plots.series_length("loss"), f"{prefix}_wall_s": wall,
                   f"{prefix}_finished": finished,
                   f"{prefix}_gui_cpu_share": gui_cpu / wall,
                   # Pressing Train: validating, writing the run folder, resetting the view, all
                   # before the worker starts (inside the first heartbeat gap).
                   f"{prefix}_train_click_ms": click_wall * 1000, f"{prefix}_train_click_cpu_ms": click_cpu * 1000,
                   f"{prefix}_plots": len(window.live.plots.plot_ids()),
                   f"{prefix}_worker_nice": priority.get("nice", "?"),
                   f"{prefix}_worker_autogroup_nice": priority.get("autogroup", "?")})
    _dispose(app, window)
    return result


# ------------------------------------------------ 2b. synthetic flood stalls
def bench_event_flood(app, count: int = 20_000, rate: int = 1000, prefill: int = 100_000) -> dict:
    import numpy as np

    from app.studio_app import open_window
    from backend.core.events import TrainLog

    window = open_window(probe_device=False)
    _spin(app, 0.3)
    window.live.begin_run("dpo")
    sup = window.controller.supervisor
    keys = ("loss", "rewards/margins", "rewards/chosen", "rewards/rejected", "rewards/accuracies",
            "logps/chosen", "logps/rejected", "logits/chosen", "logits/rejected", "learning_rate", "grad_norm",
            "entropy", "mean_token_accuracy")
    # The run is already 100,000 steps long when the flood starts: every curve redraw
    # handles 100k+ points, as in the "a run of 100,000 logged steps".
    grid = window.live.plots
    steps = np.arange(1, prefill + 1, dtype=float)
    for i, key in enumerate(keys + ("peak_memory_mb", "tokens_per_second")):
        grid.add_points(key, steps, np.sin(steps / 5000.0) + i)
    _wait(app, lambda: not grid.pending_plot_ids(), 30)
    _spin(app, 0.5)

    def produce():
        # 1,000 steps a second is faster than any real trainer logs (a tiny model on
        # a GPU manages a few hundred); bursts of 10 mimic a worker's buffered stdout.
        start = time.perf_counter()
        for n in range(1, count + 1):
            if n % 10 == 0:
                delay = start + n / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            step = prefill + n
            metrics = {k: 1.0 / step + (i * 0.01) for i, k in enumerate(keys)}
            sup.sig_train_log.emit(TrainLog(step=step, epoch=step / 1000, metrics=metrics, total_steps=prefill + count,
                                            tokens_per_second=1000.0, seconds_per_step=0.01,
                                            eta_seconds=count - n, elapsed_seconds=step * 0.01,
                                            peak_memory_mb=500.0, memory_kind="rss"))

    beat = Heartbeat()
    beat.start()
    start = time.time()
    producer = threading.Thread(target=produce)
    producer.start()
    done = _wait(app, lambda: not producer.is_alive() and grid.series_length("loss") == prefill + count, 300)
    elapsed = time.time() - start
    _spin(app, 0.2)
    beat.stop()
    producer.join()
    result = beat.summary("flood")
    result.update({"flood_events": count, "flood_events_per_s": count / elapsed, "flood_all_delivered": done})
    window.live.on_idle()
    _dispose(app, window)
    return result


# ------------------------------------------------ 3. redraw with 100k points
def _pyqtgraph_redraw(curve) -> None:
    """The grid's curve redraw before it decimated by itself: the whole series handed to
    pyqtgraph, which peak-downsamples and clips it at every setData (the baseline)."""
    n = curve.series.n
    x = curve.series.x[:n]
    curve.raw.setData(x, curve.series.y[:n])
    if curve.smooth.isVisible():
        curve.smooth.setData(x, curve.series.smoothed[:n])
    curve.drawn_n = n
    curve.dirty = False


def _redraw_grid(app, points: int, baseline: bool):
    import types

    import numpy as np

    from app.train.metric_catalog import EXPECTED_KEYS, MEMORY_KEY, style_for_key
    from widgets.metric_plots import MetricPlotGrid

    # The live view's grid: headroom ahead of the last step, so the step axis does not move every frame.
    grid = MetricPlotGrid(style_for_key, follow_headroom=0.25)
    grid.resize(1000, 1400)
    grid.show()
    steps = np.arange(1, points + 1, dtype=float)
    rng = np.random.default_rng(0)
    keys = list(EXPECTED_KEYS["dpo"]) + ["logits/chosen", "logits/rejected", "entropy", MEMORY_KEY]
    for i, key in enumerate(keys):
        grid.add_points(key, steps, np.cumsum(rng.normal(size=points)) * 0.01 + i)
    grid.redraw_now()
    if baseline:
        for curve in grid._curves.values():
            for item in (curve.raw, curve.smooth):
                item.setDownsampling(auto=True, method="peak")
                item.setClipToView(True)
                item.setDynamicRangeLimit(1e6)  # pyqtgraph's default
            curve.redraw = types.MethodType(_pyqtgraph_redraw, curve)
            curve.dirty = True
    _spin(app, 0.3)  # shown and painted once: a repaint below really paints
    return grid, keys


def _draw(grid) -> tuple[float, float]:
    """Push every changed curve and paint every plot now; (wall ms, GUI-thread CPU ms)."""
    wall, cpu = time.perf_counter(), time.thread_time()
    grid.redraw_now()
    for pid in grid.plot_ids():
        grid.plot_widget(pid).viewport().repaint()
    return (time.perf_counter() - wall) * 1000, (time.thread_time() - cpu) * 1000


def bench_redraw(app, points: int = 100_000, frames: int = 9) -> dict:
    """Both ways of drawing side by side, frames interleaved (ABAB...) so that the load
    other processes put on the machine falls on both alike."""
    from app.theme import apply_theme

    apply_theme(app)
    sides = {"pyqtgraph_peak": _redraw_grid(app, points, baseline=True),
             "own_minmax": _redraw_grid(app, points, baseline=False)}
    result = {"redraw_points_per_curve": points}
    measured = {name: {"all": [], "step": [], "smooth": []} for name in sides}
    for frame in range(frames):
        for name, (grid, keys) in sides.items():
            for curve in grid._curves.values():
                curve.dirty = True
            measured[name]["all"].append(_draw(grid))
            for key in keys:
                grid.add_point(key, points + frame + 1, 0.5)
            measured[name]["step"].append(_draw(grid))
    for name, (grid, _keys) in sides.items():
        start = time.perf_counter()
        grid.set_smoothing(0.9)
        switch = (time.perf_counter() - start) * 1000 + _draw(grid)[0]
        for frame in range(frames):  # steady frames with the smoothed curves drawn too
            for key in _keys:
                grid.add_point(key, points + frames + frame + 1, 0.5)
            measured[name]["smooth"].append(_draw(grid))
        result[f"redraw_{name}_curves"] = sum(len(p.curves) for p in grid._plots.values())
        result[f"redraw_{name}_switch_smoothing_on_ms"] = switch
    for name, runs in measured.items():
        for what, label in (("all", "all_curves"), ("step", "frame_after_one_point"),
                            ("smooth", "frame_smoothed")):
            result[f"redraw_{name}_{label}_ms"] = statistics.median(w for w, _c in runs[what])
            result[f"redraw_{name}_{label}_cpu_ms"] = statistics.median(c for _w, c in runs[what])
    for grid, _keys in sides.values():
        _dispose(app, grid)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=120, help="steps of the real DPO run (tiny model)")
    parser.add_argument("--skip-real-run", action="store_true", help="skip the run through the worker")
    parser.add_argument("--worker-niceness", type=int, nargs="*", metavar="N",
                        help="run the real run once per value, the worker N levels below the window "
                             "(0: the window's own priority); default: once, as the studio does")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="alignstudio-bench-gui-"))
    os.environ["ALIGNSTUDIO_HOME"] = str(home)
    figures: dict = {}

    def record(new: dict) -> None:
        # Printed as each part ends: a run that is cut short still leaves its figures.
        figures.update(new)
        for key, value in new.items():
            shown = f"{value:.3f}" if isinstance(value, float) else str(value)
            print(f"{key:<52}{shown}", flush=True)

    print(f"{'figure':<52}value  (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)", flush=True)
    record(bench_launch(home))
    from app.studio_app import create_application

    app = create_application()
    record(bench_redraw(app))
    record(bench_event_flood(app))
    if not args.skip_real_run:
        if args.worker_niceness:
            for n in args.worker_niceness:
                record(bench_real_run(app, home, args.steps, niceness=n, prefix=f"real_run_nice{n}"))
        else:
            record(bench_real_run(app, home, args.steps))

    stall_keys = [k for k in figures if k.endswith("longest_stall_ms")]
    worst = max(figures[k] for k in stall_keys)
    busy = max(figures[k] for k in figures if k.endswith("longest_gui_busy_ms"))
    print(f"\nlongest event-loop stall: {worst:.1f} ms wall (goal < 50 ms) -> {'OK' if worst < 50 else 'OVER'}; "
          f"longest stretch of GUI-thread work: {busy:.1f} ms CPU; load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} cores")
    # Per part, wall and CPU side by side: on a shared machine the wall time of a stall is
    # mostly other processes' turn on the cores; the CPU time is the window's own work.
    for key in stall_keys:
        prefix = key[: -len("_longest_stall_ms")]
        print(f"  {prefix}: longest stall {figures[key]:.1f} ms wall, {figures[prefix + '_longest_stall_gui_cpu_ms']:.1f} "
              f"ms of it GUI-thread CPU; largest GUI-thread turn {figures[prefix + '_longest_gui_busy_ms']:.1f} ms CPU; "
              f"99th percentile gap {figures[prefix + '_p99_gap_ms']:.1f} ms")
    for name, label in (("own_minmax", "the grid's min/max decimation"),
                        ("pyqtgraph_peak", "pyqtgraph's peak downsampling (before)")):
        wall = figures[f"redraw_{name}_frame_after_one_point_ms"]
        cpu = figures[f"redraw_{name}_frame_after_one_point_cpu_ms"]
        print(f"redraw and paint of {figures[f'redraw_{name}_curves']} curves x {figures['redraw_points_per_curve']:,} "
              f"points, {label}: {wall:.1f} ms wall, {cpu:.1f} ms GUI-thread CPU (goal < 16 ms)")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2, default=str))
    shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
