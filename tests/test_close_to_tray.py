"""Closing the window with a tray: asked once (remembered), hidden there with the engine and
its models running, and quit for real from the tray or Ctrl+Q. Without a tray closing quits,
as before, and the app says why. --minimized starts in the tray."""

from __future__ import annotations

import argparse
import logging
import signal
from pathlib import Path

import pytest
from PySide6.QtCore import QSettings, QTimer
from PySide6.QtWidgets import QApplication, QMessageBox

import tray_rig
from gpuwarden.app.bridge import EngineBridge, running_engine_threads
from gpuwarden.app.window import MainWindow
from gpuwarden.cli import build_parser
from gpuwarden.engine.lifecycle.config import Config
from gpuwarden.widgets import app_prefs
from gpuwarden.widgets.theme import DARK
from lifecycle_helpers import model
from test_window import simulated

tray_window = tray_rig.tray_window  # fixtures
with_tray = tray_rig.with_tray

pytestmark = [pytest.mark.qt, pytest.mark.qt_log_ignore("This plugin does not support raise")]

CHAT = Config(models=(model("chat", vram_mib=2000.0, load_time_s=0.1, autostart=True),))


def engine_kept(config: Config = CHAT):
    """A factory that keeps the engine it made: ``factory, engines``."""
    engines: list = []

    def factory():
        engines.append(simulated(1, config)())
        return engines[-1]

    return factory, engines


def ready(bridge) -> bool:
    return bool(bridge.rows) and bridge.rows[0].state == "ready"


def test_closing_asks_once_then_hides_to_the_tray_with_the_models_running_until_quit(
        qtbot, tray_window):
    factory, engines = engine_kept()
    bridge, window, posted = tray_window(factory)
    closing = window.tray.closing
    qtbot.waitUntil(lambda: ready(bridge), timeout=10_000)
    assert not window.close()  # the close waits for the answer
    assert window.isVisible() and closing.question is not None
    assert closing.question.checkBox().isChecked()  # remembered unless unticked
    assert closing.quit_button.text() == "Quit and stop the models"
    closing.keep_button.click()
    assert not window.isVisible() and closing.question is None
    assert app_prefs.close_action(window.prefs) == "tray"
    assert [n.title for n in posted] == ["gpuwarden is still running"]
    seq = bridge.latest.seq
    qtbot.waitUntil(lambda: bridge.latest.seq >= seq + 4, timeout=10_000)  # still sampling
    assert running_engine_threads() and ready(bridge)
    window.tray.open_window()
    assert not window.close() and closing.question is None  # remembered: not asked again
    assert not window.isVisible() and len(posted) == 1  # said once
    window.tray.quit()
    assert running_engine_threads() == []
    assert engines[0].models()[0].state == "unloaded"  # quitting stopped it


def test_quit_in_the_question_quits_and_is_remembered(qtbot, tray_window, tmp_path: Path):
    bridge, window, _ = tray_window(simulated(1, CHAT))
    qtbot.waitUntil(lambda: ready(bridge), timeout=10_000)
    window.close()
    window.tray.closing.quit_button.click()
    assert running_engine_threads() == [] and not window.isVisible()
    assert app_prefs.close_action(window.prefs) == "quit"


def test_cancel_keeps_the_window_and_remembers_nothing(qtbot, tray_window):
    _, window, _ = tray_window(simulated(1, CHAT))
    closing = window.tray.closing
    window.close()
    closing.question.checkBox().setChecked(True)
    closing.question.reject()  # Cancel, or Escape
    assert window.isVisible() and running_engine_threads()
    assert app_prefs.close_action(window.prefs) == "ask"
    window.close()  # asked again
    closing.question.checkBox().setChecked(False)
    closing.keep_button.click()
    assert not window.isVisible() and app_prefs.close_action(window.prefs) == "ask"


