"""Try the graders before training: a worker writes a few base-model completions for
a few prompts of the loaded data and every grader scores them (backend.graders.trial).

The dialog shows each completion with every grader's score, marks the best and worst
completion of each prompt, and says in words which grader failed, abstained or gave
every completion the same score. The user's reward file runs in that worker only,
and only when the user allowed it.
"""

from __future__ import annotations

import html
import shutil
import tempfile

from PySide6.QtCore import QProcess, QProcessEnvironment, Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QDialog,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
)

from backend.graders.trial import TrialFailed, TrialPhase, TrialResult, trial_event_from_json, trial_launch
from widgets.collapsible_section import CollapsibleSection
from widgets.sample_table import SampleTable

STOP_GRACE_MS = 3000
FINDING_MARKS = {"": "✓", "constant": "⚠", "abstains": "⚠", "some_errors": "✕", "error": "✕"}
FINDING_COLOURS = {"": "#15803d", "constant": "#b45309", "abstains": "#b45309", "some_errors": "#b91c1c",
                   "error": "#b91c1c"}


class _TrialBatch:
    """The trial's rows in the shape the sample table shows (a group per prompt)."""

    def __init__(self, result: TrialResult):
        self.step = 0
        self.graders = [g["name"] for g in result.graders]
        self.rows = [dict(row, group=row["prompt_index"]) for row in result.rows]
        self.total_rows = len(self.rows)


def describe_grader(grader: dict, rows: list[dict]) -> str:
    """One line of rich text about a grader's scores on the trial's completions."""
    name = grader["name"]
    values = [r["scores"].get(name) for r in rows if not r.get("errors", {}).get(name)]
    values = [v for v in values if isinstance(v, (int, float))]
    what = f"<b>{html.escape(grader['label'])}</b>"
    if grader["label"] != name:
        what += f" ({html.escape(name)})"
    what += f", weight {grader['weight']:g}"
    finding = grader.get("finding", "")
    if finding:
        body = html.escape(grader["text"])
    elif values:
        body = (f"scores from {min(values):.3g} to {max(values):.3g}, mean {sum(values) / len(values):.3g} "
                f"over {len(values)} completions")
    else:
        body = "no scores"
    mark = FINDING_MARKS.get(finding, "•")
    return f"<span style='color:{FINDING_COLOURS.get(finding, '#374151')}'>{mark}</span> {what}: {body}"


