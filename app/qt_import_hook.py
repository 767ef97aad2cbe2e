"""A cheaper answer to the question PySide6 asks of every module imported after it.

PySide6 (6.4 on) records for each newly imported module whether it uses PySide6,
for its ``__feature__`` switches (snake_case, true_property), by reading the
module's source through ``inspect.getsource``: tokenising every file of numpy,
pyarrow, pyqtgraph and the studio itself, several hundred modules, on whichever
thread imports them. Measured: about a third of a second of the window's start.
The same answer ("PySide6" appears in the source) comes from one plain read of
the file. Where PySide6 is laid out differently, nothing is changed.
"""

from __future__ import annotations

import sys


def mentions_pyside(module) -> bool:
    """What ``shibokensupport.feature._mod_uses_pyside`` answers: does the module's
    source text contain "PySide6"? No source file (a built-in or compiled module,
    one loaded from a zip) means no."""
    path = getattr(module, "__file__", None)
    if not isinstance(path, str) or not path.endswith(".py"):
        return False
    try:
        with open(path, "rb") as source:
            return b"PySide6" in source.read()
    except OSError:
        return False


def use_cheap_source_check() -> bool:
    """Install ``mentions_pyside`` in place of PySide6's check; True if it was installed."""
    feature = sys.modules.get("shibokensupport.feature")
    if feature is None or not callable(getattr(feature, "_mod_uses_pyside", None)):
        return False
    feature._mod_uses_pyside = mentions_pyside
    return True
