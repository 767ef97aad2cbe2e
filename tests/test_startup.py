"""Start-up: the README's command finds what the window needs, and the demo report comes early."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "installer"))

import qt_system_libs  # noqa: E402


@pytest.mark.parametrize("soname, package", [
    ("libxcb-cursor.so.0", "libxcb-cursor0"),
    ("libxcb-icccm.so.4", "libxcb-icccm4"),
    ("libxcb-keysyms.so.1", "libxcb-keysyms1"),
    ("libxcb-render-util.so.0", "libxcb-render-util0"),
    ("libxkbcommon-x11.so.0", "libxkbcommon-x11-0"),
    ("libEGL.so.1", "libegl1"),
    ("libdbus-1.so.3", "libdbus-1-3"),
    ("libfontconfig.so.1.12.0", "libfontconfig1"),
    ("libglib-2.0.so.0", "libglib2.0-0"),
    ("libX11-xcb.so.1", "libx11-xcb1"),
])
def test_sonames_become_debian_package_names(soname, package):
    assert qt_system_libs.package_for_soname(soname) == package


@pytest.mark.skipif(not (shutil.which("gcc") and shutil.which("ldd")), reason="needs gcc and ldd to build a plugin")
def test_every_missing_library_is_found_in_one_pass(tmp_path, monkeypatch):
    """A 'plugin' linked against two libraries that are then removed: ldd names both,
    including the one only reachable through the other, and each becomes a package."""
    (tmp_path / "a.c").write_text("int from_a(void) { return 1; }\n")
    (tmp_path / "b.c").write_text("int from_a(void);\nint from_b(void) { return from_a(); }\n")
    (tmp_path / "p.c").write_text("int from_b(void);\nint plugin(void) { return from_b(); }\n")

    def gcc(*args):
        subprocess.run(["gcc", "-shared", "-fPIC", *args], cwd=tmp_path, check=True, capture_output=True)

    gcc("-o", "libxcb-fakeicccm.so.4", "a.c", "-Wl,-soname,libxcb-fakeicccm.so.4")
    gcc("-o", "libxcb-fakekeys.so.1", "b.c", "-Wl,-soname,libxcb-fakekeys.so.1", "-L.", "-l:libxcb-fakeicccm.so.4")
    gcc("-o", "libqxcb.so", "p.c", "-L.", "-l:libxcb-fakekeys.so.1", "-Wl,-rpath-link,.")
    (tmp_path / "libxcb-fakeicccm.so.4").unlink()
    missing = qt_system_libs.missing_sonames(tmp_path / "libqxcb.so")
    assert missing == ["libxcb-fakekeys.so.1"]  # its own dependency cannot even be followed

    # Keep the first library but drop its dependency: now the deeper one is named.
    gcc("-o", "libxcb-fakeicccm.so.4", "a.c", "-Wl,-soname,libxcb-fakeicccm.so.4")
    gcc("-o", "libxcb-fakekeys.so.1", "b.c", "-Wl,-soname,libxcb-fakekeys.so.1", "-L.", "-l:libxcb-fakeicccm.so.4")
    (tmp_path / "libxcb-fakeicccm.so.4").unlink()
    monkeypatch.setenv("LD_LIBRARY_PATH", str(tmp_path))
    missing = qt_system_libs.missing_sonames(tmp_path / "libqxcb.so")
    assert missing == ["libxcb-fakeicccm.so.4"]
    monkeypatch.setattr(qt_system_libs, "plugin_path", lambda platform: tmp_path / "libqxcb.so")
    assert qt_system_libs.missing_packages("xcb") == ["libxcb-fakeicccm4"]


def test_the_real_offscreen_plugin_is_checked(tmp_path):
    """The script runs on the installed PySide6 and prints package names (none, here, since
    the tests themselves run offscreen)."""
    out = subprocess.run([sys.executable, str(ROOT / "installer" / "qt_system_libs.py"), "offscreen"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
    assert qt_system_libs.plugin_path("offscreen") is not None


@pytest.mark.skipif(not (ROOT / ".venv" / "bin" / "python").exists(), reason="the README's install is not here")
def test_readme_command_without_a_display_says_what_to_do(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    env["ALIGNSTUDIO_HOME"] = str(tmp_path)
    stamp = ROOT / ".venv" / ".alignstudio-installed"
    if not stamp.exists():
        pytest.skip("installed by a command that does not write the stamp")
    out = subprocess.run(["bash", str(ROOT / "installer" / "run_studio.sh")], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "needs a graphical display" in out.stderr and "xvfb-run" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.gui
def test_a_slow_tokenizer_does_not_hold_the_report_back(qtbot, tiny_model_dir, easy_preferences, monkeypatch):
    """With a tokenizer that is slow to parse, the report with estimated lengths shows first
    and the measured one replaces it; the loader stays busy until then."""
    from app.train.dataset_loader import DatasetLoader
    from backend.models import tokenizer_cache

    monkeypatch.setattr(tokenizer_cache, "SLOW_TOKENIZER_BYTES", 1)
    monkeypatch.setattr(tokenizer_cache, "_cache", {})
    loader = DatasetLoader()
    results, busy_at_result = [], []
    loader.sig_loaded.connect(lambda r: (results.append(r), busy_at_result.append(loader.is_busy())))
    loader.load(str(easy_preferences), tokenizer_path=str(tiny_model_dir))
    qtbot.waitUntil(lambda: len(results) == 2, timeout=30_000)
    early, measured = results
    assert early.measuring and early.report.length_unit != "tokens"
    assert not measured.measuring and measured.report.length_unit == "tokens"
    assert busy_at_result == [True, False]
    assert early.loaded is measured.loaded  # the rows were read once

    # Parsed once per process: the next load of the same tokenizer reports at once, measured.
    assert tokenizer_cache.is_loaded(tiny_model_dir)
    results.clear()
    loader.load(str(easy_preferences), tokenizer_path=str(tiny_model_dir))
    qtbot.waitUntil(lambda: len(results) == 1 and not loader.is_busy(), timeout=30_000)
    assert not results[0].measuring and results[0].report.length_unit == "tokens"
    loader.wait()


@pytest.mark.gui
def test_the_window_reads_a_file_once_while_its_lengths_are_measured(qtbot, studio_home, tiny_model_dir,
                                                                      easy_preferences, monkeypatch):
    """The early report and the measured one are the same rows: the window takes them in
    once (recent files, Compare's prompts) and only the report changes."""
    from backend.models import tokenizer_cache
    from tests.gui_helpers import drop_paths, make_studio_window

    monkeypatch.setattr(tokenizer_cache, "SLOW_TOKENIZER_BYTES", 1)
    monkeypatch.setattr(tokenizer_cache, "_cache", {})
    window = make_studio_window(qtbot)
    window.model_panel.set_kind("local")
    window.model_panel.text.setText(str(tiny_model_dir))
    qtbot.waitUntil(lambda: window.data_panel._tokenizer_provider() == str(tiny_model_dir), timeout=10_000)
    changed, shown = [], []
    window.data_panel.sig_dataset_changed.connect(changed.append)
    window.data_panel.loader.sig_loaded.connect(shown.append)
    assert drop_paths(window, [easy_preferences])
    qtbot.waitUntil(lambda: len(shown) == 2 and not window.data_panel.loader.is_busy(), timeout=30_000)
    assert [r.measuring for r in shown] == [True, False]
    assert len(changed) == 1 and changed[0] is shown[0]
    current = window.data_panel.current()
    assert current is shown[1] and current.report.length_unit == "tokens"
    assert "tokens" in window.data_panel.report_view.toPlainText()


def test_the_cheap_pyside_check_answers_as_pysides_own(tmp_path):
    """PySide6 asks of every module imported after it whether its source mentions PySide6; the
    studio answers by reading the file instead of tokenising it. Same answer for every module
    the window imports (checked against PySide6's own function, in a fresh interpreter)."""
    code = (
        "import sys\n"
        "import PySide6.QtCore\n"
        "feature = sys.modules['shibokensupport.feature']\n"
        "own = feature._mod_uses_pyside\n"
        "import app.studio_app  # installs the cheap check\n"
        "from app.qt_import_hook import mentions_pyside\n"
        "assert feature._mod_uses_pyside is mentions_pyside\n"
        "import app.main_window, pyqtgraph, backend.data.report\n"
        "mods = [m for m in list(sys.modules.values()) if m is not None]\n"
        "differ = [m.__name__ for m in mods if own(m) != mentions_pyside(m)]\n"
        "assert not differ, differ\n"
        "assert mentions_pyside(app.main_window) and not mentions_pyside(backend.data.report)\n"
        "assert feature.pyside_feature_dict.get('backend.data.report') == -1  # asked, and answered\n"
        "print(len(mods))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, QT_QPA_PLATFORM="offscreen"))
    assert out.returncode == 0, out.stderr[-2000:]
    assert int(out.stdout.split()[-1]) > 300  # a real window's worth of modules was compared


@pytest.mark.gui
def test_the_window_starts_on_the_demo_without_heavy_imports(tmp_path):
    """The README's window on the demo data, with the start-up probe the bench uses: the window,
    then the measured report are painted, and neither datasets, pandas nor torch was imported."""
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", ALIGNSTUDIO_HOME=str(tmp_path),
               ALIGNSTUDIO_STARTUP_PROBE=repr(time.time()))
    out = subprocess.run([sys.executable, "-c", "import sys; from app.launcher import main; sys.exit(main(['--demo']))"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [line.split() for line in out.stdout.splitlines() if line.startswith("STARTUP")]
    marks = {parts[1]: float(parts[2]) for parts in lines if parts[0] == "STARTUP" and len(parts) == 4}
    assert {"visible", "report", "measured"} <= set(marks), out.stdout
    assert marks["visible"] <= marks["report"] <= marks["measured"], marks
    assert ["STARTUP-IMPORTED", "none"] in lines, out.stdout


@pytest.mark.gui
def test_start_up_work_waits_for_the_first_paint_and_the_plots_for_the_first_report(qtbot, studio_home,
                                                                                   easy_preferences, monkeypatch):
    """A zero timer after showEvent fires before the window system's expose, so the start-up work
    would delay the first paint; and pyqtgraph's import (~0.5 s on the GUI thread) would hold
    back a report that arrives while it runs."""
    from PySide6.QtCore import QEvent, QObject

    import app.train.dataset_loader as dataset_loader
    from app.main_window import StudioWindow

    order = []
    start_work = StudioWindow._start_background_work
    monkeypatch.setattr(StudioWindow, "_start_background_work",
                        lambda self: (order.append("start-up work"), start_work(self)))
    load = dataset_loader.load_and_report
    monkeypatch.setattr(dataset_loader, "load_and_report",  # a file slower to read than the plots' delay
                        lambda *args, **kwargs: (time.sleep(0.6), load(*args, **kwargs))[1])

    class FirstPaint(QObject):
        def eventFilter(self, _watched, event):  # noqa: N802
            if event.type() == QEvent.Type.Paint and "painted" not in order:
                order.append("painted")
            return False

    window = StudioWindow(probe_device=False, data=str(easy_preferences))
    qtbot.addWidget(window)
    paints = FirstPaint(window)
    window.installEventFilter(paints)
    plots_at_report = []
    window.data_panel.loader.sig_loaded.connect(lambda _r: plots_at_report.append(window.live._grid is not None))
    window.show()
    qtbot.waitUntil(lambda: bool(plots_at_report), timeout=30_000)
    assert order[:2] == ["painted", "start-up work"]
    assert plots_at_report == [False]
    qtbot.waitUntil(lambda: window.live._grid is not None, timeout=10_000)  # built once the report is in
    window.data_panel.loader.wait()
