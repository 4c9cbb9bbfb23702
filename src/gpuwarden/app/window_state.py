"""What the window remembers between runs (QSettings): its geometry, the splitter, the
models table's columns and sort, and the time range of the graphs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import QByteArray, QSettings

if TYPE_CHECKING:
    from gpuwarden.app.window import MainWindow

GEOMETRY, SPLITTER, MODELS_SPLITTER, MODEL_COLUMNS, TIME_RANGE = (
    "window/geometry", "window/splitter", "models/splitter", "models/header",
    "graphs/window_s")


def save_state(window: MainWindow, settings: QSettings) -> None:
    settings.setValue(GEOMETRY, window.saveGeometry())
    if window.split_moved_by_user:
        settings.setValue(SPLITTER, window.splitter.saveState())
    settings.setValue(MODELS_SPLITTER, window.models_splitter.saveState())
    settings.setValue(MODEL_COLUMNS, window.model_panel.table.horizontalHeader().saveState())
    settings.setValue(TIME_RANGE, window.window_seconds)
    settings.sync()


def restore_state(window: MainWindow, settings: QSettings) -> None:
    """Put back what :func:`save_state` kept; a missing or damaged value keeps the
    default layout."""
    geometry = settings.value(GEOMETRY)
    if isinstance(geometry, QByteArray):
        window.restoreGeometry(geometry)
    splitter = settings.value(SPLITTER)
    if isinstance(splitter, QByteArray) and window.splitter.restoreState(splitter):
        window.split_moved_by_user = True
    beside = settings.value(MODELS_SPLITTER)
    if isinstance(beside, QByteArray):
        window.models_splitter.restoreState(beside)
    header = settings.value(MODEL_COLUMNS)
    if isinstance(header, QByteArray) and \
            window.model_panel.table.horizontalHeader().restoreState(header):
        window.model_panel.fit_columns = False
        window.model_panel.set_column_modes()  # not an older version's saved modes
    try:
        seconds = float(settings.value(TIME_RANGE, window.window_seconds))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return
    window.set_window_seconds(seconds)
