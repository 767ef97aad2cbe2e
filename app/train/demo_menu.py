"""The shipped demos (``resources/demo/demo_*.yaml``), one click each in the File menu.

A demo is a config file beside its data; its first comment line is its title and its
``method`` names the method through the registry, so a new demo shows up here
without a change to the window. A demo whose method samples and grades its own
completions (``MethodSpec.samples``) is listed first and marked as the RL demo.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from backend.methods import find_method


@dataclass(frozen=True)
class Demo:
    path: Path
    title: str
    method_label: str
    samples: bool  # the method samples completions and grades them (reinforcement learning)

    @property
    def menu_text(self) -> str:
        return ("RL demo: " if self.samples else "") + self.title


def _title_and_method(path: Path) -> tuple[str, str]:
    """The first sentence of the file's leading comment, and its ``method``."""
    comment, method, leading = [], "", True
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if leading and stripped.startswith("#"):
            comment.append(stripped.lstrip("#").strip())
            continue
        leading = False
        if stripped.startswith("method:"):
            method = stripped.split(":", 1)[1].split("#", 1)[0].strip().strip("'\"")
            break
    sentence = " ".join(comment).split(". ")[0].strip().rstrip(".")
    # "The demo run: X" / "The RL demo (...): X" say X.
    named = re.match(r"^The [^:(]*?demo(?: run)?(?: \([^)]*\))?:\s*(.+)$", sentence)
    return (named.group(1) if named else sentence), method


def list_demos(folder: Path | None = None) -> list[Demo]:
    if folder is None:
        from backend.cli.main import DEMO_DIR

        folder = DEMO_DIR
    demos = []
    for path in sorted(Path(folder).glob("demo_*.yaml")):
        try:
            title, method = _title_and_method(path)
        except (OSError, UnicodeDecodeError):
            continue
        spec = find_method(method)
        if spec is None:
            continue  # a demo of a method this build does not have
        title = title or f"{spec.title} demo"
        demos.append(Demo(path, title[:1].upper() + title[1:], spec.label, spec.samples))
    return sorted(demos, key=lambda d: (not d.samples, d.title))


def fill_demo_menu(menu, open_config) -> list[Demo]:
    """Put one action per demo into ``menu``; ``open_config(path)`` loads a demo's settings."""
    menu.clear()
    demos = list_demos()
    for demo in demos:
        action = menu.addAction(demo.menu_text)
        action.setToolTip(f"Load the settings and data of {demo.path.name} into the Train tab; press Train to run.")
        action.triggered.connect(lambda _checked=False, p=str(demo.path): open_config(p))
    menu.setToolTipsVisible(True)
    menu.setEnabled(bool(demos))
    return demos
