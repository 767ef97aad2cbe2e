"""Where the studio keeps its files. One place, so tests can redirect all of it."""

from __future__ import annotations

import os
from pathlib import Path


def home_dir() -> Path:
    """Root of the studio's own data: runs, settings. ``ALIGNSTUDIO_HOME`` overrides."""
    env = os.environ.get("ALIGNSTUDIO_HOME")
    return Path(env).expanduser() if env else Path.home() / "AlignStudio"


def runs_dir() -> Path:
    return home_dir() / "runs"


def cache_dir() -> Path:
    """Converted models live here. Kept apart from ``home_dir`` so tests that use a
    temporary home still share one converted embedded model."""
    env = os.environ.get("ALIGNSTUDIO_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "alignstudio"


# The folder that holds the `backend`, `app` and `widgets` packages: worker processes
# get it on PYTHONPATH so they import the same code as their parent.
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def resource_path(*parts: str) -> Path:
    """A shipped file or folder: `resources/` beside the source in a checkout, the
    package ``alignstudio_resources`` in an installed wheel."""
    source = PROJECT_ROOT.joinpath("resources", *parts)
    if source.exists():
        return source
    from importlib.resources import files

    return Path(str(files("alignstudio_resources").joinpath(*parts)))
