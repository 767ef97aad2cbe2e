"""Keep Python 3.11 alive under PySide6 6.12, which drops references to None and True.

PySide6 6.12's abi3 bindings return ``None`` from void methods, and ``True``
from ``Signal.emit``, without taking a reference, as is correct only where
these objects are immortal (Python 3.12+). On 3.11 every ``widget.update()``,
``setText()``, paint callback or signal emission lowers a reference count by
one, and a window that redraws plots 20 times a second aborts with "Fatal
Python error: none_dealloc" (or bool_dealloc) within a minute.

The guard measures the leak with harmless calls and, only if it is there,
gives None, True and False reference counts so large that they can never
reach zero, which is what Python 3.12 does for every interpreter.
"""

from __future__ import annotations

import ctypes
import sys

_HEADROOM = 1 << 40  # ~10^12 leaked references: decades of redraws
_SINGLETONS = (None, True, False)
_applied = False


def leaks_singletons() -> bool:
    from PySide6.QtCore import QObject, Signal

    class _Probe(QObject):
        probed = Signal()

    probe = _Probe()
    before = sys.getrefcount(None), sys.getrefcount(True)
    for _ in range(16):
        probe.setObjectName("probe")
        probe.probed.emit()
    after = sys.getrefcount(None), sys.getrefcount(True)
    return after[0] < before[0] - 8 or after[1] < before[1] - 8


def protect_none_refcount() -> bool:
    """Apply the guard if this interpreter needs it; returns whether it is in place."""
    global _applied
    if _applied:
        return True
    if sys.version_info >= (3, 12) or sys.implementation.name != "cpython":
        return False
    if not leaks_singletons():
        return False
    for obj in _SINGLETONS:
        # ob_refcnt is the first field of every CPython object header.
        ctypes.c_ssize_t.from_address(id(obj)).value += _HEADROOM
    _applied = True
    return True
