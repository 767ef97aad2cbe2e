"""The confirmation in which the user, and only the user, lets a model or file run code.

It names the model or file, says in plain words what it would be allowed to do,
and lists where the code lives, so the user can read it first. Nothing is
allowed unless the user presses the allow button; Escape, closing the window
and the default button all refuse.
"""

from __future__ import annotations

import html

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QLabel, QPlainTextEdit, QVBoxLayout

from backend.runs.code_permissions import TITLES, CodeSubject, permission_kind, where_the_code_lives


class PermissionDialog(QDialog):
    def __init__(self, subject: CodeSubject, parent=None, changed: bool = False):
        super().__init__(parent)
        self.subject = subject
        self.setWindowTitle(TITLES[subject.permission])
        self.setObjectName("permissionDialog")
        self.setMinimumWidth(560)
        layout = QVBoxLayout(self)

        headline = QLabel(f"<b>{html.escape(TITLES[subject.permission])}</b>")
        body = QLabel(self.explanation(changed))
        body.setWordWrap(True)
        body.setTextFormat(Qt.TextFormat.RichText)
        where = QLabel("Where the code lives (read it before you allow it):")
        self.files = QPlainTextEdit("\n".join(where_the_code_lives(subject)))
        self.files.setReadOnly(True)
        self.files.setMaximumHeight(110)
        note = QLabel("Your answer is remembered on this computer for these exact files; if any of them changes, "
                      "the studio asks again. Settings → Code permissions lists and revokes what you allowed.")
        note.setWordWrap(True)
        note.setObjectName("permissionNote")

        self.buttons = QDialogButtonBox()
        self.allow_button = self.buttons.addButton("Allow on this computer", QDialogButtonBox.ButtonRole.AcceptRole)
        self.refuse_button = self.buttons.addButton("Don't allow", QDialogButtonBox.ButtonRole.RejectRole)
        self.allow_button.setAutoDefault(False)
        self.refuse_button.setDefault(True)  # Enter refuses: allowing takes a deliberate click
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        for widget in (headline, body, where, self.files, note, self.buttons):
            layout.addWidget(widget)

    def explanation(self, changed: bool) -> str:
        s = self.subject
        kind = "file" if s.permission == "allow_reward_code" else "model"
        again = (f"<p>You allowed this {kind} before, but its {permission_kind(s.permission)} files have changed "
                 "since, so you are asked again.</p>") if changed else ""
        return (f"{again}<p>The {kind} <b>{html.escape(s.name)}</b> ({html.escape(s.location)}) asks to "
                f"{html.escape(s.describe())}.</p><p>Allow it only if you trust where it comes from. A config file, "
                "run folder, dataset or model folder can never allow this for you.</p>")


def ask_permission(subject: CodeSubject, parent=None, changed: bool = False) -> bool:
    dialog = PermissionDialog(subject, parent, changed)
    return dialog.exec() == QDialog.DialogCode.Accepted
