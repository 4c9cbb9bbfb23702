"""The Settings dialog: the pressure and safety thresholds, the sample interval, the restart
limits from the config file, and the window's own preferences (history kept, and the
Window tab's: leave models running on quit, the tray, notifications) from QSettings.

Each config field shows the value in force, or the default in a dim colour when the file
leaves its key out. Save writes only what changed, one key at a time with
:func:`gpuwarden.engine.config_edit.set_setting` (the file keeps its comments; each edit
is checked by the config reader), in an order that keeps every pair valid between two
writes; it stops at the first refusal and says which keys were saved. The dialog never
talks to the engine: the running gpuwarden picks the change up through its live reload.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from PySide6.QtCore import QSettings, Qt, Signal, Slot
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from gpuwarden.desktop_install import InstallError
from gpuwarden.engine.config_edit import ConfigEditError, set_setting
from gpuwarden.engine.lifecycle.config import Config
from gpuwarden.widgets import app_prefs
from gpuwarden.widgets.setting_row import SettingRow, dim_colour, set_column_width
from gpuwarden.widgets.settings_catalog import (
    MONITORING,
    ORDER,
    PRESSURE,
    RESTARTS,
    SAFETY,
    SETTINGS,
    FileKeys,
    Setting,
    in_order,
    keys_in_file,
)
from gpuwarden.widgets.theme import Theme
from gpuwarden.widgets.window_prefs import LABELS, START_AT_LOGIN, WindowPrefs

NO_FILE = "gpuwarden was started without a config file it can write"
NOW = "Changes apply at once."
TABS: tuple[tuple[str, str, tuple[Setting, ...]], ...] = (
    ("Pressure", "Under memory pressure gpuwarden moves models to the CPU or unloads them, "
                 "lowest priority first, until it clears. Each pressure is raised at its "
                 f"first level and clears below the second. {NOW}", PRESSURE),
    ("Safety", "Limits checked on every reading, for each GPU and for the host. “From the "
               "card”: the card's own thresholds where the driver knows them, else the "
               f"built-in table. {NOW}", SAFETY),
    ("Monitoring", "Both apply at the next start of gpuwarden (--interval and --history "
                   "override them).", MONITORING),
    ("Restarts", "When a model's server dies on its own: a crash, an out-of-memory kill, a "
                 f"hang, or a start that never becomes ready. {NOW}", RESTARTS),
)
TAB_OF_TABLE = {s.table: title for title, _, settings in TABS for s in settings}
PREF_LABELS = {app_prefs.HISTORY_S: "Keep history for", **LABELS}


class SettingsDialog(QDialog):
    """Show it with ``open()``. ``config``: the settings in force; ``config_path``: the file
    to write (None: the config fields are read-only); ``prefs``: the app's preferences."""

    saved = Signal(list)  # the names saved: "pressure.vram_enter_pct", "app/leave_running"

    def __init__(self, theme: Theme, config: Config, config_path: Path | None,
                 prefs: QSettings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.theme, self.config_path, self.prefs = theme, config_path, prefs
        found = keys_in_file(config_path) if config_path is not None else FileKeys(
            problem=NO_FILE)
        self.read_only_reason = found.problem
        self.rows = {s.name: _row(s, config, found, theme) for s in SETTINGS}
        self.saved_names: list[str] = []  # by this dialog, over every Save
        self.window_prefs = WindowPrefs(prefs, theme)
        self.leave_running = self.window_prefs.leave_running
        self.history = _minutes(app_prefs.history_seconds(prefs))
        self._prefs_before = self._prefs_now()
        self.setWindowTitle("Settings")
        self._build()
        for row in self.rows.values():
            row.set_writable(self.read_only_reason is None)
            row.changed.connect(self._validate)
        self._validate()

    # -- building --------------------------------------------------------------------------

    def _build(self) -> None:
        self.header = QLabel(self._header_text())
        self.header.setObjectName("settingsHeader")
        self.header.setWordWrap(True)
        self.header.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        if self.read_only_reason is not None:
            self.header.setStyleSheet(f"color: {self.theme.state_busy};")
        self.tabs = QTabWidget()
        self.pages: dict[str, QWidget] = {}
        for title, intro, settings in TABS:
            extra = self._history_rows() if settings is MONITORING else ()
            rows = [self.rows[s.name] for s in settings]
            self._add_page(title, self._page(intro, rows, extra))
        self._add_page("Window", self.window_prefs)
        self.problem = QLabel()
        self.problem.setObjectName("problem")
        self.problem.setWordWrap(True)
        self.problem.setStyleSheet(f"color: {self.theme.state_bad};")
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.save_button = self.buttons.addButton("Save", QDialogButtonBox.ButtonRole.AcceptRole)
        self.save_button.setDefault(True)
        self.buttons.accepted.connect(self.save)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.header)
        layout.addWidget(self.tabs, 1)
        layout.addWidget(self.problem)
        layout.addWidget(self.buttons)
        self.setMinimumWidth(self.fontMetrics().horizontalAdvance("x") * 118)

    def _header_text(self) -> str:
        if self.config_path is None:
            return (f"{NO_FILE}: the config settings are shown as they are in force, "
                    "read-only. The Window tab still works.")
        if self.read_only_reason is not None:
            return (f"{self.read_only_reason}: fix it in an editor. Until then the config "
                    "settings are shown as they are in force, read-only.")
        return (f"Settings in {self.config_path}: the file keeps its comments. "
                "Dim values are defaults, not in the file.")

    def _add_page(self, title: str, page: QWidget) -> None:
        self.pages[title] = page
        self.tabs.addTab(page, title)

    def _page(self, intro: str, rows: Sequence[SettingRow],
              extra: Sequence[tuple[str, QWidget]]) -> QWidget:
        page = QWidget()
        layout = QVBoxLayout(page)
        layout.addWidget(_intro(intro))
        form = QFormLayout()
        for row in rows:
            form.addRow(row.label, row)
        for label, widget in extra:
            form.addRow(label, widget)
        layout.addLayout(form)
        layout.addStretch(1)
        reset = QPushButton("Reset this tab to defaults")
        reset.setAutoDefault(False)
        reset.setEnabled(self.read_only_reason is None or bool(extra))
        reset.clicked.connect(lambda: self.reset_rows(rows, history=bool(extra)))
        bottom = QHBoxLayout()
        bottom.addStretch(1)
        bottom.addWidget(reset)
        layout.addLayout(bottom)
        return page

    def _history_rows(self) -> tuple[tuple[str, QWidget], ...]:
        holder = QWidget()
        row = QHBoxLayout(holder)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.history)
        note = QLabel("(kept for this user, not in the config file)")
        note.setPalette(_dim(note, self.theme))
        row.addWidget(note, 1)
        return ((PREF_LABELS[app_prefs.HISTORY_S], holder),)

    # -- editing ---------------------------------------------------------------------------

    def reset_rows(self, rows: Iterable[SettingRow], *, history: bool = False) -> None:
        """Every one of ``rows`` back to its default (its key leaves the file on Save)."""
        if self.read_only_reason is None:
            for row in rows:
                row.reset()
        if history:
            self.history.setValue(app_prefs.DEFAULT_HISTORY_S / 60)

    def problem_now(self) -> tuple[str, list[SettingRow]] | None:
        """The first pair out of order, said with the fields' labels."""
        for low, high, strict in ORDER:
            a, b = self.rows[low], self.rows[high]
            if not in_order(a.effective(), b.effective(), strict):
                relation = "below" if strict else "at most"
                tab = TAB_OF_TABLE[a.setting.table]
                return (f"{tab}: “{a.setting.label}” must be {relation} "
                        f"“{b.setting.label}”.", [a, b])
        return None

    @Slot()
    def _validate(self) -> None:
        for row in self.rows.values():
            row.highlight(False)
        found = self.problem_now()
        self.problem.setText(found[0] if found else "")
        for row in found[1] if found else ():
            row.highlight(True)
        self.save_button.setEnabled(found is None)
        self.save_button.setToolTip(found[0] if found else "")

    # -- saving ----------------------------------------------------------------------------

    @Slot()
    def save(self) -> None:
        """Write what changed and close; on a refusal say why and stay open."""
        if self.problem_now() is not None:
            self._validate()
            return
        names = self._save_prefs()
        try:
            if self.window_prefs.save_login():
                names.append(START_AT_LOGIN)
        except (InstallError, OSError) as exc:
            self.saved_names += names
            self._not_saved(LABELS[START_AT_LOGIN], str(exc), names)
            self.tabs.setCurrentWidget(self.window_prefs)
            return
        try:
            for row in self.write_order():
                self._write(row)
                names.append(row.setting.name)
        except _Refused as refused:
            self._refused(refused, names)
            return
        finally:
            self.saved_names += names
        self.saved.emit(list(self.saved_names))
        self.accept()

    def write_order(self) -> list[SettingRow]:
        """The rows to write, each pair ordered so the file stays valid between writes
        (lowering both: the lower one first; raising: the higher one first)."""
        order = [row for row in self.rows.values() if row.pending()]
        for low, high, strict in ORDER:
            a, b = self.rows[low], self.rows[high]
            if a in order and b in order:
                first, second = (a, b) if in_order(a.effective(), b.before(), strict) \
                    else (b, a)
                order.remove(second)
                order.insert(order.index(first) + 1, second)
        return order

    def _write(self, row: SettingRow) -> None:
        assert self.config_path is not None  # rows are read-only without a file
        setting = row.setting
        try:
            set_setting(self.config_path, setting.table, setting.key, row.target())
        except ConfigEditError as exc:
            field = self.rows.get(f"{setting.table}.{exc.field}" if setting.table
                                  else str(exc.field), row)
            raise _Refused(field, str(exc)) from exc
        except OSError as exc:
            raise _Refused(row, f"cannot write {self.config_path}: "
                                f"{exc.strerror or exc}") from exc
        row.mark_saved()

    def _refused(self, refused: _Refused, names: Sequence[str]) -> None:
        row = refused.row
        self._not_saved(row.setting.label, refused.message, names)
        row.highlight(True)
        self.tabs.setCurrentWidget(self.pages[TAB_OF_TABLE[row.setting.table]])
        row.spin.setFocus()

    def _not_saved(self, label: str, message: str, names: Sequence[str]) -> None:
        done = ", ".join(_label(self.rows, n) for n in names)
        self.problem.setText(f"Not saved: “{label}”: {message.rstrip('.')}. "
                             + (f"Saved before it: {done}." if done else "Nothing was saved."))

    def _prefs_now(self) -> dict[str, object]:
        return {app_prefs.LEAVE_RUNNING: self.leave_running.isChecked(),
                app_prefs.HISTORY_S: self.history.value() * 60, **self.window_prefs.values()}

    def _save_prefs(self) -> list[str]:
        now = self._prefs_now()
        changed = [key for key, value in now.items() if self._prefs_before[key] != value]
        for key in changed:
            self.prefs.setValue(key, now[key])
        self.prefs.sync()
        self._prefs_before = now
        return changed


