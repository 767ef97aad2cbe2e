"""The studio's look: Fusion as the base style plus one small stylesheet.

Kept as a Python string rather than a .qss file so it ships with the package
without package-data rules.
"""

from __future__ import annotations

STYLESHEET = """
QMainWindow, QWidget#trainPage, QWidget#runsPage, QWidget#comparePage { background: #f3f4f6; }
QWidget { color: #1f2937; }
QToolTip { background: #111827; color: #f9fafb; border: none; padding: 6px; }

QFrame#card { background: #ffffff; border: 1px solid #e5e7eb; border-radius: 10px; }
QLabel#cardTitle { font-size: 12pt; font-weight: 600; color: #111827; }
QLabel#cardStep { color: #ffffff; background: #6366f1; border-radius: 10px; font-weight: 700;
                  min-width: 20px; max-width: 20px; min-height: 20px; max-height: 20px; }
QLabel#panelTitle { font-weight: 600; color: #374151; }
QLabel#mutedText, QLabel#dropHint { color: #6b7280; }
QLabel#formGroupTitle { font-weight: 600; color: #4b5563; padding-top: 4px; }
QLabel#fieldError { color: #b91c1c; font-size: 9pt; }
QLabel#statLine { color: #374151; }
QLabel#phaseLabel { color: #4338ca; font-weight: 600; }
QLabel#runLegend { padding: 2px 4px; }
QLabel#emptyState { color: #9ca3af; font-size: 11pt; }
QLabel#fitsOk { color: #15803d; font-weight: 600; }
QLabel#fitsBad { color: #b91c1c; font-weight: 600; }

QPushButton { background: #ffffff; border: 1px solid #d1d5db; border-radius: 6px; padding: 5px 12px; }
QPushButton:hover { background: #f9fafb; border-color: #9ca3af; }
QPushButton:pressed { background: #f3f4f6; }
QPushButton:disabled { color: #9ca3af; background: #f9fafb; border-color: #e5e7eb; }
QPushButton#primaryButton { background: #4f46e5; color: #ffffff; border: none; font-weight: 600; padding: 8px 22px; }
QPushButton#primaryButton:hover { background: #4338ca; }
QPushButton#primaryButton:disabled { background: #c7d2fe; color: #eef2ff; }
QPushButton#stopButton { color: #b91c1c; border-color: #fca5a5; font-weight: 600; padding: 8px 18px; }
QPushButton#stopButton:hover { background: #fef2f2; }
QPushButton#stopButton:disabled { color: #d1d5db; border-color: #e5e7eb; background: #f9fafb; }

QLineEdit, QSpinBox, QDoubleSpinBox, QComboBox, QPlainTextEdit, QTextBrowser {
    background: #ffffff; border: 1px solid #d1d5db; border-radius: 5px; padding: 3px 6px;
    selection-background-color: #c7d2fe; selection-color: #111827; }
QLineEdit:focus, QSpinBox:focus, QComboBox:focus { border-color: #6366f1; }
QLineEdit[invalid="true"], QSpinBox[invalid="true"], QComboBox[invalid="true"] {
    border-color: #dc2626; background: #fef2f2; }
QComboBox QAbstractItemView { background: #ffffff; selection-background-color: #e0e7ff; selection-color: #111827; }
QCheckBox { spacing: 6px; }

QToolButton#sectionToggle { border: none; font-weight: 600; color: #4338ca; padding: 4px 0px; text-align: left; }
QToolButton#sectionToggle:hover { color: #312e81; }
QToolButton#plotFitButton { font-size: 8pt; padding: 1px 3px; color: #3730a3; background: #eef2ff;
                            border: 1px solid #a5b4fc; border-radius: 4px; }
QToolButton#plotFitButton:hover { background: #e0e7ff; }

QFrame#dropZone { border: 2px dashed #a5b4fc; border-radius: 10px; background: #eef2ff; }
QFrame#dropZone[dragActive="true"] { border-color: #4f46e5; background: #e0e7ff; }
QLabel#dropTitle { font-size: 11pt; font-weight: 600; color: #3730a3; }
QLabel#dropCurrent { color: #111827; font-weight: 600; }

QTabWidget::pane { border: none; }
QTabBar::tab { background: transparent; padding: 8px 18px; margin-right: 2px; color: #4b5563;
               border-bottom: 2px solid transparent; font-weight: 600; }
QTabBar::tab:selected { color: #312e81; border-bottom: 2px solid #4f46e5; }
QTabBar::tab:hover { color: #111827; }

QProgressBar { border: 1px solid #d1d5db; border-radius: 6px; background: #f3f4f6; text-align: center;
               min-height: 18px; color: #111827; }
QProgressBar::chunk { background: #818cf8; border-radius: 5px; }

QTableView, QTableWidget { background: #ffffff; border: 1px solid #e5e7eb; border-radius: 6px;
    gridline-color: #f1f5f9; alternate-background-color: #f9fafb;
    selection-background-color: #e0e7ff; selection-color: #111827; }
QHeaderView::section { background: #f9fafb; border: none; border-bottom: 1px solid #e5e7eb;
    padding: 4px 6px; font-weight: 600; color: #374151; }

QPlainTextEdit#logConsole { background: #0f172a; color: #e2e8f0; border: none; border-radius: 8px; padding: 6px; }
QPlainTextEdit#previewDetail { background: #f9fafb; }
QLabel#previewDetailTitle { color: #6b7280; font-size: 9pt; }

QFrame#noticeBanner { border-radius: 8px; border: 1px solid #bfdbfe; background: #eff6ff; }
QFrame#noticeBanner[severity="success"] { border-color: #bbf7d0; background: #f0fdf4; }
QFrame#noticeBanner[severity="warning"] { border-color: #fde68a; background: #fffbeb; }
QFrame#noticeBanner[severity="error"] { border-color: #fecaca; background: #fef2f2; }
QLabel#noticeTitle { font-weight: 600; }
QToolButton#noticeClose { border: none; color: #6b7280; }

QFrame#noteCard { border-radius: 8px; border: 1px solid #e5e7eb; background: #ffffff; border-left: 4px solid #60a5fa; }
QFrame#noteCard[severity="warning"] { border-left: 4px solid #f59e0b; background: #fffdf5; }
QFrame#noteCard[severity="error"] { border-left: 4px solid #dc2626; background: #fff7f7; }
QLabel#noteTitle { font-weight: 600; }
QLabel#noteText { color: #374151; }
QLabel#noteAdvice { color: #1f2937; }

QScrollBar:vertical { background: transparent; width: 10px; margin: 2px; }
QScrollBar::handle:vertical { background: #cbd5e1; border-radius: 3px; min-height: 30px; }
QScrollBar::handle:vertical:hover { background: #94a3b8; }
QScrollBar:horizontal { background: transparent; height: 10px; margin: 2px; }
QScrollBar::handle:horizontal { background: #cbd5e1; border-radius: 3px; min-width: 30px; }
QScrollBar::add-line, QScrollBar::sub-line { width: 0px; height: 0px; }
QScrollBar::add-page, QScrollBar::sub-page { background: transparent; }
QSplitter::handle { background: transparent; }
QSplitter::handle:hover { background: #e0e7ff; }
QScrollArea { background: transparent; border: none; }
QScrollArea > QWidget > QWidget { background: transparent; }
QStatusBar { background: #ffffff; border-top: 1px solid #e5e7eb; color: #374151; }
QStatusBar QLabel { padding: 0px 6px; }
QMenuBar { background: #ffffff; border-bottom: 1px solid #e5e7eb; }
"""


