"""The event log: what happened, newest first, in plain words, with a bar to filter it by
model, severity and text, and to copy or export what is shown."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtGui import QAction, QGuiApplication, QKeyEvent, QKeySequence
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QTableView,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from gpuwarden.engine.atomic import atomic_write_text
from gpuwarden.engine.events import Event, Severity
from gpuwarden.widgets.event_table import (
    EVENT_ROLE,
    MAX_ROWS,
    MODEL,
    SEVERITY,
    TIME,
    WHAT,
    EventFilter,
    EventTableModel,
    Index,
    date_text,
)
from gpuwarden.widgets.theme import Theme, pick_theme

ALL_MODELS = "All models"
SEVERITY_CHOICES: tuple[tuple[str, Severity], ...] = (
    ("All events", "info"), ("Warnings and errors", "warning"), ("Errors only", "error"))
CSV_HEADER = ("time", "severity", "model", "what", "type")


class _Table(QTableView):
    """A table whose Ctrl+C asks for whole rows (Qt's own copies only the current cell),
    and that keeps the rows a reader has scrolled to in place while new ones arrive on
    top."""

    copy_requested = Signal()

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if event.matches(QKeySequence.StandardKey.Copy):
            self.copy_requested.emit()
            event.accept()
            return
        super().keyPressEvent(event)

    def rowsInserted(self, parent: Index, start: int, end: int) -> None:
        bar = self.verticalScrollBar()
        scrolled = bar.value()
        super().rowsInserted(parent, start, end)
        if scrolled > 0 and start == 0:  # at the very top the newest row shows instead
            self.updateGeometries()
            bar.setValue(scrolled + (end - start + 1) * self.verticalHeader().defaultSectionSize())


class EventLog(QWidget):
    """``add_event`` puts an event at the top; the bar filters what is shown. Copy and
    Export take the selected rows (Copy) or every row shown. ``message`` says how an
    export went, for the status bar."""

    message = Signal(str)

    def __init__(self, theme: Theme | None = None, max_rows: int = MAX_ROWS) -> None:
        super().__init__()
        self.model = EventTableModel(theme or pick_theme(), self, max_rows)
        self.proxy = EventFilter(self.model, self)
        self.table = self._make_table()
        bar = self._make_bar()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(4)
        layout.addLayout(bar)
        layout.addWidget(self.table, 1)
        for signal in (self.proxy.rowsInserted, self.proxy.rowsRemoved,
                       self.proxy.layoutChanged, self.proxy.modelReset):
            signal.connect(self._show_count)
        self._show_count()

    def _make_bar(self) -> QHBoxLayout:
        self.model_filter = QComboBox()
        self.model_filter.addItem(ALL_MODELS, None)
        self.model_filter.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.model_filter.currentIndexChanged.connect(self._on_model_filter)
        self.severity_filter = QComboBox()
        for text, least in SEVERITY_CHOICES:
            self.severity_filter.addItem(text, least)
        self.severity_filter.currentIndexChanged.connect(self._on_severity_filter)
        self.search = QLineEdit()
        self.search.setPlaceholderText("Search events")
        self.search.setClearButtonEnabled(True)
        self.search.textChanged.connect(self.proxy.set_text)
        self.copy_action = QAction("Copy", self)
        self.copy_action.setShortcut(QKeySequence.StandardKey.Copy)
        self.copy_action.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        keys = self.copy_action.shortcut().toString(QKeySequence.SequenceFormat.NativeText)
        self.copy_action.setToolTip(f"Copy the selected rows, or every row shown ({keys})")
        self.copy_action.triggered.connect(self.copy)
        self.addAction(self.copy_action)
        self.table.copy_requested.connect(self.copy)
        self.export_action = QAction("Export…", self)
        self.export_action.setIconText("Export…")  # a button drops the dots otherwise
        self.export_action.setToolTip("Save the rows shown as CSV, or as JSON lines (.jsonl)")
        self.export_action.triggered.connect(self.export)

        bar = QHBoxLayout()
        bar.setContentsMargins(0, 0, 0, 0)
        bar.addWidget(self.model_filter)
        bar.addWidget(self.severity_filter)
        bar.addWidget(self.search, 1)
        self.count_label = QLabel()
        bar.addWidget(self.count_label)
        self.buttons: list[QToolButton] = []
        for action in (self.copy_action, self.export_action):
            button = QToolButton()
            button.setDefaultAction(action)
            bar.addWidget(button)
            self.buttons.append(button)
        return bar

    def _make_table(self) -> _Table:
        table = _Table()
        table.setModel(self.proxy)
        table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        table.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        table.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        table.setAlternatingRowColors(True)
        table.setShowGrid(False)
        table.setWordWrap(False)
        table.setTextElideMode(Qt.TextElideMode.ElideRight)
        rows = table.verticalHeader()
        rows.hide()
        rows.setSectionResizeMode(QHeaderView.ResizeMode.Fixed)  # one height for every row
        rows.setDefaultSectionSize(table.fontMetrics().height() + 6)
        header = table.horizontalHeader()
        header.setHighlightSections(False)
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setSectionResizeMode(WHAT, QHeaderView.ResizeMode.Stretch)
        metrics = table.fontMetrics()
        for column, sample in ((TIME, "00:00:00"), (SEVERITY, "Warning"),
                               (MODEL, "a-model-name-14b")):
            table.setColumnWidth(column, metrics.horizontalAdvance(sample) + 24)
        return table

    @Slot(object)
    def add_event(self, event: Event) -> None:
        self.model.add(event)
        name = event.model_name
        if name is not None and self.model_filter.findData(name) < 0:
            names = sorted([name, *self._model_names()], key=str.casefold)
            self.model_filter.insertItem(1 + names.index(name), name, name)

    def _model_names(self) -> list[str]:
        return [self.model_filter.itemData(i) for i in range(1, self.model_filter.count())]

    @Slot(int)
    def _on_model_filter(self, _index: int) -> None:
        self.proxy.set_model_name(self.model_filter.currentData())

    @Slot(int)
    def _on_severity_filter(self, _index: int) -> None:
        self.proxy.set_least_severity(self.severity_filter.currentData())

    @Slot()
    def _show_count(self) -> None:
        shown, total = self.proxy.rowCount(), self.model.rowCount()
        if not total:
            self.count_label.setText("no events yet")
        else:
            self.count_label.setText(f"{shown} of {total} events" if shown < total
                                     else f"{total} events")

    # -- what is shown ------------------------------------------------------------------

    def visible_events(self) -> list[Event]:
        """The events the filters let through, newest first."""
        return [self.proxy.index(r, 0).data(EVENT_ROLE) for r in range(self.proxy.rowCount())]

    def texts(self) -> list[str]:
        """Every row shown, newest first, as tab-separated cells (time, severity, model,
        what): the text Copy puts on the clipboard."""
        return [self._row_text(r) for r in range(self.proxy.rowCount())]

    def _row_text(self, proxy_row: int) -> str:
        source_row = self.proxy.mapToSource(self.proxy.index(proxy_row, 0)).row()
        return "\t".join(self.model.cells(source_row))

    # -- copy and export ----------------------------------------------------------------

    @Slot()
    def copy(self) -> None:
        """The selected rows, or every row shown when none is selected, onto the
        clipboard as tab-separated text (a spreadsheet pastes it as cells)."""
        selected = sorted(i.row() for i in self.table.selectionModel().selectedRows())
        rows = selected or range(self.proxy.rowCount())
        QGuiApplication.clipboard().setText("\n".join(self._row_text(r) for r in rows))

    @Slot()
    def export(self) -> None:
        """Ask where, then write the rows shown there."""
        path, _ = QFileDialog.getSaveFileName(
            self, "Export events", str(Path.home() / "gpuwarden-events.csv"),
            "CSV (*.csv);;JSON lines (*.jsonl)")
        if path:
            self.export_to(Path(path))

    def export_to(self, path: Path) -> bool:
        """Write the rows shown to ``path`` at once (atomically): JSON lines of the events'
        ``to_dict()`` for a ``.jsonl`` name, else CSV with the full date. Says how it went
        on ``message``; False when it could not be written."""
        events = list(reversed(self.visible_events()))  # oldest first, as a log file reads
        text = jsonl_text(events) if path.suffix.lower() == ".jsonl" else csv_text(events)
        try:
            atomic_write_text(path, text)
        except OSError as exc:
            self.message.emit(f"Could not export the events to {path}: {exc.strerror or exc}")
            return False
        self.message.emit(f"Exported {len(events)} events to {path}")
        return True


def jsonl_text(events: list[Event]) -> str:
    return "".join(json.dumps(e.to_dict(), default=str, ensure_ascii=False) + "\n"
                   for e in events)


def csv_text(events: list[Event]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for e in events:
        writer.writerow((date_text(e.ts), e.severity, e.model_name or "", e.describe(), e.type))
    return out.getvalue()
