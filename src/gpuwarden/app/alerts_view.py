"""Alerts where the user is looking: the engine's events folded into the alerts active
now (:class:`AlertBoard`), shown in the banner, on the GPU tabs' titles and in the
all-GPUs strip, each in amber or red, and cleared when the trouble is over."""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtCore import QObject, Slot
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QTabWidget, QWidget

from gpuwarden.engine.alerts import AlertBoard
from gpuwarden.engine.events import Event
from gpuwarden.engine.lifecycle.config import Config
from gpuwarden.engine.telemetry.snapshot import Snapshot
from gpuwarden.engine.views import ModelRow
from gpuwarden.widgets.alert_banner import AlertBanner
from gpuwarden.widgets.gpu_strip import GpuStrip
from gpuwarden.widgets.theme import Theme, level_colour


class AlertsView(QObject):
    """Feeds the banner, the strip and the tab colours from one :class:`AlertBoard`."""

    def __init__(self, theme: Theme, banner: AlertBanner, strip: GpuStrip,
                 tabs: QTabWidget) -> None:
        super().__init__(tabs)
        self.board = AlertBoard()
        self._theme = theme
        self._banner = banner
        self._strip = strip
        self._tabs = tabs
        self._latest: Snapshot | None = None
        banner.dismissed.connect(self.dismiss)

    @Slot(object)
    def on_event(self, event: Event) -> None:
        if self.board.apply(event):
            self.show()

    @Slot(str)
    def dismiss(self, key: str) -> None:
        if self.board.dismiss(key):
            self.show()

    def on_models(self, rows: Sequence[ModelRow]) -> None:
        self.board.set_model_gpus({r.name: r.gpu for r in rows})

    def on_config(self, config: Config) -> None:
        self._strip.set_vram_warn_pct(config.pressure.vram.enter)

    def on_snapshot(self, snap: Snapshot) -> None:
        self._latest = snap
        self._strip.show_snapshot(snap, {g.index: self.board.level(g.index)
                                         for g in snap.gpus})
        self._colour_tabs()

    def show(self) -> None:
        self._banner.set_alerts(self.board.active())
        if self._latest is not None:
            self.on_snapshot(self._latest)

    def _colour_tabs(self) -> None:
        bar = self._tabs.tabBar()
        for i in range(self._tabs.count()):
            page: QWidget | None = self._tabs.widget(i)
            index = getattr(page, "index", None)
            colour = level_colour(self._theme, self.board.level(index)) \
                if isinstance(index, int) else None
            wanted = QColor(colour) if colour else self._tabs.palette().windowText().color()
            if bar.tabTextColor(i) != wanted:  # each change repaints the tab bar
                bar.setTabTextColor(i, wanted)
