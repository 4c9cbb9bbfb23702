"""Build llama-server from the window: runs `gpuwarden setup llama-server` as a child
process (QProcess; the window stays usable), shows the step, the compile percentage and
the output, and can be cancelled. Show it with :meth:`BuildDialog.show` and call
:meth:`BuildDialog.start`; keep it alive (parented, not deleted on close) until it ends.

Cancel stops the whole build: the command runs in its own session (POSIX), and Cancel sends
the session SIGINT, as Ctrl+C in a terminal would (the build removes its temporary folder),
then SIGKILL to whatever is left after ``kill_grace_s`` or once the command itself ended.
"""

from __future__ import annotations

import codecs
import contextlib
import logging
import os
import re
import signal
from collections import deque
from collections.abc import Sequence

from PySide6.QtCore import QCoreApplication, QProcess, QProcessEnvironment, Qt, QTimer, Signal, Slot
from PySide6.QtGui import QFontDatabase
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from gpuwarden.widgets.build_progress import (
    PHASE_WORDS,
    Phase,
    build_argv,
    built_path,
    error_text,
    exit_words,
    nvcc_on_path,
    parse_progress,
)
from gpuwarden.widgets.theme import Theme

log = logging.getLogger(__name__)

OUTPUT_LINES = 500  # kept in the output view
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_POSIX = os.name == "posix" and hasattr(QProcess, "setUnixProcessParameters")


class _Session:
    """The build's own session (POSIX): its process group, signalled as one."""

    def __init__(self) -> None:
        self.pgid: int | None = None

    def signal(self, sig: signal.Signals) -> None:
        if self.pgid is None:
            return
        with contextlib.suppress(ProcessLookupError):  # nothing of it is left
            os.killpg(self.pgid, sig)


