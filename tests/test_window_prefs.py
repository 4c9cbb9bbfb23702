"""Settings > Window: what closing the window does, start minimised, start at login (the
autostart entry, in the tests' private XDG folders) and each kind of notification, kept
for the user and read back by the next dialog."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import QSettings, Qt
from PySide6.QtWidgets import QLabel

import tray_rig
from gpuwarden.desktop_install import MINIMIZED_FLAG, Places
from gpuwarden.engine.lifecycle.config import Config
from gpuwarden.widgets import app_prefs
from gpuwarden.widgets.settings_dialog import SettingsDialog
from gpuwarden.widgets.theme import DARK
from test_settings_dialog import save

with_tray = tray_rig.with_tray  # a fixture

pytestmark = pytest.mark.qt


@pytest.fixture
def prefs(tmp_path: Path) -> QSettings:
    return QSettings(str(tmp_path / "gpuwarden.ini"), QSettings.Format.IniFormat)


@pytest.fixture
def open_dialog(qtbot, prefs: QSettings):
    def _open() -> SettingsDialog:
        dialog = SettingsDialog(DARK, Config(), None, prefs)
        qtbot.addWidget(dialog)
        dialog.open()
        dialog.tabs.setCurrentWidget(dialog.window_prefs)
        return dialog

    return _open


def test_the_window_tab_round_trips_through_qsettings(qtbot, with_tray, open_dialog, prefs):
    first = open_dialog().window_prefs
    assert first.close_action.currentData() == "ask" and not first.start_minimized.isChecked()
    assert all(box.isChecked() for box in first.notify.values())
    assert first.findChild(QLabel, "noTrayNote") is None and first.close_action.isEnabled()
    first.close_action.setCurrentIndex(first.close_action.findData("tray"))
    first.start_minimized.setChecked(True)
    first.notify["model.crashed"].setChecked(False)
    assert save(qtbot, first.window()) == [
        app_prefs.CLOSE_ACTION, app_prefs.START_MINIMIZED, app_prefs.NOTIFY + "model.crashed"]
    assert app_prefs.close_action(prefs) == "tray" and app_prefs.start_minimized(prefs)
    assert not app_prefs.notify(prefs, "model.crashed")
    assert app_prefs.notify(prefs, "gpu.lost")
    second = open_dialog().window_prefs
    assert second.close_action.currentText() == "Keep running in the tray"
    assert second.start_minimized.isChecked()
    assert not second.notify["model.crashed"].isChecked()


def test_start_at_login_writes_and_removes_the_autostart_entry(qtbot, open_dialog):
    entry = Places.from_env().autostart_entry  # under the tests' own XDG_CONFIG_HOME
    dialog = open_dialog()
    box = dialog.window_prefs.start_at_login
    assert box is not None and not box.isChecked() and not entry.exists()
    box.setChecked(True)
    assert save(qtbot, dialog) == ["app/start_at_login"]
    assert f" {MINIMIZED_FLAG}" in entry.read_text()  # it starts in the tray
    again = open_dialog()
    assert again.window_prefs.start_at_login.isChecked()
    again.window_prefs.start_at_login.setChecked(False)
    assert save(qtbot, again) == ["app/start_at_login"]
    assert not entry.exists()


def test_an_autostart_entry_made_by_hand_is_left_and_the_dialog_says_so(qtbot, open_dialog):
    entry = Places.from_env().autostart_entry
    entry.parent.mkdir(parents=True)
    entry.write_text("[Desktop Entry]\nType=Application\nExec=gpuwarden-gui\n")
    dialog = open_dialog()
    assert dialog.window_prefs.start_at_login.isChecked()
    dialog.window_prefs.start_at_login.setChecked(False)
    qtbot.mouseClick(dialog.save_button, Qt.MouseButton.LeftButton)
    assert dialog.isVisible() and entry.exists()
    assert dialog.problem.text() == (f"Not saved: “Start gpuwarden at login, minimised to the "
                                     f"tray”: {entry} was not written by gpuwarden: remove it "
                                     "by hand. Nothing was saved.")


def test_without_a_tray_its_settings_are_off_and_the_tab_says_why(qtbot, open_dialog):
    page = open_dialog().window_prefs  # offscreen: no tray
    note = page.findChild(QLabel, "noTrayNote")
    assert note is not None and "no system tray" in note.text()
    assert not page.close_action.isEnabled() and not page.start_minimized.isEnabled()
    assert not any(box.isEnabled() for box in page.notify.values())
    assert page.leave_running.isEnabled()
