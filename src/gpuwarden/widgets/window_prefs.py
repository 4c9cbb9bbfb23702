"""The Settings dialog's Window tab: the app's own preferences, kept in QSettings (leave the
models running on quit, what closing the window does, start minimised, the desktop
notifications) and starting at login (an XDG autostart entry, Linux)."""

from __future__ import annotations

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QCheckBox, QComboBox, QFormLayout, QLabel, QVBoxLayout, QWidget

from gpuwarden import login_start
from gpuwarden.widgets import app_prefs
from gpuwarden.widgets.theme import Theme

START_AT_LOGIN = "app/start_at_login"  # the name Save reports; kept as the autostart entry
LABELS = {
    app_prefs.LEAVE_RUNNING: "Leave models running when gpuwarden quits",
    app_prefs.CLOSE_ACTION: "When the window is closed",
    app_prefs.START_MINIMIZED: "Start minimised to the tray",
    START_AT_LOGIN: "Start gpuwarden at login, minimised to the tray",
    **{app_prefs.NOTIFY + kind: text for kind, text in app_prefs.NOTIFY_LABELS.items()},
}
CLOSE_TEXT = {"ask": "Ask each time", "tray": "Keep running in the tray",
              "quit": "Quit gpuwarden"}
SPACE = 10  # between the tab's groups
NO_TRAY = ("This desktop has no system tray: closing the window quits gpuwarden, it starts "
           "with its window shown, and no desktop notifications are shown.")


class WindowPrefs(QWidget):
    """The tab's controls, filled from ``prefs``; ``tray``: whether the desktop has a tray
    (None: ask it). Without one the tray's settings are shown but off."""

    def __init__(self, prefs: QSettings, theme: Theme, tray: bool | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.tray = app_prefs.tray_available() if tray is None else tray
        self.leave_running = QCheckBox(LABELS[app_prefs.LEAVE_RUNNING])
        self.leave_running.setChecked(app_prefs.leave_running(prefs))
        self.close_action = QComboBox()
        for action in app_prefs.CLOSE_ACTIONS:
            self.close_action.addItem(CLOSE_TEXT[action], action)
        self.close_action.setCurrentIndex(
            app_prefs.CLOSE_ACTIONS.index(app_prefs.close_action(prefs)))
        self.start_minimized = QCheckBox(LABELS[app_prefs.START_MINIMIZED])
        self.start_minimized.setChecked(app_prefs.start_minimized(prefs))
        self.start_at_login: QCheckBox | None = None
        self._login_before = False
        if login_start.supported():
            self._login_before = login_start.is_on()
            self.start_at_login = QCheckBox(LABELS[START_AT_LOGIN])
            self.start_at_login.setChecked(self._login_before)
        self.notify = {kind: QCheckBox(text) for kind, text in app_prefs.NOTIFY_LABELS.items()}
        for kind, box in self.notify.items():
            box.setChecked(app_prefs.notify(prefs, kind))
        self._build(theme)

    def _build(self, theme: Theme) -> None:
        layout = QVBoxLayout(self)
        layout.addWidget(_text("Kept for this user, not in the config file."))
        layout.addWidget(self.leave_running)
        layout.addWidget(_text("Their llama-server processes go on serving after gpuwarden "
                               "quits, and the next gpuwarden adopts them instead of "
                               "starting new ones (as --leave-running does for one run)."))
        layout.addSpacing(SPACE)
        if not self.tray:
            note = _text(NO_TRAY)
            note.setObjectName("noTrayNote")
            note.setStyleSheet(f"color: {theme.state_busy};")
            layout.addWidget(note)
            for widget in (self.close_action, self.start_minimized, *self.notify.values()):
                widget.setEnabled(False)
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.FieldsStayAtSizeHint)
        form.addRow(LABELS[app_prefs.CLOSE_ACTION] + ":", self.close_action)
        layout.addLayout(form)
        layout.addWidget(self.start_minimized)
        if self.start_at_login is not None:
            layout.addWidget(self.start_at_login)
        layout.addSpacing(SPACE)
        layout.addWidget(_text("Desktop notifications, a few a minute at most:"))
        for box in self.notify.values():
            layout.addWidget(box)
        layout.addStretch(1)

    def values(self) -> dict[str, object]:
        """The QSettings keys of this tab and the values its controls hold."""
        return {app_prefs.LEAVE_RUNNING: self.leave_running.isChecked(),
                app_prefs.CLOSE_ACTION: self.close_action.currentData(),
                app_prefs.START_MINIMIZED: self.start_minimized.isChecked(),
                **{app_prefs.NOTIFY + kind: box.isChecked()
                   for kind, box in self.notify.items()}}

    def save_login(self) -> bool:
        """Add or remove the autostart entry if the box changed; True when it did.
        :class:`gpuwarden.desktop_install.InstallError` or OSError: it could not."""
        box = self.start_at_login
        if box is None or box.isChecked() == self._login_before:
            return False
        if box.isChecked():
            login_start.turn_on()
        else:
            login_start.turn_off()
        self._login_before = box.isChecked()
        return True


def _text(text: str) -> QLabel:
    label = QLabel(text)
    label.setWordWrap(True)
    return label
