"""Everything a run writes stays inside its run folder, under the runs folder the user chose.

A config file cannot choose the runs folder (``output_dir`` is dropped when a
config is read from a file, see ``backend.runs.code_permissions``), and run names are
turned into one plain folder name. What is left is a run folder that arrived
from elsewhere: its ``adapter``, ``checkpoints`` or log could be symbolic links
pointing out of it, so that resuming it would write wherever the sender chose.
``escaping_links`` finds those before a resume starts anything.
"""

from __future__ import annotations

import os
from pathlib import Path


def is_inside(path: str | Path, root: str | Path) -> bool:
    """Whether ``path``, with every link followed, lies inside ``root``."""
    real, base = os.path.realpath(path), os.path.realpath(root)
    return real == base or real.startswith(base.rstrip(os.sep) + os.sep)


def escaping_links(run_dir: str | Path) -> list[Path]:
    """Links in ``run_dir`` (at any depth) whose target lies outside it."""
    run_dir = Path(run_dir)
    found = []
    for dirpath, dirnames, filenames in os.walk(run_dir):  # os.walk does not follow links into folders
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            if path.is_symlink() and not is_inside(path, run_dir):
                found.append(path)
    return sorted(found)


def escaping_links_problem(run_dir: str | Path) -> str:
    links = escaping_links(run_dir)
    if not links:
        return ""
    shown = ", ".join(f"{p.relative_to(run_dir)} -> {os.path.realpath(p)}" for p in links[:3])
    return (f"The run folder {Path(run_dir).name} holds links that point outside it ({shown}); resuming would "
            "write there. A run folder copied from elsewhere must hold its own files: remove the links, or train "
            "again with its settings into a new run folder.")
