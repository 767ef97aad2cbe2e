"""Reusable Qt views (plots, drop zone, preview table, config form, log console).

Importing any of them first protects the interpreter from PySide6 6.12's None
reference leak on Python 3.11 (see ``pyside_none_guard``).
"""

from widgets.pyside_none_guard import protect_none_refcount

protect_none_refcount()
