"""Create the Qt application and open the studio window."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from PySide6.QtCore import QCoreApplication
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QApplication

from app.qt_import_hook import use_cheap_source_check

use_cheap_source_check()  # before the window's few hundred imports

import widgets  # noqa: E402,F401  (guards Python 3.11 against PySide6 6.12's None leak)
from app.theme import apply_theme  # noqa: E402

# bench/bench_startup.py sets this to the time it ran the README's command; the
# window then prints when it was first painted, when the data report was first
# painted (lengths estimated while a large tokenizer loads) and when the measured
# one was, and quits. It changes nothing else.
STARTUP_PROBE = "ALIGNSTUDIO_STARTUP_PROBE"
# Libraries the window's start must not import (each costs a second or more): the
# probe's last line names those that were imported anyway.
HEAVY_LIBRARIES = ("datasets", "pandas", "torch", "transformers", "trl")


def app_icon_path() -> Path:
    """The studio's icon."""
    from backend.core.paths import resource_path

    return resource_path("icons", "alignstudio.svg")


def create_application(argv: list[str] | None = None) -> QApplication:
    app = QApplication.instance()
    if app is None:
        QCoreApplication.setOrganizationName("AlignStudio")
        QCoreApplication.setApplicationName("AlignStudio")
        app = QApplication([sys.argv[0]] + list(argv or []))
        app.setWindowIcon(QIcon(str(app_icon_path())))
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
    from backend.data.token_counts import count_in_helper_processes

    # A large tokenizer's parse holds the GIL for a second or more: the window's reports
    # have it parsed in a helper process instead of stopping the window meanwhile.
    count_in_helper_processes()
    app = create_application()
    window = open_window(data=data, model=model, method=method, config=config)
    if os.environ.get(STARTUP_PROBE):
        _probe_startup(app, window, float(os.environ[STARTUP_PROBE]))
    code = app.exec()
    del window
    return code


def _probe_startup(app, window, started: float) -> None:
    """Print "STARTUP <mark> <seconds since the command> <CPU seconds of this process>"
    when the window, then the early report, then the measured report are first painted."""
    from app.first_paint import after_first_paint

    said: set[str] = set()

    def say(what: str) -> None:
        if what not in said:
            said.add(what)
            print(f"STARTUP {what} {time.time() - started:.3f} {time.process_time():.3f}", flush=True)

    def finish() -> None:
        imported = [name for name in HEAVY_LIBRARIES if name in sys.modules]
        print("STARTUP-IMPORTED " + (",".join(imported) or "none"), flush=True)
        app.quit()

    after_first_paint(window, lambda: say("visible"))

    def on_loaded(result) -> None:
        measured = not getattr(result, "measuring", False)
        # An early report not painted before the measured one came was never seen apart from it.
        after_first_paint(window.data_panel.report_view.viewport(),
                          lambda: (say("report"), say("measured"), finish()) if measured else say("report"))

    window.data_panel.loader.sig_loaded.connect(on_loaded)
    window.data_panel.loader.sig_failed.connect(lambda _f: (say("failed"), app.quit()))
