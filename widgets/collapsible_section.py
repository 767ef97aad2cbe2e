"""A titled section whose content folds away behind an arrow button."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QSizePolicy, QToolButton, QVBoxLayout, QWidget


class CollapsibleSection(QWidget):
    """Header button plus a content widget that is shown only when expanded."""

    sig_toggled = Signal(bool)
    """The section was opened (True) or folded (False) by the user."""

    def __init__(self, title: str, content: QWidget | None = None, expanded: bool = False, parent=None):
        super().__init__(parent)
        self._button = QToolButton()
        self._button.setObjectName("sectionToggle")
        self._button.setText(title)
        self._button.setCheckable(True)
        self._button.setChecked(expanded)
        self._button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self._button.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self._button.toggled.connect(self._on_toggled)
        self._content = content or QWidget()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(4)
        layout.addWidget(self._button)
        layout.addWidget(self._content)
        self._apply(expanded)

    def content(self) -> QWidget:
        return self._content

    def set_content(self, widget: QWidget) -> None:
        self.layout().replaceWidget(self._content, widget)
        self._content.deleteLater()
        self._content = widget
        self._apply(self._button.isChecked())

    def set_title(self, title: str) -> None:
        self._button.setText(title)

    def is_expanded(self) -> bool:
        return self._button.isChecked()

    def set_expanded(self, expanded: bool) -> None:
        self._button.setChecked(expanded)

    def _on_toggled(self, expanded: bool) -> None:
        self._apply(expanded)
        self.sig_toggled.emit(expanded)

    def _apply(self, expanded: bool) -> None:
        self._button.setArrowType(Qt.ArrowType.DownArrow if expanded else Qt.ArrowType.RightArrow)
        self._content.setVisible(expanded)
