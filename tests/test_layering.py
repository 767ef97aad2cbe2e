"""backend/ is the engine: it must import no Qt, and the GUI-facing modules no torch."""

import ast
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


def test_gui_facing_backend_modules_import_without_torch_or_qt():
    code = (
        "import sys\n"
        "import backend.run_config, backend.events, backend.training_run, backend.run_folder, backend.cli\n"
        "import backend.model_source, backend.paths, backend.memory_estimate, backend.device_info\n"
        "import backend.dataset_loading, backend.dataset_report, backend.dataset_formats\n"
        "import backend.generation_client, backend.generation_protocol, backend.compare_scoring\n"
        "import backend.compare_export, backend.prompt_rendering, backend.adapter_loading, backend.preflight\n"
        "import backend.fault_injection\n"
        "bad = [m for m in ('torch', 'transformers', 'trl', 'PySide6') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