class _Refused(Exception):
    def __init__(self, row: SettingRow, message: str) -> None:
        super().__init__(message)
        self.row, self.message = row, message.rstrip(".")


def _row(setting: Setting, config: Config, found: FileKeys, theme: Theme) -> SettingRow:
    value = setting.read(config)
    if found.problem is None:
        in_file = setting.name in found.names
    else:  # nothing to read the keys from: what differs from its default counts as set
        in_file = value is not None and value != setting.default
    return SettingRow(setting, value, in_file, theme)


def _label(rows: dict[str, SettingRow], name: str) -> str:
    return rows[name].setting.label if name in rows else PREF_LABELS[name]


def _intro(text: str) -> QLabel:
    label = QLabel(text)
    label.setWordWrap(True)
    return label


def _dim(widget: QWidget, theme: Theme) -> QPalette:
    palette = QPalette(widget.palette())
    palette.setColor(QPalette.ColorRole.WindowText, dim_colour(theme))
    return palette


def _minutes(seconds: float) -> QDoubleSpinBox:
    spin = QDoubleSpinBox()
    spin.setDecimals(0)
    spin.setRange(app_prefs.MIN_HISTORY_S / 60, app_prefs.MAX_HISTORY_S / 60)
    spin.setSingleStep(10)
    spin.setSuffix(" min")
    spin.setKeyboardTracking(False)
    spin.setValue(seconds / 60)
    set_column_width(spin)
    return spin
