"""A short list of what happened, newest first."""

from __future__ import annotations

import time

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QListWidget, QListWidgetItem

from gpuwarden.engine.events import Event

MAX_ROWS = 500


class EventLog(QListWidget):
    def __init__(self) -> None:
        super().__init__()
        self.setAlternatingRowColors(True)
        self.setUniformItemSizes(True)
        self.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)

    def add_event(self, event: Event) -> None:
        stamp = time.strftime("%H:%M:%S", time.localtime(event.ts))
        item = QListWidgetItem(f"{stamp}  {event.type:<24} {event.describe()}")
        item.setToolTip(event.describe())
        self.insertItem(0, item)
        while self.count() > MAX_ROWS:
            self.takeItem(self.count() - 1)

    def texts(self) -> list[str]:
        return [self.item(i).text() for i in range(self.count())]
