"""Pick a Hugging Face dataset by id, with its subset and split, as `datasets` offers them.

Looking the id up (its subsets, then the splits of the chosen subset) runs on the
thread pool: online it asks the Hub, offline it reads the local caches and refuses
an uncached id at once. The picker only chooses; the data panel loads the split.
"""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.background_call import call_in_background

_HELDOUT = ("test", "validation", "valid", "eval", "dev")


def _subsets_and_splits(repo_id: str, subset: str | None) -> tuple[list[str], str, list[str]]:
    from backend.data.hub import list_splits, list_subsets

    subsets = list_subsets(repo_id)
    chosen = subset if subset in subsets else ("default" if "default" in subsets else subsets[0] if subsets else "")
    return subsets, chosen, list_splits(repo_id, "" if chosen == "default" else chosen)


class HubDatasetPicker(QWidget):
    sig_load = Signal(str, str, str, str)
    """Load this dataset: (id, subset or "", split, revision or "" for the latest)."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.id_edit = QLineEdit()
        self.id_edit.setPlaceholderText("owner/name, e.g. Anthropic/hh-rlhf")
        self.id_edit.returnPressed.connect(self.look_up)
        # A commit belongs to one dataset: another id typed starts from its latest again.
        self.id_edit.textEdited.connect(lambda _text: self.revision_edit.clear())
        self.find_button = QPushButton("Find")
        self.find_button.clicked.connect(self.look_up)
        self.subset_combo = QComboBox()
        self.subset_combo.activated.connect(self._subset_chosen)
        self.split_combo = QComboBox()
        self.split_combo.currentIndexChanged.connect(self._show_heldout)
        # A run trained again reads the commit it recorded, not whatever the Hub has now.
        self.revision_edit = QLineEdit()
        self.revision_edit.setPlaceholderText("latest")
        self.revision_edit.setToolTip("A commit, tag or branch of the dataset; empty reads the latest "
                                      "(offline: the newest one downloaded). Train again fills in the commit "
                                      "the run trained on.")
        self.status = QLabel("Type a dataset id and press Find; offline, only datasets already downloaded are found.")
        self.status.setObjectName("mutedText")
        self.status.setWordWrap(True)
        self.load_button = QPushButton("Load split")
        self.load_button.setEnabled(False)
        self.load_button.clicked.connect(self._load)

        row = QHBoxLayout()
        row.addWidget(self.id_edit, 1)
        row.addWidget(self.find_button)
        form = QFormLayout()
        form.addRow("Dataset id", row)
        form.addRow("Subset", self.subset_combo)
        form.addRow("Split", self.split_combo)
        form.addRow("Revision", self.revision_edit)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(form)
        layout.addWidget(self.status)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.load_button)
        layout.addLayout(buttons)
        self._repo_id = ""
        self._splits: list[str] = []
        self._wanted_split = ""  # the split to select once the lists arrive
        self._set_choices([], [])

    def show_choice(self, repo_id: str, subset: str, split: str, revision: str = "") -> None:
        """Show an id, subset, split and revision chosen elsewhere (a run being trained again)
        and fill the lists around them; the data panel loads the split itself."""
        self.id_edit.setText(repo_id)
        self.revision_edit.setText(revision)
        self._set_choices([subset or "default"], [split or "train"], subset or "default")
        self.look_up(subset or None, split)

    def look_up(self, subset: str | None = None, split: str = "") -> None:
        repo_id = self.id_edit.text().strip()
        if not repo_id:
            self._fail("Type a dataset id first, as owner/name.")
            return
        self._repo_id = repo_id
        self._wanted_split = split if isinstance(split, str) else ""
        self.find_button.setEnabled(False)
        self.load_button.setEnabled(False)
        self.status.setText(f"Looking up {repo_id}…")
        call_in_background(lambda: _subsets_and_splits(repo_id, subset if isinstance(subset, str) else None),
                           lambda found: self._found(repo_id, found), self._failed, owner=self)

    def _found(self, repo_id: str, found) -> None:
        if repo_id != self._repo_id:
            return
        subsets, chosen, splits = found
        self.find_button.setEnabled(True)
        self._set_choices(subsets, splits, chosen)
        if not splits:
            self._fail(f"{repo_id} has no splits to load.")
            return
        self.load_button.setEnabled(True)
        self._show_heldout()

    def _failed(self, exc: BaseException, _trace: str) -> None:
        self.find_button.setEnabled(True)
        self._set_choices([], [])
        self._fail(str(exc))

    def _fail(self, message: str) -> None:
        self.status.setStyleSheet("color: #b91c1c;")  # the theme's muted grey would hide a refusal
        self.status.setText(message)

    def _set_choices(self, subsets: list[str], splits: list[str], chosen: str = "") -> None:
        self._splits = list(splits)
        self.subset_combo.clear()
        self.subset_combo.addItems(subsets)
        if chosen:
            self.subset_combo.setCurrentText(chosen)
        self.subset_combo.setEnabled(len(subsets) > 1)
        self.split_combo.clear()
        self.split_combo.addItems(splits)
        wanted = next((s for s in (self._wanted_split, "train") if s in splits), "")
        if wanted:
            self.split_combo.setCurrentText(wanted)
        self.split_combo.setEnabled(bool(splits))

    def _subset_chosen(self, _index: int) -> None:
        self.look_up(self.subset_combo.currentText())

    def _show_heldout(self, *_args) -> None:
        if not self._splits:
            return
        split = self.split_combo.currentText()
        held = next((s for s in _HELDOUT if s in self._splits and s != split), "")
        self.status.setStyleSheet("")
        self.status.setText(f"{self._repo_id}: splits {', '.join(self._splits)}. "
                            + (f"The {held} split will be held out for evaluation and the Compare tab."
                               if held else "No test split: a share of the training rows will be held out."))

    def _load(self) -> None:
        subset = self.subset_combo.currentText()
        self.sig_load.emit(self._repo_id, "" if subset == "default" else subset, self.split_combo.currentText(),
                           self.revision_edit.text().strip())
