"""backend/ is the engine: it must import no Qt; the GUI process (app/, widgets/, the method registry) no torch."""

import ast
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QT_MODULES = {"PySide6", "PyQt5", "PyQt6", "pyqtgraph", "shiboken6", "qtpy"}


def test_backend_source_never_imports_qt():
    offenders = []
    for path in (ROOT / "backend").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in QT_MODULES]
    assert offenders == []


def _loaded_after(imports: str) -> list[str]:
    code = (f"import sys\n{imports}\n"
            "print(','.join(m for m in ('torch', 'transformers', 'trl', 'PySide6') if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    return [m for m in done.stdout.strip().split(",") if m]


def test_every_registered_method_module_imports_without_torch_transformers_trl_or_qt():
    from backend.methods import METHOD_MODULES

    imports = "import backend.methods\n" + "".join(f"import {m}\n" for m in METHOD_MODULES)
    imports += "backend.methods.all_methods()"
    assert _loaded_after(imports) == []


def test_every_gui_module_imports_without_torch_transformers_or_trl():
    """The window learns every method (settings, plots, data needs) from the registry alone."""
    names = sorted(".".join(p.relative_to(ROOT).with_suffix("").parts) for folder in ("app", "widgets")
                   for p in (ROOT / folder).rglob("*.py") if p.name != "__main__.py")
    assert "app.train.method_settings_panel" in names
    assert _loaded_after("\n".join(f"import {n}" for n in names)) == ["PySide6"]
