"""From the README's command to a visible window and the demo data's report.

Runs ``bash installer/run_studio.sh`` (already installed: the script only
checks and starts) the way a user does, with ``ALIGNSTUDIO_STARTUP_PROBE`` set
so that the window prints when it became visible, when the data report first
showed (lengths estimated while a large tokenizer loads) and when the measured
report replaced it, then quits. Goals (issue 9): visible within 1 s, report
within 2 s on an installed machine.

Side by side in the same run, what the script's "is it installed?" check used
to cost (importing torch and trl) against what it costs now (finding the
modules without importing them).

Run: python bench/bench_startup.py [--repeats 5]   (offscreen unless DISPLAY is set and --screen is given)
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = ROOT / ".venv" / "bin" / "python"


def one_start(home: Path, screen: bool) -> dict[str, float]:
    env = dict(os.environ, ALIGNSTUDIO_HOME=str(home), ALIGNSTUDIO_STARTUP_PROBE=repr(time.time()))
    if not screen:
        env["QT_QPA_PLATFORM"] = "offscreen"
    out = subprocess.run(["bash", str(ROOT / "installer" / "run_studio.sh")], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    marks: dict[str, float] = {}
    for line in out.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "STARTUP":
            marks.setdefault(parts[1], float(parts[2]))
    if "visible" not in marks:
        raise SystemExit(f"the window did not report its start:\n{out.stdout}\n{out.stderr}")
    marks.setdefault("report", marks.get("measured", float("nan")))
    return marks


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, capture_output=True, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--screen", action="store_true", help="use the real display instead of offscreen")
    args = parser.parse_args()
    if not PYTHON.exists():
        sys.exit("Install first: bash installer/run_studio.sh")
    with tempfile.TemporaryDirectory() as tmp:
        one_start(Path(tmp), args.screen)  # warm the page cache, as on any second start
        runs = [one_start(Path(tmp), args.screen) for _ in range(args.repeats)]
    old_check, new_check = [], []
    for _ in range(args.repeats):
        old_check.append(timed([str(PYTHON), "-c", "import backend, PySide6, torch, trl"]))
        new_check.append(timed([str(PYTHON), "-c", "import importlib.util as u; "
                                "[u.find_spec(m) for m in ('backend','PySide6','torch','trl')]"]))
    med = {key: statistics.median(r[key] for r in runs) for key in ("visible", "report", "measured")}
    print(f"README command -> window visible:   median {med['visible']:.2f} s (goal < 1 s)")
    print(f"README command -> data report:      median {med['report']:.2f} s (goal < 2 s)")
    print(f"README command -> measured lengths: median {med['measured']:.2f} s")
    ratio = statistics.median(o / n for o, n in zip(old_check, new_check))
    print(f"install check: importing torch+trl {statistics.median(old_check):.2f} s, "
          f"finding them {statistics.median(new_check):.2f} s (x{ratio:.0f} faster, median of paired runs)")
    print(f"load average during the run: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
