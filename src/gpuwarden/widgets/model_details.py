"""The selected model's details: its settings and where each came from, what happened to
it, its crashes, and the end of its server log with buttons that open the whole file.

:meth:`ModelDetailsPanel.show_details` is cheap to call every second: a part whose
content did not change is left alone, and scroll positions are kept (the log follows
new lines only while it is scrolled to its end).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from PySide6.QtCore import Qt, QUrl, Signal
from PySide6.QtGui import QColor, QDesktopServices, QFont, QFontDatabase
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSizePolicy,
    QStackedWidget,
    QTabWidget,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from gpuwarden.engine.details import DEFAULT, CrashEntry, HistoryEntry, ModelDetails, Setting
from gpuwarden.widgets.theme import Theme

PLACEHOLDER = "Select a model to see its details"
SETTINGS_TAB, HISTORY_TAB, CRASHES_TAB, LOG_TAB = range(4)
COLUMN_GAP = 16  # px
MAX_COLUMN = 360  # px: a long path is elided in the middle (its tooltip has it whole)
_BAD_EVENTS = frozenset({"model.crashed", "model.restart_exhausted"})


def when(ts: float, now: float | None = None) -> str:
    """``14:03:07`` today, ``Mar 02 14:03:07`` on another day."""
    local = time.localtime(ts)
    today = time.localtime(time.time() if now is None else now)
    same_day = local[:3] == today[:3]
    return time.strftime("%H:%M:%S" if same_day else "%b %d %H:%M:%S", local)


def dimmed(theme: Theme) -> QColor:
    """The foreground a third of the way to the background: for secondary text."""
    fg, bg = QColor(theme.foreground), QColor(theme.background)
    return QColor((2 * fg.red() + bg.red()) // 3, (2 * fg.green() + bg.green()) // 3,
                  (2 * fg.blue() + bg.blue()) // 3)


def _tree(headers: Sequence[str]) -> QTreeWidget:
    tree = QTreeWidget()
    tree.setHeaderLabels(list(headers))
    tree.setRootIsDecorated(False)
    tree.setUniformRowHeights(True)
    tree.setAlternatingRowColors(True)
    tree.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
    tree.setFocusPolicy(Qt.FocusPolicy.NoFocus)
    tree.setTextElideMode(Qt.TextElideMode.ElideMiddle)
    tree.header().setStretchLastSection(True)
    tree.header().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
    return tree


def _fill(tree: QTreeWidget,
          rows: Sequence[tuple[Sequence[str], QColor | None]]) -> list[QTreeWidgetItem]:
    """Make ``tree`` show ``rows`` (texts, colour), reusing its items; the scroll position
    stays where it was. Returns the items, in order."""
    while tree.topLevelItemCount() > len(rows):
        tree.takeTopLevelItem(tree.topLevelItemCount() - 1)
    items = []
    for i, (texts, color) in enumerate(rows):
        item = tree.topLevelItem(i)
        if item is None:
            item = QTreeWidgetItem()
            tree.addTopLevelItem(item)
        items.append(item)
        for col, text in enumerate(texts):
            item.setText(col, text)
            item.setToolTip(col, text)
            if color is not None:
                item.setForeground(col, color)
            else:
                item.setData(col, Qt.ItemDataRole.ForegroundRole, None)
    return items


def _fit_columns(tree: QTreeWidget) -> None:
    """Every column but the last (it stretches) as wide as its text, with room between."""
    for col in range(tree.columnCount() - 1):
        wanted = max(tree.sizeHintForColumn(col), tree.header().sectionSizeHint(col))
        tree.setColumnWidth(col, min(wanted + COLUMN_GAP, MAX_COLUMN))


class ModelDetailsPanel(QWidget):
    """Shows one :class:`ModelDetails` (None: a placeholder)."""

    open_failed = Signal(str)  # a person-readable line for the status bar

    def __init__(self, theme: Theme) -> None:
        super().__init__()
        self._theme = theme
        self._dim = dimmed(theme)
        self._bad = QColor(theme.state_bad)
        self._shown: ModelDetails | None = None

        self.placeholder = QLabel(PLACEHOLDER)
        self.placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.placeholder.setEnabled(False)  # the palette's dimmed text
        self.title = QLabel()
        self.title.setTextFormat(Qt.TextFormat.PlainText)
        bold = QFont(self.title.font())
        bold.setBold(True)
        self.title.setFont(bold)
        self.summary = _clipped_label()

        self.settings = _tree(("Setting", "Value", "From"))
        self.history = _tree(("Time", "What happened"))
        self.crashes = _tree(("Time", "Kind", "Exit code", "Signal"))
        self.log_view = QPlainTextEdit()
        self.log_view.setReadOnly(True)
        self.log_view.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.log_view.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self._log_follow = True  # keep the newest line in view (until the user scrolls up)
        self._log_setting = False
        log_bar = self.log_view.verticalScrollBar()
        log_bar.rangeChanged.connect(self._keep_log_end)
        log_bar.valueChanged.connect(self._log_scrolled)
        self.log_label = _clipped_label()
        self.log_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.open_log_button = QPushButton("Open log file")
        self.open_log_button.clicked.connect(self.open_log)
        self.open_folder_button = QPushButton("Open log folder")
        self.open_folder_button.clicked.connect(self.open_log_folder)

        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        self.tabs.addTab(self.settings, "Settings")
        self.tabs.addTab(self.history, "History")
        self.tabs.addTab(self.crashes, "Crashes")
        self.tabs.addTab(self._log_page(), "Log")

        content = QWidget()
        layout = QVBoxLayout(content)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(4)
        heading = QHBoxLayout()
        heading.addWidget(self.title)
        heading.addSpacing(12)
        heading.addWidget(self.summary, 1)
        layout.addLayout(heading)
        layout.addWidget(self.tabs, 1)

        self.stack = QStackedWidget()
        self.stack.addWidget(self.placeholder)
        self.stack.addWidget(content)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(4, 4, 4, 4)
        outer.addWidget(self.stack)

    def _log_page(self) -> QWidget:
        page = QWidget()
        layout = QVBoxLayout(page)
        layout.setContentsMargins(0, 4, 0, 0)
        layout.setSpacing(4)
        layout.addWidget(self.log_view, 1)
        row = QHBoxLayout()
        row.addWidget(self.log_label, 1)
        row.addWidget(self.open_log_button)
        row.addWidget(self.open_folder_button)
        layout.addLayout(row)
        return page

    # -- showing ---------------------------------------------------------------------------

    @property
    def shown(self) -> ModelDetails | None:
        return self._shown

    def show_details(self, details: ModelDetails | None) -> None:
        """Show ``details`` (None: nothing selected); what did not change is left as is."""
        before, self._shown = self._shown, details
        if details == before:
            return
        if details is None:
            self.stack.setCurrentIndex(0)
            return
        self.stack.setCurrentIndex(1)
        other_model = before is None or before.name != details.name
        old = None if other_model else before
        self.title.setText(f"{details.name}  ({details.backend})")
        if old is None or details.settings != old.settings:
            self._show_settings(details.settings)
        if old is None or details.history != old.history:
            self._show_history(details.history)
        if old is None or details.crashes != old.crashes:
            self._show_summary(details.crashes)
            _fill(self.crashes, [((when(c.ts), c.kind, _opt(c.exit_code), _opt(c.signal)),
                                  self._bad) for c in details.crashes])
            _fit_columns(self.crashes)
        self._show_log(details, follow=other_model)

    def _show_summary(self, crashes: Sequence[CrashEntry]) -> None:
        if not crashes:
            self.summary.setText("no crashes")
            self.summary.setToolTip("")
            self.summary.setStyleSheet("")
            self.tabs.setTabText(CRASHES_TAB, "Crashes")
            return
        last = crashes[0]
        count = f"{len(crashes)} crash{'es' if len(crashes) > 1 else ''}"
        self.summary.setText(f"{count}, the last at {when(last.ts)}: {last.describe()}")
        self.summary.setToolTip(self.summary.text())
        self.summary.setStyleSheet(f"color: {self._theme.state_bad};")
        self.tabs.setTabText(CRASHES_TAB, f"Crashes ({len(crashes)})")

    def _show_settings(self, settings: Sequence[Setting]) -> None:
        items = _fill(self.settings, [((s.key, s.value, s.source), None) for s in settings])
        for item, setting in zip(items, settings, strict=True):
            item.setForeground(2, self._dim)
            font = QFont(self.settings.font())
            font.setBold(setting.source != DEFAULT)  # what the user set stands out
            item.setFont(1, font)
        _fit_columns(self.settings)

    def _show_history(self, history: Sequence[HistoryEntry]) -> None:
        _fill(self.history, [((when(h.ts), h.text),
                              self._bad if h.type in _BAD_EVENTS else None) for h in history])
        _fit_columns(self.history)

    def _show_log(self, details: ModelDetails, *, follow: bool) -> None:
        path = details.log_path
        self.log_label.setText(str(path) if path is not None else details.log_note)
        self.log_label.setToolTip(self.log_label.text())
        self.log_view.setPlaceholderText(details.log_note)
        why = f"No log to open: {details.log_note}"
        there = path is not None and details.log_exists
        self.open_log_button.setEnabled(there)
        self.open_folder_button.setEnabled(there)
        self.open_log_button.setToolTip(str(path) if there else why)
        self.open_folder_button.setToolTip(str(path.parent) if path and there else why)
        text = "\n".join(details.log_tail)
        if text == self.log_view.toPlainText():
            return
        bar = self.log_view.verticalScrollBar()
        follow = follow or self._log_follow
        kept = bar.value()
        self._log_setting = True
        try:
            self.log_view.setPlainText(text)
        finally:
            self._log_setting = False
        self._log_follow = follow
        bar.setValue(bar.maximum() if follow else kept)

    def _keep_log_end(self, _low: int, high: int) -> None:
        """The log's length or size changed (new text, shown, resized): still at the end."""
        if self._log_follow:
            self.log_view.verticalScrollBar().setValue(high)

    def _log_scrolled(self, value: int) -> None:
        if not self._log_setting:
            self._log_follow = value >= self.log_view.verticalScrollBar().maximum()

    # -- opening ---------------------------------------------------------------------------

    def open_log(self) -> None:
        """Open the whole log file in the desktop's viewer."""
        if self._shown is not None and self._shown.log_path is not None:
            self._open(self._shown.log_path)

    def open_log_folder(self) -> None:
        if self._shown is not None and self._shown.log_path is not None:
            self._open(self._shown.log_path.parent)

    def _open(self, path: Path) -> None:
        if not QDesktopServices.openUrl(QUrl.fromLocalFile(str(path))):
            self.open_failed.emit(f"could not open {path}")


def _clipped_label() -> QLabel:
    """A one-line label that never makes the panel wider (a long path is cut at the
    right; its tooltip has it whole)."""
    label = QLabel()
    label.setTextFormat(Qt.TextFormat.PlainText)
    label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
    return label


def _opt(value: int | None) -> str:
    return "\u2013" if value is None else str(value)
