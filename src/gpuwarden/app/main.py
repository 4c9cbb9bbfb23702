"""Start the desktop app."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QSettings, QTimer
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QApplication

from gpuwarden.app.bridge import EngineBridge
from gpuwarden.app.single_window import hand_over_to_running_window, watch_for_second_launch
from gpuwarden.app.window import MainWindow
from gpuwarden.engine.facade import Engine
from gpuwarden.engine.runtime import TelemetryOptions, take_snapshot
from gpuwarden.startup import catch_stop_signals, run_engine
from gpuwarden.widgets.app_prefs import history_seconds, leave_running, start_minimized
from gpuwarden.widgets.theme import apply_palette, pick_theme

if TYPE_CHECKING:
    from gpuwarden.remote.engine import RemoteEngine

ORG = APP = "gpuwarden"  # where QSettings keeps the window's state and the app's preferences
RESOURCES = Path(__file__).resolve().parent.parent / "resources"


def has_display() -> bool:
    """Whether a window can be shown: a desktop session, or a Qt platform chosen by hand."""
    if os.environ.get("QT_QPA_PLATFORM"):
        return True
    if sys.platform != "linux":
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def no_display_fallback(options: TelemetryOptions) -> int:
    from gpuwarden.console import render_status

    print(
        "gpuwarden: no graphical display found (DISPLAY and WAYLAND_DISPLAY are not set), "
        "so the window cannot open.\nHere is one snapshot instead; `gpuwarden status` prints "
        "one any time.\n",
        file=sys.stderr,
    )
    print(render_status(take_snapshot(options)))
    return 0


def run_gui(args: argparse.Namespace, options: TelemetryOptions) -> int:
    if not has_display():
        return no_display_fallback(options)
    if getattr(args, "attach", None):
        return run_attached(args)
    if args.history is None:  # the Settings dialog's default, else an hour
        options = replace(options, history_s=history_seconds(QSettings(ORG, APP)))
    return run_engine(args.config, args.interval, options, lambda engine: _run_window(
        engine, args), on_already_running=hand_over_to_running_window)


def run_attached(args: argparse.Namespace) -> int:
    """`gpuwarden --attach URL`: the panel on an engine elsewhere (no engine here, no
    single-instance lock: a local gpuwarden may run beside it)."""
    from gpuwarden.remote.engine import RemoteEngine
    from gpuwarden.remote.token import TokenMissing, attach_token

    _application(args)
    try:
        token = attach_token(args.token_file, ask=_ask_token)
    except TokenMissing as exc:
        print(f"gpuwarden: error: {exc}", file=sys.stderr)
        return 2
    return _run_window(RemoteEngine(args.attach, token), args, attached=True)


def _ask_token() -> str | None:
    from PySide6.QtWidgets import QInputDialog, QLineEdit

    text, ok = QInputDialog.getText(None, "Attach to gpuwarden",
                                    "The API token (its api-token file on that machine):",
                                    QLineEdit.EchoMode.Password)
    return text.strip() if ok and text.strip() else None


def _application(args: argparse.Namespace) -> QApplication:
    app = QApplication.instance() or QApplication(sys.argv[:1])
    assert isinstance(app, QApplication)
    return app


def _run_window(engine: Engine | RemoteEngine, args: argparse.Namespace, *,
                attached: bool = False) -> int:
    app = _application(args)
    app.setApplicationName(APP)
    app.setOrganizationName(ORG)
    app.setDesktopFileName("gpuwarden")
    app.setWindowIcon(QIcon(str(RESOURCES / "gpuwarden.svg")))
    theme = pick_theme(args.theme)
    apply_palette(app, theme)
    bridge = EngineBridge(engine, leave_running=args.leave_running)
    prefs = QSettings(ORG, APP)
    bridge.set_leave_running(leave_running(prefs))
    window = MainWindow(bridge, theme, prefs)
    if attached:
        window.setWindowTitle(f"gpuwarden — {args.attach}")
    app.setQuitOnLastWindowClosed(False)  # hidden in the tray is not closed; quit() ends it
    window.tray.closing.show_at_start(args.minimized or start_minimized(prefs))
    # a second launch brings this window forward (not an attached one: it is no engine)
    beacon = None if attached else watch_for_second_launch(window)
    # Ctrl+C, a closed terminal (SIGHUP), kill: quit as the menu does, caught before the
    # engine starts a model. Python handles signals only when it runs (the pulse). Every
    # quit closes the window first (hidden or not): its engine and models stop.
    restore_signals = catch_stop_signals(lambda _sig: QTimer.singleShot(0, window.tray.quit))
    bridge.start()
    pulse = QTimer()
    pulse.timeout.connect(lambda: None)
    pulse.start(250)
    if args.quit_after:
        QTimer.singleShot(round(args.quit_after * 1000), window.tray.quit)
    try:
        return app.exec()
    finally:
        if beacon is not None:
            beacon.close()  # while the models stop, a second launch is told gpuwarden runs
        bridge.stop()
        restore_signals()
