"""What closing the window does, and how gpuwarden starts and quits with a tray.

With a tray, closing the window hides it there (the engine and its models keep running)
or quits, as the user chose: asked the first time, remembered in Settings > Window
(``app/close_action``). Without a tray closing quits. Quitting for real (the tray's Quit,
File > Quit, Ctrl+C or SIGTERM) goes through :meth:`CloseToTray.quit`: the window closes,
the engine stops (its models too, unless left running), and the application ends. The
application never quits because its last window went: a hidden window is not a closed one.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject
from PySide6.QtGui import QCloseEvent
from PySide6.QtWidgets import QApplication, QCheckBox, QMessageBox, QPushButton

from gpuwarden.app.notices import Notice
from gpuwarden.widgets import app_prefs

if TYPE_CHECKING:
    from gpuwarden.app.tray import Tray
    from gpuwarden.app.window import MainWindow

log = logging.getLogger(__name__)

QUESTION = "Keep the models running in the tray?"
DETAIL = ("gpuwarden can stay in the system tray: the models keep serving and it keeps "
          "watching them. Its tray icon opens this window again.")
NO_TRAY_MINIMIZED = ("no system tray on this desktop: the window shows although gpuwarden "
                     "was asked to start minimised")


class CloseToTray(QObject):
    """The close decisions of ``window`` and its ``tray``. ``quitting``: a real quit is
    under way; ``question``: the close question while it is open."""

    def __init__(self, window: MainWindow, tray: Tray) -> None:
        super().__init__(window)
        self._window = window
        self._tray = tray
        self.quitting = False
        self.question: QMessageBox | None = None
        self.keep_button: QPushButton | None = None
        self.quit_button: QPushButton | None = None
        self._said_hidden = False

    def close_for_real(self, event: QCloseEvent) -> bool:
        """For the window's closeEvent: True when the window closes and gpuwarden quits;
        False when ``event`` was ignored (hidden to the tray, or asking first)."""
        if not self.quitting and self._tray.icon is not None:
            action = app_prefs.close_action(self._window.prefs)
            if action != "quit":
                event.ignore()
                if self.question is not None:
                    self.question.raise_()
                elif action == "tray":
                    self.hide_to_tray()
                else:
                    self.ask()
                return False
        self.quitting = True
        if self.question is not None:
            self.question.reject()
        if self._tray.icon is not None:
            self._tray.icon.hide()
        return True

    def closed(self) -> None:
        """The window has closed and its engine stopped: end the application."""
        QApplication.quit()

    def quit(self) -> None:
        """Quit for real, whatever closing the window would do."""
        self.quitting = True
        self._window.close()

    def hide_to_tray(self) -> None:
        self._window.hide()
        log.info("the window is hidden in the tray; the engine keeps running")
        if not self._said_hidden:
            self._said_hidden = True
            self._tray.post(Notice("hidden", "gpuwarden is still running",
                                   "Its models keep running. The tray icon opens the window "
                                   "again; its menu quits.", "info"))

    def ask(self) -> None:
        """The close question, without a nested event loop: the close that asked has been
        ignored; the answer hides the window, quits, or does nothing (Cancel)."""
        leave = app_prefs.leave_running(self._window.prefs)
        box = QMessageBox(QMessageBox.Icon.Question, "Close gpuwarden", QUESTION,
                          QMessageBox.StandardButton.NoButton, self._window)
        box.setInformativeText(DETAIL)
        self.keep_button = box.addButton("Keep running in the tray",
                                         QMessageBox.ButtonRole.AcceptRole)
        self.quit_button = box.addButton(
            "Quit, leaving the models running" if leave else "Quit and stop the models",
            QMessageBox.ButtonRole.DestructiveRole)
        box.addButton(QMessageBox.StandardButton.Cancel)
        box.setDefaultButton(self.keep_button)
        remember = QCheckBox("Remember my choice (Settings can change it)")
        remember.setChecked(True)
        box.setCheckBox(remember)
        box.finished.connect(lambda _: self._answered(box, remember.isChecked()))
        self.question = box
        box.open()

    def _answered(self, box: QMessageBox, remember: bool) -> None:
        clicked = box.clickedButton()
        self.question = None
        box.deleteLater()
        choice = "tray" if clicked is self.keep_button else \
            "quit" if clicked is self.quit_button else None
        if choice is None:
            return  # Cancel: the window stays
        if remember:
            self._window.prefs.setValue(app_prefs.CLOSE_ACTION, choice)
            self._window.prefs.sync()
        if choice == "tray":
            self.hide_to_tray()
        else:
            self.quit()

    def show_at_start(self, minimized: bool) -> None:
        """Show the window, unless ``minimized`` and there is a tray to start in."""
        if minimized and self._tray.icon is not None:
            log.info("started minimised to the tray")
            return
        self._window.show()
        if minimized:
            log.warning(NO_TRAY_MINIMIZED)
            self._window.show_answer(NO_TRAY_MINIMIZED[:1].upper() + NO_TRAY_MINIMIZED[1:],
                                     warning=True)
