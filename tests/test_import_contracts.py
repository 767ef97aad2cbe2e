"""The layering written down as import-linter contracts (pyproject.toml, [tool.importlinter]),
checked with the suite: the engine imports no Qt, reusable widgets import neither the window
nor the engine, and the window reaches training and generation only through their clients."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINT = Path(sys.executable).with_name("lint-imports")


def _lint(config: Path, cwd: Path, pythonpath: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(pythonpath), NO_COLOR="1")
    return subprocess.run([str(LINT), "--config", str(config), "--no-cache"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_the_layering_contracts_are_kept():
    result = _lint(ROOT / "pyproject.toml", ROOT, ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    # Every contract written in pyproject.toml was checked and kept.
    import tomllib

    written = len(tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["tool"]["importlinter"]["contracts"])
    assert "0 broken" in result.stdout and f"{written} kept" in result.stdout, result.stdout[-1500:]


def test_a_broken_contract_fails_the_check(tmp_path):
    """The same kind of contract on a small tree that breaks it: the check is not a formality."""
    engine = tmp_path / "engine"
    engine.mkdir()
    (engine / "__init__.py").write_text("")
    (engine / "loader.py").write_text("def show():\n    from PySide6 import QtWidgets\n    return QtWidgets\n")
    config = tmp_path / "contracts.toml"
    config.write_text(
        '[tool.importlinter]\nroot_packages = ["engine"]\ninclude_external_packages = true\n\n'
        '[[tool.importlinter.contracts]]\nname = "No Qt in the engine"\ntype = "forbidden"\n'
        'source_modules = ["engine"]\nforbidden_modules = ["PySide6"]\n')
    result = _lint(config, tmp_path, tmp_path)
    assert result.returncode != 0 and "engine.loader" in result.stdout, result.stdout[-1500:]
