"""Write the studio's icon as a Windows .ico file, for the Start-menu shortcut.

    python installer/windows_icon.py OUT.ico

Run by installer/install.ps1 with the environment it has just made (PySide6 is
there): a shortcut's icon must be an .ico (or an .exe), while the studio ships its
icon as SVG. One 256-pixel image, which Windows scales for the Start menu and the
taskbar. Exit code 0 when the file was written."""

from __future__ import annotations

import os
import sys
from pathlib import Path

SIZE = 256


def write_icon(out: Path) -> bool:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # no window is shown; this may run headless
    from PySide6.QtCore import QSize
    from PySide6.QtGui import QGuiApplication, QIcon, QImageWriter

    from app.studio_app import app_icon_path

    app = QGuiApplication.instance() or QGuiApplication([sys.argv[0]])  # noqa: F841 (rendering needs one)
    icon = QIcon(str(app_icon_path()))
    if icon.isNull():
        return False
    image = icon.pixmap(QSize(SIZE, SIZE)).toImage()
    return not image.isNull() and QImageWriter(str(out), b"ico").write(image)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python installer/windows_icon.py OUT.ico", file=sys.stderr)
        return 2
    out = Path(argv[0])
    out.parent.mkdir(parents=True, exist_ok=True)
    if not write_icon(out):
        print(f"windows_icon: could not write {out}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
