"""How does the dataset layer cope with a multi-gigabyte JSON Lines file?

Writes a JSON Lines file of ``--size-gb`` (default 2) of preference pairs, one
line in 10,000 broken, to a temporary folder (deleted afterwards), then
measures, each in a fresh process so that its peak memory is its own:

1. the window's path: ``app.train.dataset_loader.DatasetLoader`` reading the file on
   the thread pool (streamed into a prepared copy, then measured and
   previewed) while a 5 ms QTimer in the main thread notes the longest stall
   of the event loop;
2. the same file loaded again (the prepared copy is reused);
3. the whole-file read the loader used to do (read the bytes, decode, parse
   every line, build the Arrow table), on the whole file if it is at most
   ``--whole-read-gb`` (default 0.5), else on its first part of that size.

For each: seconds, MB/s, the peak resident memory (RSS) of the process, and
the peak of the private memory the load added (RSS less the pages of mapped
files, which the kernel can drop and read again at any time) as a share of the
file's size.

Run: python bench/bench_large_dataset.py [--size-gb 2] [--whole-read-gb 0.5]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

_WORDS = ("river stone light answer question garden window paper number music table green quick slow "
          "bright quiet early later simple clear warm cold open close north south east west morning "
          "evening letter picture market bridge forest island winter summer").split()
_TEXT = " ".join(_WORDS[(i * 7) % len(_WORDS)] for i in range(6000))


def write_jsonl(path: Path, size: int) -> int:
    """About ``size`` bytes of pairs, ~1 KB a line, every 10,000th line broken; returns the line count."""
    written = line = 0
    with path.open("w", encoding="utf-8") as fh:
        while written < size:
            line += 1
            start = (line * 37) % 4000
            if line % 10_000 == 0:
                text = f'{{"prompt": "a row cut short on line {line}'
            else:
                text = json.dumps({
                    "prompt": f"Question {line}: {_TEXT[start:start + 80 + line % 200]}?",
                    "chosen": _TEXT[start + 5:start + 300 + line % 500],
                    "rejected": _TEXT[start + 9:start + 250 + line % 450],
                })
            fh.write(text + "\n")
            written += len(text) + 1
    return line


def _private_kb() -> int:
    """Resident anonymous memory: what the process itself allocated."""
    with open("/proc/self/status", encoding="ascii") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("RssAnon:"))


class _PrivateMemoryPeak:
    """Samples the private resident memory every 10 ms; ``peak_kb`` is the highest seen."""

    def __init__(self) -> None:
        self.baseline_kb = self.peak_kb = _private_kb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_kb = max(self.peak_kb, _private_kb())

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak_kb = max(self.peak_kb, _private_kb())


def _figures(seconds: float, memory: _PrivateMemoryPeak, **more) -> dict:
    return dict(seconds=seconds, peak_rss_kb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                private_added_kb=memory.peak_kb - memory.baseline_kb, **more)


# ----------------------------------------------------------------- children


def child_window_path(path: str) -> dict:
    """Load as the window does, with the event loop running and probed."""
    from PySide6.QtCore import QCoreApplication, QElapsedTimer, QTimer

    import datasets  # noqa: F401  (part of the baseline: the window imports it at start-up too)
    from app.train.dataset_loader import DatasetLoader

    app = QCoreApplication([])
    loader = DatasetLoader()
    memory = _PrivateMemoryPeak()
    outcome: dict = {}
    clock, stalls = QElapsedTimer(), []
    probe = QTimer()
    probe.setInterval(5)
    probe.timeout.connect(lambda: stalls.append(clock.restart()))

    def done(result) -> None:
        outcome["result"] = result
        app.quit()

    loader.sig_loaded.connect(done)
    loader.sig_failed.connect(lambda failure: (outcome.update(failure=failure.message), app.quit()))
    loader.sig_preview.connect(lambda rows: outcome.setdefault("preview_after", time.perf_counter() - start))
    start = time.perf_counter()
    clock.start()
    probe.start()
    loader.load(path)
    app.exec()
    seconds = time.perf_counter() - start
    memory.stop()
    if "failure" in outcome:
        raise SystemExit(outcome["failure"])
    stalls.sort()
    result = outcome["result"]
    return _figures(
        seconds, memory,
        rows=result.loaded.rows_kept,
        dropped=result.loaded.rows_dropped,
        preview_after=outcome.get("preview_after"),
        stall_max_ms=stalls[-1],
        stall_p99_ms=stalls[int(len(stalls) * 0.99)],
    )


def child_whole_read(path: str) -> dict:
    """Read the whole file into memory, as the loader did before it streamed."""
    import pyarrow as pa

    import datasets  # noqa: F401

    memory = _PrivateMemoryPeak()
    start = time.perf_counter()
    text = Path(path).read_bytes().decode("utf-8")
    rows = []
    for line in text.split("\n"):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError:
                pass
    table = pa.Table.from_pylist(rows)
    seconds = time.perf_counter() - start
    memory.stop()
    return _figures(seconds, memory, rows=table.num_rows)


def _run_child(kind: str, path: Path, cache: Path) -> dict:
    env = dict(os.environ, ALIGNSTUDIO_CACHE=str(cache), PYTHONPATH=str(ROOT), HF_DATASETS_OFFLINE="1")
    out = subprocess.run([sys.executable, __file__, "--child", kind, str(path)], env=env, cwd=ROOT,
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{kind} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------- report


def _row(name: str, size: int, figures: dict) -> str:
    added = figures["private_added_kb"] * 1024
    return (f"{name:<34}{size / 2**30:>7.2f} GB{figures['seconds']:>8.1f} s{size / 2**20 / figures['seconds']:>8.0f}"
            f"{figures['peak_rss_kb'] / 2**20:>9.2f} GB{added / 2**20:>12.0f} MB{added / size:>9.1%}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-gb", type=float, default=2.0)
    parser.add_argument("--whole-read-gb", type=float, default=0.5,
                        help="largest file read whole for the comparison; a bigger one is cut to this size")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, path = args.child
        figures = child_window_path(path) if kind == "window" else child_whole_read(path)
        print(json.dumps(figures))
        return 0

    work = Path(tempfile.mkdtemp(prefix="alignstudio-bench-data-"))
    try:
        big = work / "big.jsonl"
        started = time.perf_counter()
        lines = write_jsonl(big, int(args.size_gb * 2**30))
        size = big.stat().st_size
        print(f"wrote {size / 2**30:.2f} GB, {lines:,} lines, in {time.perf_counter() - started:.0f} s")

        cache = work / "cache"
        first = _run_child("window", big, cache)
        again = _run_child("window", big, cache)
        copy_size = sum(p.stat().st_size for p in (cache / "datasets").glob("*.arrow"))
        whole_size = min(size, int(args.whole_read_gb * 2**30))
        part = big
        if whole_size < size:
            part = work / "part.jsonl"
            with big.open("rb") as src, part.open("wb") as dst:
                dst.write(src.read(whole_size))
                dst.write(src.readline())  # end on a whole line
            whole_size = part.stat().st_size
        whole = _run_child("whole", part, cache)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    print(f"\n{'':<34}{'file':>10}{'time':>10}{'MB/s':>8}{'peak RSS':>12}{'private added':>15}{'of file':>9}")
    print(_row("window path, first load", size, first))
    print(_row("window path, prepared copy reused", size, again))
    print(_row("whole-file read (old way)", whole_size, whole))
    print(f"\nrows kept {first['rows']:,}, dropped {first['dropped']:,}; prepared copy "
          f"{copy_size / 2**30:.2f} GB on disk")
    if first["preview_after"] is not None:
        print(f"first rows shown after {first['preview_after']:.2f} s")
    print(f"event loop during the first load: longest stall {first['stall_max_ms']} ms, "
          f"99th percentile {first['stall_p99_ms']} ms (5 ms timer)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
