"""The app's own preferences, kept per user in QSettings (not in the config file): read
here the same way by the Settings dialog and by whatever starts or quits gpuwarden."""

from __future__ import annotations

import math

from PySide6.QtCore import QSettings

LEAVE_RUNNING = "app/leave_running"  # bool: leave the model servers running on quit
HISTORY_S = "app/history_s"  # float: seconds of history kept (from the next start)
DEFAULT_HISTORY_S = 3600.0  # as `--history`
MAX_HISTORY_S = 86400.0  # as `--history`: a day of samples; memory grows with it
MIN_HISTORY_S = 60.0


def leave_running(prefs: QSettings) -> bool:
    """Whether models are left running when gpuwarden quits (default: stopped)."""
    value = prefs.value(LEAVE_RUNNING, False)
    if isinstance(value, str):  # an INI file holds "true" / "false"
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value)


def history_seconds(prefs: QSettings) -> float:
    """Seconds of history to keep; the default for a missing or unusable value."""
    try:
        value = float(str(prefs.value(HISTORY_S, DEFAULT_HISTORY_S)))
    except ValueError:
        return DEFAULT_HISTORY_S
    if not math.isfinite(value) or not MIN_HISTORY_S <= value <= MAX_HISTORY_S:
        return DEFAULT_HISTORY_S
    return value
