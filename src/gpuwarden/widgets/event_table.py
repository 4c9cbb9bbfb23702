"""The event log's Qt models: the events as a table (newest first, at most ``MAX_ROWS``)
and the filter the log's bar sets (model, severity, text)."""

from __future__ import annotations

import html
import time
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    Qt,
)
from PySide6.QtGui import QBrush, QColor

from gpuwarden.engine.events import Event, Severity
from gpuwarden.widgets.theme import Theme

TIME, SEVERITY, MODEL, WHAT = range(4)
HEADERS = ("Time", "Severity", "Model", "What")
MAX_ROWS = 2000
# The row's Event itself, for copy and export.
EVENT_ROLE = Qt.ItemDataRole.UserRole

SEVERITY_TEXT: dict[Severity, str] = {"info": "Info", "warning": "Warning", "error": "Error"}
SEVERITY_RANK: dict[Severity, int] = {"info": 0, "warning": 1, "error": 2}

Index = QModelIndex | QPersistentModelIndex


def time_text(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts))


def date_text(ts: float) -> str:
    """The full local date and time, for the tooltip and exports."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


@dataclass(frozen=True, slots=True)
class _Row:
    event: Event
    cells: tuple[str, str, str, str]  # TIME, SEVERITY, MODEL, WHAT as shown

    @classmethod
    def of(cls, event: Event) -> _Row:
        return cls(event, (time_text(event.ts), SEVERITY_TEXT[event.severity],
                           event.model_name or "", event.describe()))


class EventTableModel(QAbstractTableModel):
    """Events as rows, newest first. :meth:`add` inserts at the top and drops the oldest
    row past ``max_rows``; rows never change once shown."""

    def __init__(self, theme: Theme, parent: QObject | None = None,
                 max_rows: int = MAX_ROWS) -> None:
        super().__init__(parent)
        self._rows: list[_Row] = []
        self._max_rows = max_rows
        self._colours: dict[Severity, QBrush] = {
            "warning": QBrush(QColor(theme.state_busy)), "error": QBrush(QColor(theme.state_bad))}

    def add(self, event: Event) -> None:
        self.beginInsertRows(QModelIndex(), 0, 0)
        self._rows.insert(0, _Row.of(event))
        self.endInsertRows()
        if len(self._rows) > self._max_rows:
            first = self._max_rows
            self.beginRemoveRows(QModelIndex(), first, len(self._rows) - 1)
            del self._rows[first:]
            self.endRemoveRows()

    def event_at(self, row: int) -> Event:
        return self._rows[row].event

    def cells(self, row: int) -> tuple[str, str, str, str]:
        """What the row shows, column by column."""
        return self._rows[row].cells

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008 (Qt's default)
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(HEADERS)

    def headerData(self, section: int, orientation: Qt.Orientation,
                   role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole \
                and 0 <= section < len(HEADERS):
            return HEADERS[section]
        return None

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or not 0 <= index.row() < len(self._rows):
            return None
        row, column = self._rows[index.row()], index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return row.cells[column]
        if role == Qt.ItemDataRole.ToolTipRole:
            if column == TIME:
                return date_text(row.event.ts)
            if column == WHAT:  # rich text, so a long sentence wraps
                return f"<p>{html.escape(row.cells[WHAT])}</p>"
            return None
        if role == Qt.ItemDataRole.ForegroundRole:
            return self._colours.get(row.event.severity)
        if role == EVENT_ROLE:
            return row.event
        return None


class EventFilter(QSortFilterProxyModel):
    """Keeps the source's order (newest first) and shows the rows that match the bar:
    one model (None: all), a least severity, and a text (any case) found in the sentence,
    the model's name or the event's type."""

    def __init__(self, source: EventTableModel, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.setSourceModel(source)
        self._source = source
        self._model: str | None = None
        self._least: int = 0
        self._text = ""

    def set_model_name(self, name: str | None) -> None:
        self.beginFilterChange()
        self._model = name
        self.endFilterChange(QSortFilterProxyModel.Direction.Rows)

    def set_least_severity(self, severity: Severity) -> None:
        self.beginFilterChange()
        self._least = SEVERITY_RANK[severity]
        self.endFilterChange(QSortFilterProxyModel.Direction.Rows)

    def set_text(self, text: str) -> None:
        self.beginFilterChange()
        self._text = text.strip().casefold()
        self.endFilterChange(QSortFilterProxyModel.Direction.Rows)

    def filterAcceptsRow(self, source_row: int, source_parent: Index) -> bool:
        event = self._source.event_at(source_row)
        if self._model is not None and event.model_name != self._model:
            return False
        if SEVERITY_RANK[event.severity] < self._least:
            return False
        if not self._text:
            return True
        what = self._source.cells(source_row)[WHAT]
        return any(self._text in s.casefold() for s in (what, event.model_name or "",
                                                         event.type))