class BuildDialog(QDialog):
    """``finished_ok()`` once the build succeeded; :attr:`binary` is then where it is.
    ``theme`` colours the outcome (green done, red failed); without one it stays plain."""

    finished_ok = Signal()

    def __init__(self, parent: QWidget | None = None, argv: Sequence[str] | None = None,
                 *, kill_grace_s: float = 5.0, theme: Theme | None = None) -> None:
        super().__init__(parent)
        self._theme = theme
        self._argv = list(argv) if argv is not None else build_argv(cuda=nvcc_on_path())
        self.binary: str | None = None
        self._phase: Phase | None = None
        self._percent = -1
        self._error: str | None = None
        self._tail: deque[str] = deque(maxlen=12)
        self._partial = ""
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._cancelling = False
        self._session = _Session()
        self._process = self._make_process()
        self._kill_timer = QTimer(self)
        self._kill_timer.setSingleShot(True)
        self._kill_timer.setInterval(round(kill_grace_s * 1000))
        self._kill_timer.timeout.connect(self._kill_all)
        self._build_ui()

    # -- the layout -----------------------------------------------------------------------

    def _build_ui(self) -> None:
        flavour = "with CUDA" if "--cuda" in self._argv else "for the CPU"
        self.setWindowTitle("Build llama-server")
        intro = QLabel(f"gpuwarden builds llama.cpp's server from source, {flavour}, once "
                       "for this machine. It takes about 5 to 10 minutes (longer with "
                       "CUDA); you can keep working meanwhile.")
        intro.setWordWrap(True)
        self.status = QLabel("Starting…")
        self.status.setObjectName("buildStatus")
        font = self.status.font()
        font.setBold(True)
        self.status.setFont(font)
        self.bar = QProgressBar()
        self.bar.setRange(0, 0)  # busy until the compiler says how far it is
        self.detail = QLabel()
        self.detail.setObjectName("buildDetail")
        self.detail.setWordWrap(True)
        self.detail.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.detail.hide()
        self.output_toggle = QToolButton()
        self.output_toggle.setCheckable(True)
        self.output_toggle.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.output_toggle.setAutoRaise(True)
        self.output_toggle.toggled.connect(self._show_output)
        self.output = QPlainTextEdit()
        self.output.setReadOnly(True)
        self.output.setMaximumBlockCount(OUTPUT_LINES)
        self.output.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.output.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.output.setMinimumHeight(220)
        buttons = QDialogButtonBox()
        self.cancel_button: QPushButton = buttons.addButton(
            QDialogButtonBox.StandardButton.Cancel)
        self.cancel_button.clicked.connect(self.cancel)
        self.close_button: QPushButton = buttons.addButton(
            QDialogButtonBox.StandardButton.Close)
        self.close_button.clicked.connect(self.accept)
        self.close_button.hide()
        self._layout = layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addWidget(self.status)
        layout.addWidget(self.bar)
        layout.addWidget(self.detail)
        layout.addWidget(self.output_toggle, 0, Qt.AlignmentFlag.AlignLeft)
        layout.addWidget(self.output, 1)
        layout.addStretch(0)  # takes the slack only while the output is hidden
        layout.addWidget(buttons)
        self.setMinimumWidth(520)
        self._show_output(False)

    @Slot(bool)
    def _show_output(self, shown: bool) -> None:
        self.output.setVisible(shown)
        self.output_toggle.setArrowType(Qt.ArrowType.DownArrow if shown
                                        else Qt.ArrowType.RightArrow)
        self.output_toggle.setText("Hide output" if shown else "Show output")
        if shown:
            self._follow_end()
        # Grow to show the output, shrink back without it; the width stays the user's.
        QTimer.singleShot(0, self, self._fit_height)  # once the layout has settled

    @Slot()
    def _fit_height(self) -> None:
        layout = self._layout
        layout.invalidate()  # children shown or hidden just now count
        layout.activate()
        self.resize(self.width(), layout.totalHeightForWidth(self.width())
                    if layout.hasHeightForWidth() else self.sizeHint().height())

    def _follow_end(self) -> None:
        """The newest lines, from their start (a long line must not scroll the view)."""
        self.output.verticalScrollBar().setValue(self.output.verticalScrollBar().maximum())
        self.output.horizontalScrollBar().setValue(0)

    # -- the process ------------------------------------------------------------------------

    def _make_process(self) -> QProcess:
        process = QProcess(self)
        process.setProcessChannelMode(QProcess.ProcessChannelMode.MergedChannels)
        env = QProcessEnvironment.systemEnvironment()
        env.insert("PYTHONUNBUFFERED", "1")
        process.setProcessEnvironment(env)
        if _POSIX:
            params = QProcess.UnixProcessParameters()
            params.flags = (QProcess.UnixProcessFlag.CreateNewSession
                            | QProcess.UnixProcessFlag.ResetSignalHandlers)
            process.setUnixProcessParameters(params)
        process.readyReadStandardOutput.connect(self._read)
        process.started.connect(self._started)
        process.finished.connect(self._finished)
        process.errorOccurred.connect(self._error_occurred)
        return process

    @property
    def running(self) -> bool:
        return self._process.state() != QProcess.ProcessState.NotRunning

    def start(self) -> None:
        """Start the build (once)."""
        if self.running or self._phase is not None:
            return
        app = QCoreApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.stop_now)
        self._process.start(self._argv[0], self._argv[1:])

    @Slot()
    def _started(self) -> None:
        self._process.closeWriteChannel()
        if _POSIX:
            self._session.pgid = self._process.processId()  # its session: pgid == pid
        if self._cancelling:  # cancelled while it was starting
            self._interrupt()

    @Slot()
    def cancel(self) -> None:
        """Stop the build and everything it started (cmake, make, the compilers)."""
        if not self.running or self._cancelling:
            return
        self._cancelling = True
        self.status.setText("Stopping the build…")
        self.cancel_button.setEnabled(False)
        self._interrupt()
        self._kill_timer.start()

    def _interrupt(self) -> None:
        if self._session.pgid is not None:
            self._session.signal(signal.SIGINT)
        elif not _POSIX:
            self._process.terminate()
        # else: still starting; _started interrupts it

    @Slot()
    def _kill_all(self) -> None:
        if self._session.pgid is not None:
            self._session.signal(signal.SIGKILL)
        else:
            self._process.kill()

    @Slot()
    def stop_now(self) -> None:
        """Stop the build before the application quits (waits up to the grace period)."""
        if not self.running:
            return
        self.cancel()
        if not self._process.waitForFinished(self._kill_timer.interval()):
            self._kill_all()
            self._process.waitForFinished(1000)

    def reject(self) -> None:
        """Closing the dialog (Esc, its close button) while it builds cancels the build."""
        self.cancel()
        super().reject()

    # -- what it says -------------------------------------------------------------------------

    @Slot()
    def _read(self) -> None:
        data = self._process.readAllStandardOutput().data()
        self._take(self._decoder.decode(bytes(data)))

    def _take(self, text: str, final: bool = False) -> None:
        *lines, self._partial = _LINE_BREAK.split(self._partial + text)
        if final and self._partial:
            lines.append(self._partial)
            self._partial = ""
        if not lines:
            return
        bar = self.output.verticalScrollBar()
        following = bar.value() == bar.maximum()  # not while the user reads further up
        self.output.appendPlainText("\n".join(lines))
        if following:
            self._follow_end()
        for line in lines:
            self._follow(line)

    def _follow(self, line: str) -> None:
        if line.strip():
            self._tail.append(line)
        self.binary = built_path(line) or self.binary
        self._error = error_text(line) or self._error
        phase, percent = parse_progress(line)
        if percent is not None and percent > self._percent:
            self._percent = percent
            self.bar.setRange(0, 100)
            self.bar.setValue(percent)
        if phase is not None:
            self._phase = phase
        if self._phase is not None and not self._cancelling:
            self.status.setText(self._phase_text(self._phase))

    def _phase_text(self, phase: Phase) -> str:
        if phase == "compile" and self._percent >= 0:
            return f"Compiling: {self._percent} %"
        return PHASE_WORDS[phase]

    @Slot(int, QProcess.ExitStatus)
    def _finished(self, code: int, status: QProcess.ExitStatus) -> None:
        self._take(self._decoder.decode(b"", final=True), final=True)
        self._kill_timer.stop()
        crashed = status == QProcess.ExitStatus.CrashExit
        if self._cancelling:
            self._kill_all()  # what ignored SIGINT dies with its parent gone
            self._end("Build cancelled.", "Nothing was installed.", ok=False)
        elif code == 0 and not crashed:
            where = f"Binary: {self.binary}\n" if self.binary else ""
            self._end("Done: llama-server is built.",
                      f"{where}Models that use llama-server can be loaded now.", ok=True)
            self.finished_ok.emit()
        else:
            self._failed(f"The build failed: {exit_words(code, crashed)}.")
        self._session.pgid = None

    @Slot(QProcess.ProcessError)
    def _error_occurred(self, error: QProcess.ProcessError) -> None:
        if error == QProcess.ProcessError.FailedToStart:  # no finished() follows
            self._error = f"{self._argv[0]}: {self._process.errorString()}"
            self._failed("The build could not be started.")

    def _failed(self, words: str) -> None:
        why = self._error or (self._tail[-1] if self._tail else "it printed nothing")
        self._end(words, why, ok=False)
        self.output_toggle.setChecked(True)

    def _end(self, status: str, detail: str, *, ok: bool) -> None:
        self._phase = "done" if ok else "failed"
        self.status.setText(status)
        if self._theme is not None:
            colour = self._theme.state_ok if ok else self._theme.state_bad
            self.status.setStyleSheet(f"color: {colour};")
        self.detail.setText(detail)
        self.detail.show()
        self.bar.setRange(0, 100)
        self.bar.setValue(100 if ok else max(self._percent, 0))
        self.cancel_button.hide()
        self.close_button.show()
        self.close_button.setDefault(True)
        self.close_button.setFocus()
