"""The main window: GPU graph tabs, host graphs, event log, and the no-GPU banner."""

from __future__ import annotations

import time

from PySide6.QtCore import Qt, Slot
from PySide6.QtGui import QCloseEvent
from PySide6.QtWidgets import (
    QComboBox,
    QFrame,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QPushButton,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from gpuwarden.app.bridge import EngineBridge
from gpuwarden.engine.events import Event
from gpuwarden.engine.telemetry.snapshot import HistoryFrame, Snapshot
from gpuwarden.widgets.event_log import EventLog
from gpuwarden.widgets.gpu_panel import GpuPanel, seconds_ago
from gpuwarden.widgets.host_panel import HostPanel
from gpuwarden.widgets.plot import WINDOWS_S
from gpuwarden.widgets.theme import Theme

_SOURCE_TEXT = {"nvml": "NVIDIA (NVML)", "simulated": "SIMULATED GPU", "none": "no GPU"}


class NoGpuBanner(QFrame):
    """Says plainly that no NVIDIA GPU/driver was found and offers the simulated GPU."""

    def __init__(self, theme: Theme) -> None:
        super().__init__()
        self.setObjectName("noGpuBanner")
        self.setStyleSheet(
            f"#noGpuBanner {{ background: {theme.banner_bg}; border-radius: 6px; }}"
            f"#noGpuBanner QLabel {{ color: {theme.banner_fg}; }}"
        )
        self.text = QLabel()
        self.text.setWordWrap(True)
        self.simulate_button = QPushButton("Use a simulated GPU")
        layout = QHBoxLayout(self)
        layout.addWidget(self.text, 1)
        layout.addWidget(self.simulate_button)


class MainWindow(QMainWindow):
    def __init__(self, bridge: EngineBridge, theme: Theme) -> None:
        super().__init__()
        self.setWindowTitle("gpuwarden")
        self.resize(1280, 860)
        self._bridge = bridge
        self._theme = theme
        self._window_s = WINDOWS_S[0][1]
        self.gpu_panels: dict[int, GpuPanel] = {}
        self._build()
        bridge.snapshot_ready.connect(self.on_snapshot)
        bridge.history_ready.connect(self.on_history)
        bridge.event_raised.connect(self.on_event)
        self.banner.simulate_button.clicked.connect(lambda: bridge.use_simulated(1))

    def _build(self) -> None:
        self.window_choice = QComboBox()
        for label, seconds in WINDOWS_S:
            self.window_choice.addItem(label, seconds)
        self.window_choice.currentIndexChanged.connect(self._on_window_choice)
        self.source_label = QLabel()
        self.source_label.setObjectName("sourceLabel")
        top = QHBoxLayout()
        top.addWidget(QLabel("Show the last"))
        top.addWidget(self.window_choice)
        top.addStretch(1)
        top.addWidget(self.source_label)
        self.banner = NoGpuBanner(self._theme)
        self.banner.hide()
        self.gpu_tabs = QTabWidget()
        self.gpu_tabs.hide()
        self.host_panel = HostPanel(self._theme)
        self.event_log = EventLog()
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.gpu_tabs)
        split.addWidget(self.host_panel)
        split.addWidget(self.event_log)
        split.setStretchFactor(0, 6)
        split.setStretchFactor(1, 3)
        split.setStretchFactor(2, 1)
        split.setSizes([600, 260, 110])
        central = QWidget()
        layout = QVBoxLayout(central)
        layout.addLayout(top)
        layout.addWidget(self.banner)
        layout.addWidget(split, 1)
        self.setCentralWidget(central)

    @property
    def window_seconds(self) -> float:
        return self._window_s

    def set_window_seconds(self, seconds: float) -> None:
        index = self.window_choice.findData(seconds)
        if index >= 0:
            self.window_choice.setCurrentIndex(index)

    @Slot(int)
    def _on_window_choice(self, index: int) -> None:
        self._window_s = float(self.window_choice.itemData(index))
        for panel in self._panels():
            panel.set_window(self._window_s)
        self._bridge.set_window(self._window_s)

    def _panels(self) -> list[GpuPanel | HostPanel]:
        return [*self.gpu_panels.values(), self.host_panel]

    @Slot(object)
    def on_snapshot(self, snap: Snapshot) -> None:
        self._sync_gpu_tabs(snap)
        no_gpu = snap.gpu_source == "none"
        self.banner.setVisible(no_gpu)
        if no_gpu:
            self.banner.text.setText(snap.gpu_note or "No NVIDIA GPU found.")
        for sample in snap.gpus:
            self.gpu_panels[sample.index].update_sample(sample)
            tab = self.gpu_tabs.indexOf(self.gpu_panels[sample.index])
            self.gpu_tabs.setTabText(tab, _tab_title(sample.index, sample.name, sample.available))
        self.host_panel.update_sample(snap.host)
        stamp = time.strftime("%H:%M:%S", time.localtime(snap.ts))
        self.source_label.setText(f"{_SOURCE_TEXT[snap.gpu_source]} · last sample {stamp}")
        # The banner already explains a missing GPU; the status bar notes a simulation.
        self.statusBar().showMessage("" if no_gpu else (snap.gpu_note or ""), 0)

    def _sync_gpu_tabs(self, snap: Snapshot) -> None:
        wanted = {g.index for g in snap.gpus}
        for index in sorted(set(self.gpu_panels) - wanted):
            panel = self.gpu_panels.pop(index)
            self.gpu_tabs.removeTab(self.gpu_tabs.indexOf(panel))
            panel.deleteLater()
        for g in snap.gpus:
            if g.index not in self.gpu_panels:
                panel = GpuPanel(g.index, self._theme)
                panel.set_window(self._window_s)
                self.gpu_panels[g.index] = panel
                self.gpu_tabs.addTab(panel, _tab_title(g.index, g.name, g.available))
        self.gpu_tabs.setVisible(bool(self.gpu_panels))

    @Slot(object)
    def on_history(self, frame: HistoryFrame) -> None:
        x = seconds_ago(frame)
        for panel in self._panels():
            panel.update_history(frame, x)

    @Slot(object)
    def on_event(self, event: Event) -> None:
        self.event_log.add_event(event)

    def closeEvent(self, event: QCloseEvent) -> None:
        self.hide()  # stopping servers can take their 10 s grace: not with a frozen window
        self._bridge.stop()
        super().closeEvent(event)


def _tab_title(index: int, name: str, available: bool) -> str:
    title = f"GPU {index} · {name}"
    return title if available else f"{title} (lost)"
