"""Min/max decimation of a growing series to about one bucket per pixel, kept incrementally.

A curve of 100,000 points drawn into 300 pixels needs at most ~600 of them: for
every pixel column, the lowest and the highest value in it. pyqtgraph's own
"peak" downsampling does that, but over the whole visible array at every
``setData``, and it drops the last (len % block) points, i.e. the newest steps
of a live run. Here the per-block minima and maxima are kept in a pyramid
(blocks of 2, 4, 8, ... points) that grows with the series, so a frame costs
the work for the points added since the last one plus O(pixels), and the last
point is always drawn.
"""

from __future__ import annotations

import numpy as np


class _Level:
    """Min and max of each complete block of ``block`` points, in buffers that double."""

    def __init__(self, block: int):
        self.block = block
        self.count = 0
        self.mins = np.empty(64)
        self.maxs = np.empty(64)

    def reserve(self, count: int) -> None:
        if count <= len(self.mins):
            return
        capacity = len(self.mins)
        while capacity < count:
            capacity *= 2
        for name in ("mins", "maxs"):
            old = getattr(self, name)
            new = np.empty(capacity)
            new[: self.count] = old[: self.count]
            setattr(self, name, new)


def _pairwise(fn, a: np.ndarray) -> np.ndarray:
    return fn(a[0::2], a[1::2])


class PeakPyramid:
    """Block minima and maxima of one value buffer, at every power-of-two block size.

    NaN (a gap in the curve) is ignored inside a block; a block of NaN only is NaN,
    and stays a gap.
    """

    def __init__(self):
        self._levels: list[_Level] = []

    def invalidate(self, from_index: int = 0) -> None:
        """Values from ``from_index`` on changed (a resumed run rewrote them, the smoothing changed)."""
        for level in self._levels:
            level.count = min(level.count, from_index // level.block)

    def level(self, values: np.ndarray, n: int, k: int) -> _Level:
        """Level ``k`` (blocks of 2**(k+1) points) brought up to the first ``n`` values."""
        while len(self._levels) <= k:
            self._levels.append(_Level(2 ** (len(self._levels) + 1)))
        for i in range(k + 1):
            level = self._levels[i]
            complete = n // level.block
            if complete <= level.count:
                continue
            start = level.count
            if i == 0:
                chunk = values[2 * start : 2 * complete]
                lo = hi = chunk
            else:
                below = self._levels[i - 1]
                lo = below.mins[2 * start : 2 * complete]
                hi = below.maxs[2 * start : 2 * complete]
            level.reserve(complete)
            level.mins[start:complete] = _pairwise(np.fmin, lo)
            level.maxs[start:complete] = _pairwise(np.fmax, hi)
            level.count = complete
        return self._levels[k]


def decimate(x: np.ndarray, values: np.ndarray, n: int, pyramid: PeakPyramid, lo: int, hi: int,
             buckets: int) -> tuple[np.ndarray, np.ndarray]:
    """The points of ``x[lo:hi]``/``values[lo:hi]`` to draw into about ``buckets`` pixel columns.

    Returned as is when they are few; otherwise one (max, min) pair per block of a
    power-of-two size that gives at most ``buckets`` blocks, placed at the block's
    middle step. Blocks are aligned to index 0 (so their minima and maxima can be
    kept), which may widen the range by up to a block on each side. The last point
    of the range is always drawn as itself, so a live curve ends at its newest value.
    """
    lo, hi = max(0, lo), min(n, hi)
    count = hi - lo
    if count <= 2 * max(buckets, 1):
        return x[lo:hi], values[lo:hi]
    k = 0
    while count / 2 ** (k + 1) > buckets:
        k += 1
    level = pyramid.level(values, n, k)
    block = level.block
    first, last = lo // block, min(hi // block, level.count)
    blocks = last - first
    tail = hi - last * block  # points after the last complete block
    size = 2 * blocks + (2 if tail else 0) + 1
    out_x = np.empty(size)
    out_y = np.empty(size)
    mids = x[first * block + block // 2 : last * block : block]
    out_x[0 : 2 * blocks : 2] = mids
    out_x[1 : 2 * blocks : 2] = mids
    out_y[0 : 2 * blocks : 2] = level.maxs[first:last]
    out_y[1 : 2 * blocks : 2] = level.mins[first:last]
    if tail:
        rest = values[last * block : hi]
        out_x[-3:-1] = x[last * block + tail // 2]
        out_y[-3:-1] = (np.fmax.reduce(rest), np.fmin.reduce(rest))
    out_x[-1], out_y[-1] = x[hi - 1], values[hi - 1]
    return out_x, out_y


__all__ = ["PeakPyramid", "decimate"]