# Fusion draws a spin box's buttons and a combo box's arrow as bare lines once a style sheet gives
# their frame a border, so the arrows are images here.
ARROW_RULES = """
QSpinBox::up-button, QDoubleSpinBox::up-button, QSpinBox::down-button, QDoubleSpinBox::down-button {
    subcontrol-origin: border; width: 18px; border-left: 1px solid #e5e7eb; background: transparent; }
QSpinBox::up-button, QDoubleSpinBox::up-button { subcontrol-position: top right; }
QSpinBox::down-button, QDoubleSpinBox::down-button { subcontrol-position: bottom right; }
QSpinBox::up-button:hover, QDoubleSpinBox::up-button:hover, QSpinBox::down-button:hover,
QDoubleSpinBox::down-button:hover { background: #eef2ff; }
QSpinBox::up-arrow, QDoubleSpinBox::up-arrow { image: url("{up}"); width: 8px; height: 5px; }
QSpinBox::down-arrow, QDoubleSpinBox::down-arrow, QComboBox::down-arrow { image: url("{down}"); width: 8px; height: 5px; }
QComboBox::drop-down { subcontrol-origin: padding; subcontrol-position: center right; width: 20px; border: none; }
"""


def arrow_rules() -> str:
    from backend.core.paths import resource_path

    up, down = (resource_path("icons", name).as_posix() for name in ("spin_up.svg", "spin_down.svg"))
    return ARROW_RULES.replace("{up}", up).replace("{down}", down)


def apply_theme(app) -> None:
    if app.property("alignstudioThemed"):
        return
    app.setStyle("Fusion")
    app.setStyleSheet(STYLESHEET + arrow_rules())
    app.setProperty("alignstudioThemed", True)
