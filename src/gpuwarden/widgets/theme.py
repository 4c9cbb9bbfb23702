"""Colours for the graphs, in a dark and a light variant, picked from the Qt palette."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication

ThemeName = Literal["auto", "dark", "light"]


@dataclass(frozen=True)
class Theme:
    dark: bool
    background: str
    foreground: str
    vram: str
    temperature: str
    power: str
    util: str
    mem_util: str
    cpu: str
    ram: str
    swap: str
    limit: str  # hard limits: power limit, shutdown temperature, total memory
    warn: str  # soft limits: slowdown temperature
    banner_bg: str
    banner_fg: str
    # Model states in the table and command answers in the status bar.
    state_ok: str  # ready
    state_busy: str  # loading, waiting, stopping; refusals in the status bar
    state_bad: str  # crashed, restarting, gave up
    # Alerts: the banner's background and text by level (its accents are state_busy and
    # state_bad, which also colour a GPU's name and tab by its alerts).
    alert_warn_bg: str
    alert_warn_fg: str
    alert_error_bg: str
    alert_error_fg: str
    # The all-GPUs strip's bars: fill by how close a reading is to its limit, and the track.
    bar_ok: str
    bar_warn: str
    bar_error: str
    bar_track: str


DARK = Theme(
    dark=True, background="#1e1f22", foreground="#d7dae0",
    vram="#4fc3f7", temperature="#ffb74d", power="#ba68c8", util="#81c784", mem_util="#9fa8da",
    cpu="#64b5f6", ram="#f06292", swap="#a1887f", limit="#ef5350", warn="#ffca28",
    banner_bg="#4a3b12", banner_fg="#ffe9a8",
    state_ok="#81c784", state_busy="#ffca28", state_bad="#ff6e6e",
    alert_warn_bg="#4a3b12", alert_warn_fg="#ffe9a8", alert_error_bg="#5a1d20",
    alert_error_fg="#ffd9d9",
    bar_ok="#4caf50", bar_warn="#e0a800", bar_error="#e53935", bar_track="#34363b",
)

LIGHT = Theme(
    dark=False, background="#ffffff", foreground="#202124",
    vram="#0277bd", temperature="#e65100", power="#7b1fa2", util="#2e7d32", mem_util="#3949ab",
    cpu="#1565c0", ram="#c2185b", swap="#6d4c41", limit="#c62828", warn="#9a6700",
    banner_bg="#fff4ce", banner_fg="#4a3b12",
    state_ok="#2e7d32", state_busy="#9a5b00", state_bad="#c62828",
    alert_warn_bg="#fff4ce", alert_warn_fg="#4a3b12", alert_error_bg="#fde3e1",
    alert_error_fg="#5f1212",
    bar_ok="#66bb6a", bar_warn="#f9a825", bar_error="#e53935", bar_track="#e3e5e8",
)


def pick_theme(name: ThemeName = "auto") -> Theme:
    if name == "dark":
        return DARK
    if name == "light":
        return LIGHT
    app = QApplication.instance()
    if not isinstance(app, QApplication):
        return LIGHT
    scheme = app.styleHints().colorScheme()  # the desktop's own dark/light setting
    if scheme == Qt.ColorScheme.Dark:
        return DARK
    if scheme == Qt.ColorScheme.Light:
        return LIGHT
    window = app.palette().color(QPalette.ColorRole.Window)
    return DARK if window.lightness() < 128 else LIGHT


def apply_palette(app: QApplication, theme: Theme) -> None:
    """Make the whole window follow the chosen theme, not only the graphs."""
    palette = QPalette()
    base = QColor(theme.background)
    text = QColor(theme.foreground)
    window = base.lighter(115) if theme.dark else base.darker(104)
    for role, color in (
        (QPalette.ColorRole.Window, window),
        (QPalette.ColorRole.Base, base),
        (QPalette.ColorRole.AlternateBase, window),
        (QPalette.ColorRole.Button, window),
        (QPalette.ColorRole.WindowText, text),
        (QPalette.ColorRole.Text, text),
        (QPalette.ColorRole.ButtonText, text),
    ):
        palette.setColor(role, color)
    # Disabled text half way to the background: a disabled button must look disabled.
    dimmed = QColor((text.red() + window.red()) // 2, (text.green() + window.green()) // 2,
                    (text.blue() + window.blue()) // 2)
    for role in (QPalette.ColorRole.WindowText, QPalette.ColorRole.Text,
                 QPalette.ColorRole.ButtonText):
        palette.setColor(QPalette.ColorGroup.Disabled, role, dimmed)
    palette.setColor(QPalette.ColorRole.PlaceholderText, dimmed)  # "Search events"
    app.setPalette(palette)


def level_colour(theme: Theme, level: str) -> str | None:
    """The text colour for an alert level ("warning", "error"); None for "ok" (the
    palette's own)."""
    return {"warning": theme.state_busy, "error": theme.state_bad}.get(level)
