"""Create the Qt application and open the studio window."""

from __future__ import annotations

import sys

from PySide6.QtCore import QCoreApplication
from PySide6.QtWidgets import QApplication

import widgets  # noqa: F401  (first: guards Python 3.11 against PySide6 6.12's None leak)
from app.theme import apply_theme


def create_application(argv: list[str] | None = None) -> QApplication:
    app = QApplication.instance()
    if app is None:
        QCoreApplication.setOrganizationName("AlignStudio")
        QCoreApplication.setApplicationName("AlignStudio")
        app = QApplication([sys.argv[0]] + list(argv or []))
    return app


def open_window(data: str | None = None, model: str | None = None, method: str | None = None, **kwargs):
    """Build, style and show the window."""
    app = create_application()
    from app.main_window import StudioWindow

    window = StudioWindow(data=data, model=model, method=method, **kwargs)
    # Styling after construction polishes each widget once; with the sheet already
    # set, every re-parenting while the window is assembled polishes the subtree
    # again (measured: 0.49 s -> 0.18 s to build and style the window).
    apply_theme(app)
    window.show()
    return window


def run_studio(data: str | None = None, model: str | None = None, method: str | None = None,
               config: str | None = None) -> int:
    app = create_application()
    window = open_window(data=data, model=model, method=method, config=config)
    code = app.exec()
    del window
    return code