def test_ctrl_q_quits_even_when_closing_hides_to_the_tray(qtbot, tray_window):
    bridge, window, _ = tray_window(simulated(1, CHAT))
    window.prefs.setValue(app_prefs.CLOSE_ACTION, "tray")
    qtbot.waitUntil(lambda: ready(bridge), timeout=10_000)
    window.menus.quit.trigger()
    assert running_engine_threads() == [] and not window.isVisible()


def test_without_a_tray_closing_quits_and_the_app_says_why(qtbot, open_window, caplog):
    caplog.set_level(logging.WARNING, logger="gpuwarden.app.tray")
    _, window = open_window(simulated(1, CHAT))
    assert window.tray.icon is None
    assert window.command_label.text().startswith("No system tray on this desktop: closing "
                                                  "the window quits gpuwarden")
    assert [r.getMessage() for r in caplog.records] == [
        "no system tray on this desktop: closing the window quits gpuwarden, and no "
        "desktop notifications are shown"]
    window.prefs.setValue(app_prefs.CLOSE_ACTION, "tray")  # no tray to keep it in
    assert window.close()
    assert window.tray.closing.question is None and running_engine_threads() == []


def minimized_window(qtbot) -> tuple[EngineBridge, MainWindow]:
    bridge = EngineBridge(simulated(1)())
    window = MainWindow(bridge, DARK)
    qtbot.addWidget(window)
    return bridge, window


def test_minimized_starts_in_the_tray_and_shows_the_window_without_one(
        qtbot, monkeypatch: pytest.MonkeyPatch):
    assert build_parser().parse_args(["--minimized"]).minimized
    assert not build_parser().parse_args([]).minimized
    monkeypatch.setattr(app_prefs, "tray_available", lambda: True)
    _, window = minimized_window(qtbot)
    window.tray.closing.show_at_start(True)
    assert not window.isVisible()
    window.tray.closing.quitting = True  # the test's end closes it
    monkeypatch.setattr(app_prefs, "tray_available", lambda: False)
    _, plain = minimized_window(qtbot)
    plain.tray.closing.show_at_start(True)
    assert plain.isVisible()
    assert "asked to start minimised" in plain.command_label.text()


def test_the_app_starts_minimised_and_quits_with_its_window_hidden(
        qtbot, with_tray, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """main's own start-up: --minimized (or the preference) starts with no window shown;
    --quit-after quits the hidden window, and the engine stops with it."""
    from gpuwarden.app import main

    monkeypatch.setattr(signal, "signal", lambda *_: None)  # keep pytest's own handlers
    app = QApplication.instance()
    palette, name = app.palette(), app.applicationName()
    QSettings(main.ORG, main.APP).setValue(app_prefs.START_MINIMIZED, True)
    before = set(QApplication.topLevelWidgets())
    seen: list[bool] = []
    alive: list[bool] = []

    def look() -> None:
        seen.extend(w.isVisible() for w in QApplication.topLevelWidgets()
                    if isinstance(w, MainWindow) and w not in before)

    def dialog_comes_and_goes() -> None:  # e.g. a load choice while the window is hidden
        box = QMessageBox()
        box.show()
        box.close()
        box.deleteLater()

    QTimer.singleShot(300, look)
    QTimer.singleShot(400, dialog_comes_and_goes)  # the last window closed: no quit
    QTimer.singleShot(600, lambda: alive.append(bool(running_engine_threads())))
    args = argparse.Namespace(theme="dark", leave_running=False, minimized=False,
                              quit_after=1.0)
    try:
        assert main._run_window(simulated(1, CHAT)(), args) == 0
    finally:
        app.setQuitOnLastWindowClosed(True)
        app.setPalette(palette)
        app.setApplicationName(name)
        for window in set(QApplication.topLevelWidgets()) - before:
            if isinstance(window, MainWindow):
                window.deleteLater()  # its menus and the rest go with it
    assert seen == [False] and alive == [True]
    assert running_engine_threads() == []
