"""The app's own preferences, kept per user in QSettings (not in the config file): read
here the same way by the Settings dialog and by whatever starts or quits gpuwarden."""

from __future__ import annotations

import math
from typing import Literal

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QSystemTrayIcon

LEAVE_RUNNING = "app/leave_running"  # bool: leave the model servers running on quit
HISTORY_S = "app/history_s"  # float: seconds of history kept (from the next start)
CLOSE_ACTION = "app/close_action"  # "tray" | "quit"; missing: ask when the window closes
START_MINIMIZED = "app/start_minimized"  # bool: start hidden in the tray (as --minimized)
NOTIFY = "app/notify/"  # + an event type (pressure.raised, ...): bool, default on
DEFAULT_HISTORY_S = 3600.0  # as `--history`
MAX_HISTORY_S = 86400.0  # as `--history`: a day of samples; memory grows with it
MIN_HISTORY_S = 60.0

CloseAction = Literal["ask", "tray", "quit"]
CLOSE_ACTIONS: tuple[CloseAction, ...] = ("ask", "tray", "quit")
# The desktop notifications that can be turned off, by event type (app/notices.py KINDS).
NOTIFY_LABELS = {
    "pressure.raised": "VRAM, RAM, CPU or disk pressure",
    "model.crashed": "A model crashed",
    "model.restart_exhausted": "A model gave up restarting",
    "gpu.lost": "A GPU was lost",
    "safety.emergency_stop": "An emergency stop",
}


def tray_available() -> bool:
    """Whether this desktop shows tray icons (tests replace it: offscreen has none)."""
    return QSystemTrayIcon.isSystemTrayAvailable()


def _flag(prefs: QSettings, key: str, default: bool) -> bool:
    value = prefs.value(key, default)
    if isinstance(value, str):  # an INI file holds "true" / "false"
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value)


def leave_running(prefs: QSettings) -> bool:
    """Whether models are left running when gpuwarden quits (default: stopped)."""
    return _flag(prefs, LEAVE_RUNNING, False)


def close_action(prefs: QSettings) -> CloseAction:
    """What closing the window does: hide it to the tray, quit, or ask (the default)."""
    value = str(prefs.value(CLOSE_ACTION, "ask"))
    return next((action for action in CLOSE_ACTIONS if action == value), "ask")


def start_minimized(prefs: QSettings) -> bool:
    """Whether gpuwarden starts hidden in the tray (default: the window shows)."""
    return _flag(prefs, START_MINIMIZED, False)


def notify(prefs: QSettings, kind: str) -> bool:
    """Whether desktop notifications of ``kind`` (an event type) are wanted (default on)."""
    return _flag(prefs, NOTIFY + kind, True)


def history_seconds(prefs: QSettings) -> float:
    """Seconds of history to keep; the default for a missing or unusable value."""
    try:
        value = float(str(prefs.value(HISTORY_S, DEFAULT_HISTORY_S)))
    except ValueError:
        return DEFAULT_HISTORY_S
    if not math.isfinite(value) or not MIN_HISTORY_S <= value <= MAX_HISTORY_S:
        return DEFAULT_HISTORY_S
    return value