class GraderTrialDialog(QDialog):
    sig_finished = Signal(object)
    """The trial ended: a TrialResult or a TrialFailed."""

    def __init__(self, cfg, parent=None, prompts: int = 4, completions: int | None = None):
        super().__init__(parent)
        self.setWindowTitle("Try the graders")
        self.setObjectName("graderTrialDialog")
        self.resize(1080, 720)
        self.cfg = cfg
        self._prompts, self._completions = prompts, completions
        self._process: QProcess | None = None
        self._buffer = b""
        self._work_dir = ""
        self.outcome = None

        intro = QLabel("The base model writes a few completions for a few prompts of the loaded data, and every "
                       "grader scores each one. A grader that fails, abstains or gives every completion the same "
                       "score is flagged here, before a long run.")
        intro.setWordWrap(True)
        intro.setObjectName("mutedText")
        self.status = QLabel("Starting…")
        self.status.setObjectName("phaseLabel")
        self.status.setWordWrap(True)
        self.busy = QProgressBar()
        self.busy.setRange(0, 0)
        self.busy.setTextVisible(False)
        self.busy.setMaximumHeight(6)
        self.findings = QLabel()
        self.findings.setTextFormat(Qt.TextFormat.RichText)
        self.findings.setWordWrap(True)
        self.findings.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.findings.setVisible(False)
        self.table = SampleTable()
        self.table.hide_columns({"Step", "Advantage"})
        self.table.title.setText("Completions")
        self.table.summary.setText("The completions and their scores appear here.")
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setMaximumHeight(140)
        self.log_section = CollapsibleSection("Worker log", self.log)
        self.stop_button = QPushButton("Stop")
        self.stop_button.clicked.connect(self.stop)
        self.again_button = QPushButton("Try again")
        self.again_button.setToolTip("New completions with another seed.")
        self.again_button.clicked.connect(self._again)
        self.again_button.setEnabled(False)
        self.close_button = QPushButton("Close")
        self.close_button.clicked.connect(self.close)
        buttons = QHBoxLayout()
        buttons.addWidget(self.stop_button)
        buttons.addStretch(1)
        buttons.addWidget(self.again_button)
        buttons.addWidget(self.close_button)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addWidget(self.status)
        layout.addWidget(self.busy)
        layout.addWidget(self.findings)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.log_section)
        layout.addLayout(buttons)
        self._seed_offset = 0

    # ------------------------------------------------------------------ run
    def start(self) -> None:
        """Launch the trial worker (asynchronously; events arrive on the GUI thread)."""
        from dataclasses import replace

        self._cleanup_dir()
        self._work_dir = tempfile.mkdtemp(prefix="alignstudio-trial-")
        cfg = replace(self.cfg, seed=int(getattr(self.cfg, "seed", 0) or 0) + self._seed_offset)
        try:
            command, env = trial_launch(cfg, self._work_dir, prompts=self._prompts, completions=self._completions)
        except (OSError, ValueError) as exc:
            self._show_failure(TrialFailed(kind="bad_config", message=f"The trial could not start: {exc}"))
            return
        process = QProcess(self)
        environment = QProcessEnvironment()
        for key, value in env.items():
            environment.insert(key, value)
        process.setProcessEnvironment(environment)
        process.setWorkingDirectory(self._work_dir)
        process.readyReadStandardOutput.connect(self._read_events)
        process.readyReadStandardError.connect(self._read_log)
        process.finished.connect(self._on_exit)
        self._process = process
        self._buffer = b""
        self.outcome = None
        self.status.setText("Starting the trial worker…")
        self.busy.setVisible(True)
        self.stop_button.setEnabled(True)
        self.again_button.setEnabled(False)
        process.start(command[0], command[1:])

    def stop(self) -> None:
        process = self._process
        if process is None or process.state() == QProcess.ProcessState.NotRunning:
            return
        self.status.setText("Stopping…")
        self.stop_button.setEnabled(False)
        process.write(b"stop\n")
        # A grader that never returns cannot hear the request: the worker is ended after a grace period.
        QTimer.singleShot(STOP_GRACE_MS, lambda p=process: p.kill() if p.state() != QProcess.ProcessState.NotRunning
                          else None)

    def _again(self) -> None:
        self._seed_offset += 1000
        self.table.clear()
        self.findings.setVisible(False)
        self.start()

    def is_running(self) -> bool:
        return self._process is not None and self._process.state() != QProcess.ProcessState.NotRunning

    # --------------------------------------------------------------- events
    def _read_events(self) -> None:
        if self._process is None:
            return
        self._buffer += bytes(self._process.readAllStandardOutput())
        *lines, self._buffer = self._buffer.split(b"\n")
        for raw in lines:
            line = raw.decode("utf-8", errors="replace").strip()
            if not line.startswith("{"):
                continue
            try:
                event = trial_event_from_json(line)
            except (ValueError, TypeError):
                continue
            self.handle_event(event)

    def handle_event(self, event) -> None:
        if isinstance(event, TrialPhase):
            self.status.setText(event.message or event.phase.replace("_", " ").capitalize())
        elif isinstance(event, TrialResult):
            self._show_result(event)
        elif isinstance(event, TrialFailed):
            self._show_failure(event)

    def _read_log(self) -> None:
        if self._process is not None:
            text = bytes(self._process.readAllStandardError()).decode("utf-8", errors="replace")
            self.log.appendPlainText(text.rstrip("\n"))

    def _on_exit(self, code: int, _status) -> None:
        self._read_events()
        self._read_log()
        if self.outcome is None:
            self._show_failure(TrialFailed(kind="crash", message=f"The trial worker ended (exit code {code}) "
                                                                 "without a result.",
                                           hint="The worker log below says why."))
        self.busy.setVisible(False)
        self.stop_button.setEnabled(False)
        self.again_button.setEnabled(True)

    def _show_result(self, result: TrialResult) -> None:
        self.outcome = result
        flagged = [g for g in result.graders if g.get("finding")]
        prompts = len({r["prompt_index"] for r in result.rows})
        self.status.setText(
            f"{len(result.rows)} completions for {prompts} prompts by {result.model or 'the base model'}, scored "
            f"in {result.seconds:.0f} s. " + (f"{len(flagged)} of {len(result.graders)} graders need a look."
                                              if flagged else "Every grader scored and told completions apart."))
        self.findings.setText("<br>".join(describe_grader(g, result.rows) for g in result.graders))
        self.findings.setVisible(True)
        self.table.add_batch(_TrialBatch(result))
        self.table.summary.setText(self.table.summary.text().replace("step 0 · ", ""))
        self.sig_finished.emit(result)

    def _show_failure(self, failure: TrialFailed) -> None:
        self.outcome = failure
        self.status.setText(("The trial was stopped." if failure.kind == "stopped" else
                             f"The trial failed: {failure.message}") + (f" {failure.hint}" if failure.hint else ""))
        if failure.kind not in ("stopped",):
            self.log_section.set_expanded(True)
        self.busy.setVisible(False)
        self.sig_finished.emit(failure)

    # ------------------------------------------------------------- closing
    def closeEvent(self, event) -> None:
        if self.is_running():
            self._process.kill()
            self._process.waitForFinished(3000)
        self._cleanup_dir()
        super().closeEvent(event)

    def _cleanup_dir(self) -> None:
        if self._work_dir:
            shutil.rmtree(self._work_dir, ignore_errors=True)
            self._work_dir = ""
