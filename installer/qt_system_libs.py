"""Which system libraries Qt's platform plugin is missing, named as Debian/Ubuntu packages.

PySide6's wheels carry Qt itself but not the X11/xcb client libraries that its
``xcb`` platform plugin links against. On a plain Debian or Ubuntu machine some
of them are absent (``libxcb-cursor0``, ``libxcb-icccm4``, ``libxcb-keysyms1``
were missing on a fresh Debian 12), and Qt's own error names only the first one
it looks for, so a user installs one package, tries again and meets the next.

This script asks the dynamic linker (``ldd``) about the plugin and everything
it loads, so it finds every missing library in one pass, whatever the Qt
version needs today, and turns each soname into the package that ships it.
Nothing here imports PySide6 (a broken Qt install must still be diagnosed), and
only the standard library is used, so the installer can run it before anything
else works. No package database offers the soname-to-package lookup offline for
libraries that are not installed yet, hence the rule and its short table of
exceptions below.

    python installer/qt_system_libs.py [xcb|offscreen|wayland]   # prints package names, space-separated
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

# Sonames whose Debian package does not follow the usual rule.
PACKAGE_EXCEPTIONS = {
    "libglib-2.0.so.0": "libglib2.0-0",
    "libgthread-2.0.so.0": "libglib2.0-0",
    "libX11-xcb.so.1": "libx11-xcb1",
    "libGLX.so.0": "libglx0",
    "libOpenGL.so.0": "libopengl0",
}


def package_for_soname(soname: str) -> str:
    """``libxcb-icccm.so.4`` -> ``libxcb-icccm4``; ``libxkbcommon-x11.so.0`` -> ``libxkbcommon-x11-0``.

    Debian names a shared-library package after the soname's stem and major
    version, lower-cased, with a hyphen between them when the stem ends in a digit.
    """
    if soname in PACKAGE_EXCEPTIONS:
        return PACKAGE_EXCEPTIONS[soname]
    match = re.fullmatch(r"(?P<stem>.+?)\.so\.(?P<major>\d+)(?:\.\d+)*", soname)
    if not match:
        return soname.lower()
    stem, major = match["stem"].lower(), match["major"]
    return f"{stem}-{major}" if stem[-1].isdigit() else f"{stem}{major}"


def plugin_path(platform: str) -> Path | None:
    spec = importlib.util.find_spec("PySide6")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(list(spec.submodule_search_locations)[0])
    candidate = root / "Qt" / "plugins" / "platforms" / f"libq{platform}.so"
    return candidate if candidate.exists() else None


def missing_sonames(library: Path) -> list[str]:
    """Every library that ``library`` needs, directly or through others, that the linker cannot find."""
    ldd = shutil.which("ldd")
    if ldd is None:
        raise RuntimeError("ldd is not installed, so the Qt libraries cannot be checked")
    output = subprocess.run([ldd, str(library)], capture_output=True, text=True, check=False).stdout
    found = []
    for line in output.splitlines():
        name, _, rest = line.strip().partition(" => ")
        if rest.strip() == "not found" and name not in found:
            found.append(name)
    return found


def missing_packages(platform: str) -> list[str]:
    plugin = plugin_path(platform)
    if plugin is None:
        return []
    packages: list[str] = []
    for soname in missing_sonames(plugin):
        package = package_for_soname(soname)
        if package not in packages:
            packages.append(package)
    return packages


def main(argv: list[str]) -> int:
    platform = (argv[0] if argv else "xcb").split(";")[0] or "xcb"
    if not sys.platform.startswith("linux"):
        return 0
    try:
        packages = missing_packages(platform)
    except RuntimeError as exc:
        print(f"qt_system_libs: {exc}", file=sys.stderr)
        return 0
    print(" ".join(packages))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
