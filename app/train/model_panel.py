"""Step 2 of the setup: which base model to train.

The embedded Gemma 3 270M works offline and is the default; a Hugging Face id
or a local folder / .gguf file can replace it. A typo in a path is caught here,
in milliseconds, rather than half a minute into a run.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.studio_settings import StudioSettings

EMBEDDED, HUB, LOCAL = "embedded", "hub", "local"
_LABELS = {
    EMBEDDED: "Gemma 3 270M (embedded, works offline)",
    HUB: "Hugging Face model id",
    LOCAL: "Local folder or .gguf file",
}


def check_model(text: str, trust_remote_code: bool = False, allow_pickle_weights: bool = False) -> tuple[str, str]:
    """("", "") when ``text`` names a usable model, else (what is wrong, the setting
    that would change it: ``model``, ``trust_remote_code`` or ``allow_pickle_weights``)."""
    from backend.models.source import ModelSourceError, resolve_checked_model

    try:
        resolve_checked_model(text, trust_remote_code=trust_remote_code, allow_pickle_weights=allow_pickle_weights)
    except ModelSourceError as exc:
        return str(exc), exc.setting
    return "", ""


class ModelPanel(QWidget):
    sig_model_changed = Signal()
    """The model source or its text changed."""

    def __init__(self, settings: StudioSettings, parent=None):
        super().__init__(parent)
        self._settings = settings
        self.source_combo = QComboBox()
        for kind, label in _LABELS.items():
            self.source_combo.addItem(label, kind)
        self.source_combo.currentIndexChanged.connect(self._on_kind)
        self.text = QLineEdit()
        self.text.textChanged.connect(self._on_text)
        self.folder_button = QPushButton("Folder…")
        self.folder_button.clicked.connect(self._pick_folder)
        self.gguf_button = QPushButton(".gguf…")
        self.gguf_button.clicked.connect(self._pick_gguf)
        row = QHBoxLayout()
        row.setSpacing(6)
        row.addWidget(self.text, 1)
        row.addWidget(self.folder_button)
        row.addWidget(self.gguf_button)
        self._row_host = QWidget()
        self._row_host.setLayout(row)
        row.setContentsMargins(0, 0, 0, 0)
        self.message = QLabel()
        self.message.setObjectName("fieldError")
        self.message.setWordWrap(True)
        self.message.setVisible(False)
        self.note = QLabel()
        self.note.setObjectName("mutedText")
        self.note.setWordWrap(True)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(6)
        layout.addWidget(self.source_combo)
        layout.addWidget(self._row_host)
        layout.addWidget(self.message)
        layout.addWidget(self.note)
        self._texts = {HUB: "", LOCAL: ""}
        # The "Trust remote code" and "Allow pickle weights" settings live in the model
        # settings form; the window hands them over so the check here agrees with the run.
        self._permissions = {"trust_remote_code": False, "allow_pickle_weights": False}

        saved = settings.model_choice()
        kind = saved.get("kind", EMBEDDED)
        if kind in self._texts:
            self._texts[kind] = saved.get("text", "")
        self.set_kind(kind if kind in _LABELS else EMBEDDED)

    # ---------------------------------------------------------------- values
    def kind(self) -> str:
        return self.source_combo.currentData()

    def set_kind(self, kind: str) -> None:
        self.source_combo.setCurrentIndex(max(self.source_combo.findData(kind), 0))
        self._on_kind()

    def set_model(self, model: str) -> None:
        """Show ``model`` (as stored in a config): empty is the embedded one."""
        text = (model or "").strip()
        if text in ("", "embedded", "embedded:gemma-3-270m"):
            self.set_kind(EMBEDDED)
            return
        kind = LOCAL if (Path(text).expanduser().exists() or text.startswith(("/", ".", "~"))) else HUB
        self._texts[kind] = text
        self.set_kind(kind)

    def model_value(self) -> str:
        return "" if self.kind() == EMBEDDED else self.text.text().strip()

    def set_permissions(self, trust_remote_code: bool, allow_pickle_weights: bool) -> None:
        """Judge the model with these loading permissions (from the model settings form)."""
        permissions = {"trust_remote_code": bool(trust_remote_code), "allow_pickle_weights": bool(allow_pickle_weights)}
        if permissions != self._permissions:
            self._permissions = permissions
            self._show_problem()

    def problem(self) -> str:
        return self.problem_and_setting()[0]

    def problem_setting(self) -> str:
        """The setting that would resolve the current problem ("model" when only another model would)."""
        return self.problem_and_setting()[1]

    def problem_and_setting(self) -> tuple[str, str]:
        kind = self.kind()
        if kind == EMBEDDED:
            return "", ""
        value = self.text.text().strip()
        if not value:
            if kind == HUB:
                return "Type a model id, e.g. Qwen/Qwen2.5-0.5B-Instruct", "model"
            return "Pick a model folder or a .gguf file", "model"
        return check_model(value, **self._permissions)

    def tokenizer_path(self) -> str | None:
        """A local folder holding this model's tokenizer.json, if there is one on disk."""
        kind = self.kind()
        if kind == EMBEDDED:
            from backend.models.embedded_model import embedded_model_folder
            from backend.export.gguf_conversion import is_converted

            folder = embedded_model_folder()
            return str(folder) if is_converted(folder) else None
        if kind == LOCAL:
            folder = Path(self.model_value()).expanduser()
            if folder.is_dir() and (folder / "tokenizer.json").is_file():
                return str(folder)
        return None

    def display_name(self) -> str:
        if self.kind() == EMBEDDED:
            return "Gemma 3 270M (embedded)"
        value = self.model_value()
        return Path(value).name if self.kind() == LOCAL else value

    # -------------------------------------------------------------- reactions
    def _on_kind(self, *_args) -> None:
        kind = self.kind()
        self._row_host.setVisible(kind != EMBEDDED)
        self.folder_button.setVisible(kind == LOCAL)
        self.gguf_button.setVisible(kind == LOCAL)
        self.text.blockSignals(True)
        self.text.setText(self._texts.get(kind, ""))
        self.text.blockSignals(False)
        self.text.setPlaceholderText("organisation/model-name" if kind == HUB
                                     else "/path/to/model or /path/to/model.gguf")
        notes = {
            EMBEDDED: "A 270M-parameter base model shipped with the studio: small enough for a CPU, "
                      "good for learning how alignment behaves.",
            HUB: "Downloaded on first use unless it is already in the Hugging Face cache.",
            LOCAL: "A folder with config.json and safetensors weights, or a single .gguf file "
                   "(converted once, then cached).",
        }
        self.note.setText(notes[kind])
        self._refresh()

    def _on_text(self, text: str) -> None:
        self._texts[self.kind()] = text
        self._refresh()

    def _refresh(self) -> None:
        self._show_problem()
        self._settings.set_model_choice(self.kind(), self.text.text().strip() if self.kind() != EMBEDDED else "")
        self.sig_model_changed.emit()

    def _show_problem(self) -> None:
        problem = self.problem()
        shown = bool(problem) and bool(self.text.text().strip())
        self.message.setText(problem)
        self.message.setVisible(shown)
        if self.text.property("invalid") != shown:
            self.text.setProperty("invalid", shown)
            self.text.style().unpolish(self.text)
            self.text.style().polish(self.text)

    def _pick_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Pick a model folder", self.text.text())
        if path:
            self.text.setText(path)

    def _pick_gguf(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Pick a .gguf model", self.text.text(), "GGUF models (*.gguf)")
        if path:
            self.text.setText(path)
