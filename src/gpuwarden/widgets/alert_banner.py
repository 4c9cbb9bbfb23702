"""The alerts banner: what is wrong right now, amber or red, above everything else.

One line per alert (a coloured strip and icon, the title, what was done, since when, and a
close button for those the user may dismiss), at most three; the rest are counted ("+2 more") and
listed in full in the tooltip. Hidden while there is nothing to say.
"""

from __future__ import annotations

import time

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QPainter, QPaintEvent
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QSizePolicy,
    QStyle,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from gpuwarden.engine.alerts import Alert
from gpuwarden.widgets.theme import Theme, level_colour

MAX_LINES = 3
ICON_PX = 16
CLOSE_TEXT = "\u00d7"  # the multiplication sign: the usual close cross


def since_text(ts: float) -> str:
    return "since " + time.strftime("%H:%M:%S", time.localtime(ts))


def alert_text(alert: Alert) -> str:
    """The whole alert on one line (the tooltip's list, the clipboard)."""
    detail = f": {alert.detail}" if alert.detail else ""
    return f"{alert.title}{detail} ({since_text(alert.since_ts)})"


class ElidedLabel(QLabel):
    """A label that ends in "…" where it is cut, and never widens its window."""

    def __init__(self) -> None:
        super().__init__()
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        rect = self.contentsRect()
        text = self.fontMetrics().elidedText(self.text(), Qt.TextElideMode.ElideRight,
                                             rect.width())
        self.style().drawItemText(painter, rect, int(self.alignment()), self.palette(),
                                  self.isEnabled(), text, self.foregroundRole())


class AlertLine(QWidget):
    """One alert. Made once and given another alert as the list changes."""

    dismiss_clicked = Signal(str)

    def __init__(self, theme: Theme) -> None:
        super().__init__()
        self._theme = theme
        self._key = ""
        self._level = ""
        self.strip = QFrame()
        self.strip.setFixedWidth(4)
        self.icon = QLabel()
        self.icon.setFixedSize(ICON_PX, ICON_PX)
        self.title = QLabel()
        self.title.setObjectName("alertTitle")
        self.detail = ElidedLabel()
        self.since = QLabel()
        self.since.setObjectName("alertSince")
        self.close_button = QToolButton()
        self.close_button.setText(CLOSE_TEXT)
        self.close_button.setAutoRaise(True)
        self.close_button.setToolTip("Dismiss")
        self.close_button.clicked.connect(lambda: self.dismiss_clicked.emit(self._key))
        keep_place = self.close_button.sizePolicy()
        keep_place.setRetainSizeWhenHidden(True)  # the "since" column stays in line
        self.close_button.setSizePolicy(keep_place)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(8)
        layout.addWidget(self.strip)
        layout.addWidget(self.icon)
        layout.addWidget(self.title)
        layout.addWidget(self.detail, 1)
        layout.addWidget(self.since)
        layout.addWidget(self.close_button)

    @property
    def key(self) -> str:
        return self._key

    def show_alert(self, alert: Alert) -> None:
        self._key = alert.key
        if alert.level != self._level:
            self._level = alert.level
            colour = level_colour(self._theme, alert.level)
            self.strip.setStyleSheet(f"background: {colour}; border: none;")
            pixmap = (QStyle.StandardPixmap.SP_MessageBoxCritical if alert.level == "error"
                      else QStyle.StandardPixmap.SP_MessageBoxWarning)
            self.icon.setPixmap(self.style().standardIcon(pixmap).pixmap(ICON_PX, ICON_PX))
        self.title.setText(alert.title)
        self.detail.setText(alert.detail)
        self.detail.setToolTip(alert.detail)
        self.since.setText(since_text(alert.since_ts))
        self.close_button.setVisible(alert.dismissable)


class AlertBanner(QFrame):
    """The active alerts (``set_alerts``, as ``AlertBoard.active()`` orders them): amber,
    or red when any is an error. ``dismissed(key)`` when the user closes one."""

    dismissed = Signal(str)

    def __init__(self, theme: Theme) -> None:
        super().__init__()
        self._theme = theme
        self._level = ""
        self._alerts: tuple[Alert, ...] = ()
        self.setObjectName("alertBanner")
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)
        self.lines = [AlertLine(theme) for _ in range(MAX_LINES)]
        self.more = QLabel()
        self.more.setObjectName("alertMore")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 4, 4, 4)
        layout.setSpacing(2)
        for line in self.lines:
            line.dismiss_clicked.connect(self.dismissed)
            layout.addWidget(line)
        layout.addWidget(self.more)
        self.hide()

    @property
    def level(self) -> str:
        """"warning" or "error" while shown; "" when there is nothing to show."""
        return self._level if self._alerts else ""

    def alerts(self) -> tuple[Alert, ...]:
        return self._alerts

    def set_alerts(self, alerts: tuple[Alert, ...]) -> None:
        if alerts == self._alerts:
            return
        self._alerts = alerts
        if not alerts:
            self.hide()
            return
        self._set_level("error" if any(a.level == "error" for a in alerts) else "warning")
        for i, line in enumerate(self.lines):
            if i < len(alerts):
                line.show_alert(alerts[i])
            line.setVisible(i < len(alerts))
        hidden = len(alerts) - MAX_LINES
        self.more.setText(f"+{hidden} more (hover to see them all)" if hidden > 0 else "")
        self.more.setVisible(hidden > 0)
        self.setToolTip("\n".join(alert_text(a) for a in alerts))
        self.show()

    def _set_level(self, level: str) -> None:
        if level == self._level:
            return
        self._level = level
        t = self._theme
        bg, fg = (t.alert_error_bg, t.alert_error_fg) if level == "error" \
            else (t.alert_warn_bg, t.alert_warn_fg)
        self.setStyleSheet(
            f"#alertBanner {{ background: {bg}; border-radius: 6px; }}"
            f"#alertBanner QLabel, #alertBanner QToolButton {{ color: {fg}; }}"
            "#alertTitle { font-weight: bold; }"
        )
