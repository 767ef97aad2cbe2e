"""What the studio remembers between launches: recent files, the last method and
its settings, per-file format choices, window layout.

Settings live in an INI file under the studio's home folder (``ALIGNSTUDIO_HOME``
moves it), so tests that point the home at a temporary folder never touch the
user's settings. Structured values are stored as JSON text, which survives
the INI backend's loose typing unchanged.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from PySide6.QtCore import QByteArray, QSettings

from backend.core.paths import home_dir

MAX_RECENT = 10


def settings_path() -> Path:
    return home_dir() / "settings.ini"


class StudioSettings:
    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else settings_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.qsettings = QSettings(str(self.path), QSettings.Format.IniFormat)

    def _get_json(self, key: str, default: Any) -> Any:
        raw = self.qsettings.value(key)
        if raw in (None, ""):
            return default
        try:
            return json.loads(raw)
        except (TypeError, ValueError):
            return default

    def _set_json(self, key: str, value: Any) -> None:
        self.qsettings.setValue(key, json.dumps(value))

    def sync(self) -> None:
        self.qsettings.sync()

    # ---------------------------------------------------------------- files
    def recent_files(self) -> list[str]:
        return [p for p in self._get_json("data/recent", []) if isinstance(p, str)]

    def add_recent_file(self, path: str) -> list[str]:
        path = str(Path(path).expanduser().resolve())
        files = [path] + [p for p in self.recent_files() if p != path]
        self._set_json("data/recent", files[:MAX_RECENT])
        return files[:MAX_RECENT]

    @staticmethod
    def _file_key(path: str) -> str:
        resolved = str(Path(path).expanduser().resolve())
        return "data/overrides/" + hashlib.sha1(resolved.encode("utf-8")).hexdigest()[:16]

    def data_override(self, path: str) -> dict[str, Any]:
        """The format and column mapping the user chose for this file: {"format": ..., "column_map": ...}."""
        value = self._get_json(self._file_key(path), {})
        return value if isinstance(value, dict) else {}

    def set_data_override(self, path: str, data_format: str | None, column_map: dict | None) -> None:
        if not data_format and not column_map:
            self.qsettings.remove(self._file_key(path))
            return
        self._set_json(self._file_key(path), {"path": str(path), "format": data_format or None,
                                               "column_map": column_map or None})

    # --------------------------------------------------------------- method
    def last_method(self, default: str) -> str:
        value = self.qsettings.value("train/method")
        return value if isinstance(value, str) and value else default

    def set_last_method(self, method: str) -> None:
        self.qsettings.setValue("train/method", method)

    def method_values(self, method: str) -> dict[str, Any]:
        """Settings the user changed from the method's defaults."""
        value = self._get_json(f"train/values/{method}", {})
        return value if isinstance(value, dict) else {}

    def set_method_values(self, method: str, values: dict[str, Any]) -> None:
        self._set_json(f"train/values/{method}", values)

    def model_choice(self) -> dict[str, str]:
        value = self._get_json("model/choice", {})
        return value if isinstance(value, dict) else {}

    def set_model_choice(self, kind: str, text: str) -> None:
        self._set_json("model/choice", {"kind": kind, "text": text})

    # --------------------------------------------------------------- window
    def window_state(self) -> tuple[QByteArray | None, QByteArray | None]:
        return self.qsettings.value("window/geometry"), self.qsettings.value("window/state")

    def set_window_state(self, geometry: QByteArray, state: QByteArray) -> None:
        self.qsettings.setValue("window/geometry", geometry)
        self.qsettings.setValue("window/state", state)

    def value(self, key: str, default: Any = None) -> Any:
        return self._get_json(key, default)

    def set_value(self, key: str, value: Any) -> None:
        self._set_json(key, value)
