"""The studio's settings page for code permissions: what the user allowed, and revoking it.

Grants live in the studio's own folder (``backend.runs.code_permissions.GrantStore``),
never in a run folder, a config or a model folder.
"""

from __future__ import annotations

from PySide6.QtWidgets import (QAbstractItemView, QDialog, QDialogButtonBox, QHBoxLayout, QHeaderView, QLabel,
                               QPushButton, QTableWidget, QTableWidgetItem, QVBoxLayout)

from backend.runs.code_permissions import GrantStore, permission_kind

COLUMNS = ("Allows", "Model or file", "Where", "Files hashed", "Allowed on")


class CodePermissionsPage(QDialog):
    def __init__(self, store: GrantStore, parent=None):
        super().__init__(parent)
        self.store = store
        self.setWindowTitle("Code permissions")
        self.setObjectName("codePermissionsPage")
        self.resize(760, 320)
        layout = QVBoxLayout(self)
        intro = QLabel("Models and files you allowed to run code on this computer. Each permission holds only for "
                       "the files as they were when you allowed it; revoke one and the studio asks again.")
        intro.setWordWrap(True)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        self.empty = QLabel("Nothing is allowed: no model or file may run its own code.")
        self.revoke_button = QPushButton("Revoke")
        self.revoke_button.clicked.connect(self.revoke_selected)
        row = QHBoxLayout()
        row.addWidget(self.empty)
        row.addStretch(1)
        row.addWidget(self.revoke_button)
        close = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        close.rejected.connect(self.reject)
        for item in (intro, self.table):
            layout.addWidget(item)
        layout.addLayout(row)
        layout.addWidget(close)
        self.refresh()

    def refresh(self) -> None:
        grants = self.store.grants()
        self._grants = grants
        self.table.setRowCount(len(grants))
        for r, g in enumerate(grants):
            values = (permission_kind(g["permission"]), g.get("name", ""), g.get("location", ""),
                      str(g.get("files", "")), g.get("granted", ""))
            for c, value in enumerate(values):
                item = QTableWidgetItem(str(value))
                item.setToolTip(str(value))
                self.table.setItem(r, c, item)
        self.table.resizeColumnsToContents()
        self.table.horizontalHeader().setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        self.empty.setVisible(not grants)
        self.revoke_button.setEnabled(bool(grants))

    def revoke_selected(self) -> None:
        rows = sorted({i.row() for i in self.table.selectedIndexes()}) or ([0] if len(self._grants) == 1 else [])
        for r in rows:
            g = self._grants[r]
            self.store.revoke(g["permission"], g["location"])
        self.refresh()
