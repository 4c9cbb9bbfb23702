"""One config-file setting as a form row: a spin box with its unit, "(default)" in a dim
colour while the key is not in the file, "From the card" for the limits the card itself
gives, "changed" until saved, and a Reset that takes the key out of the file."""

from __future__ import annotations

from PySide6.QtCore import Signal, Slot
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import (
    QCheckBox,
    QDoubleSpinBox,
    QHBoxLayout,
    QLabel,
    QStackedWidget,
    QToolButton,
    QWidget,
)

from gpuwarden.widgets.settings_catalog import CARD_TEXT, Setting
from gpuwarden.widgets.theme import Theme

MAX_DECIMALS = 3
SPIN_WIDTH_TEXT = "100000.0 MiB"  # the widest value a spin box shows


def dim_colour(theme: Theme) -> QColor:
    """Half way from the text to the background: what a default looks like."""
    text, back = QColor(theme.foreground), QColor(theme.background)
    return QColor((text.red() + back.red()) // 2, (text.green() + back.green()) // 2,
                  (text.blue() + back.blue()) // 2)


def write_value(setting: Setting, value: float) -> int | float:
    """``value`` as the file should hold it: 85, not 85.0."""
    return round(value) if setting.integer or value.is_integer() else value


class SettingRow(QWidget):
    """``value``: the value in force; ``in_file``: whether the file sets the key."""

    changed = Signal()

    def __init__(self, setting: Setting, value: float | None, in_file: bool, theme: Theme,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setting, self.in_file, self.theme = setting, in_file, theme
        self.explicit = in_file  # the key will be in the file after a save
        self.writable = True
        self._quiet = False
        self.label = QLabel(setting.label)
        self.label.setToolTip(_tip(setting))
        self.spin = _spin(setting, value)
        self.auto_label = QLabel("auto")
        self.stack = QStackedWidget()
        self.stack.addWidget(self.spin)
        self.stack.addWidget(self.auto_label)
        self.auto = QCheckBox("From the card") if setting.card else None
        self.card_note = QLabel(CARD_TEXT.get(setting.key, ""))
        self.default_note = QLabel("(default)")
        self.changed_note = QLabel("changed")
        self.reset_button = QToolButton()
        self.reset_button.setText("Reset")
        self.reset_button.setToolTip(f"Back to the default: takes {setting.name} out of "
                                     "the config file")
        self._lay_out()
        self.spin.setValue(value if in_file and value is not None else setting.default)
        self.initial = self.spin.value()
        self.spin.valueChanged.connect(self._edited)
        self.reset_button.clicked.connect(self.reset)
        if self.auto is not None:
            self.auto.setChecked(not in_file)
            self.auto.toggled.connect(self._auto_toggled)
        self._refresh()

    def _lay_out(self) -> None:
        dim = QPalette(self.default_note.palette())
        dim.setColor(QPalette.ColorRole.WindowText, dim_colour(self.theme))
        for label in (self.default_note, self.auto_label, self.card_note):
            label.setPalette(dim)
        self.changed_note.setStyleSheet(f"color: {self.theme.state_busy};")
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.stack)
        if self.auto is not None:
            row.addWidget(self.auto)
        row.addWidget(self.card_note)
        row.addWidget(self.default_note)
        row.addWidget(self.changed_note)
        row.addStretch(1)
        row.addWidget(self.reset_button)

    # -- what it holds ---------------------------------------------------------------------

    def target(self) -> int | float | None:
        """What the file should hold (None: the key left out)."""
        return write_value(self.setting, self.spin.value()) if self.explicit else None

    def pending(self) -> bool:
        """Whether a save has to write this key."""
        if self.explicit != self.in_file:
            return True
        return self.explicit and self.spin.value() != self.initial

    def effective(self) -> float | None:
        """The value in force after a save (None: the card's, unknown here)."""
        return self._effective(self.explicit, self.spin.value())

    def before(self) -> float | None:
        """The value in force now, as the file has it."""
        return self._effective(self.in_file, self.initial)

    def _effective(self, set_in_file: bool, value: float) -> float | None:
        if set_in_file:
            return value
        return None if self.setting.card else self.setting.default

    # -- changing it -------------------------------------------------------------------------

    def set_value(self, value: float) -> None:
        """As if the user typed ``value``."""
        if self.auto is not None:
            self.auto.setChecked(False)
        self.spin.setValue(value)
        self._edited()

    @Slot()
    def reset(self) -> None:
        """Back to the default: the key leaves the file on the next save."""
        self.explicit = False
        self._show(self.setting.default)
        if self.auto is not None:
            self.auto.blockSignals(True)
            self.auto.setChecked(True)
            self.auto.blockSignals(False)
        self._refresh()
        self.changed.emit()

    def mark_saved(self) -> None:
        self.in_file, self.initial = self.explicit, self.spin.value()
        self._refresh()

    def set_writable(self, writable: bool) -> None:
        self.writable = writable
        self.spin.setEnabled(writable)
        if self.auto is not None:
            self.auto.setEnabled(writable)
        self._refresh()

    def highlight(self, on: bool) -> None:
        """Mark the row's label as the field at fault."""
        self.label.setStyleSheet(f"color: {self.theme.state_bad}; font-weight: bold;"
                                 if on else "")

    @Slot()
    def _edited(self) -> None:
        if self._quiet:
            return
        self.explicit = True
        self._refresh()
        self.changed.emit()

    @Slot(bool)
    def _auto_toggled(self, checked: bool) -> None:
        if checked:
            self.reset()
        else:
            self._edited()

    def _show(self, value: float) -> None:
        self._quiet = True
        self.spin.setValue(value)
        self._quiet = False

    def _refresh(self) -> None:
        auto = self.setting.card and not self.explicit
        self.stack.setCurrentWidget(self.auto_label if auto else self.spin)
        self.card_note.setVisible(auto)
        self.default_note.setVisible(not self.explicit and not self.setting.card)
        self.changed_note.setVisible(self.pending())
        self.reset_button.setEnabled(self.writable and self.explicit)
        palette = QPalette(self.palette())
        if not self.explicit:
            palette.setColor(QPalette.ColorRole.Text, dim_colour(self.theme))
        self.spin.setPalette(palette)


def set_column_width(spin: QDoubleSpinBox) -> None:
    """Every spin box as wide as the others: the values line up in one column."""
    spin.setFixedWidth(spin.fontMetrics().horizontalAdvance(SPIN_WIDTH_TEXT) + 32)


def _tip(setting: Setting) -> str:
    where = f"[{setting.table}] {setting.key}" if setting.table else setting.key
    return f"{setting.tip} ({where} in the config file)".strip()


def _spin(setting: Setting, value: float | None) -> QDoubleSpinBox:
    spin = QDoubleSpinBox()
    spin.setDecimals(max(setting.decimals, _decimals(value)))
    spin.setRange(setting.low, setting.high)
    spin.setSingleStep(setting.step)
    spin.setSuffix(setting.unit)
    spin.setKeyboardTracking(False)
    set_column_width(spin)
    return spin


def _decimals(value: float | None) -> int:
    """The decimals ``value`` needs to be shown as it is (at most MAX_DECIMALS)."""
    if value is None:
        return 0
    for decimals in range(MAX_DECIMALS):
        if round(value, decimals) == value:
            return decimals
    return MAX_DECIMALS
