"""The main window: the models and their actions, GPU graph tabs, host graphs, event log,
and the no-GPU banner. Command answers show in the status bar."""

from __future__ import annotations

import itertools
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QSettings, Qt, QTimer, Slot
from PySide6.QtGui import QCloseEvent
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QSizePolicy,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from gpuwarden.app.alerts_view import AlertsView
from gpuwarden.app.bridge import EngineBridge
from gpuwarden.app.commands import Commands
from gpuwarden.app.config_actions import ConfigActions
from gpuwarden.app.llama_setup import LlamaSetup
from gpuwarden.app.menus import MenuBar, open_file
from gpuwarden.app.tray import Tray
from gpuwarden.app.window_state import restore_state, save_state
from gpuwarden.engine.details import ModelDetails
from gpuwarden.engine.events import Event
from gpuwarden.engine.lifecycle.config import Config
from gpuwarden.engine.telemetry.snapshot import HistoryFrame, Snapshot
from gpuwarden.engine.views import ModelRow
from gpuwarden.widgets.alert_banner import AlertBanner
from gpuwarden.widgets.confirm import confirm
from gpuwarden.widgets.event_log import EventLog
from gpuwarden.widgets.gpu_panel import GpuPanel, seconds_ago
from gpuwarden.widgets.gpu_strip import GpuStrip
from gpuwarden.widgets.graph_events import GraphMark, graph_mark
from gpuwarden.widgets.host_panel import HostPanel
from gpuwarden.widgets.model_details import ModelDetailsPanel
from gpuwarden.widgets.model_panel import ModelPanel
from gpuwarden.widgets.no_gpu_banner import NoGpuBanner
from gpuwarden.widgets.plot import WINDOWS_S, FloatArray
from gpuwarden.widgets.theme import Theme

_SOURCE_TEXT = {"nvml": "NVIDIA (NVML)", "simulated": "SIMULATED GPU", "none": "no GPU"}
REFUSAL_SHOWN_MS = 8000
DONE_SHOWN_MS = 5000


class MainWindow(QMainWindow):
    """``settings``: where the window's geometry, splitters, columns and time range are
    kept between runs (None: nowhere, as in tests)."""

    def __init__(self, bridge: EngineBridge, theme: Theme,
                 settings: QSettings | None = None) -> None:
        super().__init__()
        self.setWindowTitle("gpuwarden")
        self.resize(1280, 860)
        self._bridge = bridge
        self._theme = theme
        self._window_s = WINDOWS_S[0][1]
        self.gpu_panels: dict[int, GpuPanel] = {}
        self._build()
        self.commands = Commands(bridge, self, lambda text, warn: self.show_answer(
            text, warning=warn))
        self.config_actions = ConfigActions(bridge, theme, self, lambda text, warn:
                                            self.show_answer(text, warning=warn))
        self._settings = settings
        self.llama_setup = LlamaSetup(bridge, theme, self, self.commands.send)
        self.menus = MenuBar(self, self.model_panel,
                             settings=lambda: self.config_actions.settings(self.prefs),
                             build_llama_server=self.llama_setup.build,
                             add_model=self.config_actions.add_model,
                             edit_model=lambda: self._on_selected(self.config_actions.edit_model),
                             remove_model=lambda: self._on_selected(
                                 self.config_actions.remove_model),
                             open_config=self.open_config,
                             reload_config=lambda: self.commands.send("reload_config", ()),
                             free_vram=self.free_vram, emergency_stop=self.emergency_stop,
                             set_window=self.set_window_seconds)
        self.menus.check_range(self._window_s)
        self._set_tab_order()
        self.model_panel.more_actions = [self.menus.edit_model, self.menus.remove_model]
        if settings is not None:
            restore_state(self, settings)
        bridge.snapshot_ready.connect(self.on_snapshot)
        bridge.history_ready.connect(self.on_history)
        bridge.event_raised.connect(self.on_event)
        bridge.models_changed.connect(self.on_models)
        self.model_panel.action_requested.connect(self.commands.send)
        self.alerts = AlertsView(theme, self.alert_banner, self.gpu_strip, self.gpu_tabs)
        self.alerts.on_config(bridge.config)
        bridge.config_changed.connect(self.alerts.on_config)
        bridge.config_changed.connect(self._on_config)
        self._details_query: int | None = None
        bridge.answered.connect(self._on_answer)
        self.model_panel.table.selectionModel().selectionChanged.connect(
            lambda *_: self.refresh_details())
        self.model_panel.set_rows(bridge.rows)
        self.banner.simulate_button.clicked.connect(lambda: bridge.use_simulated(1))
        self.tray = Tray(self, bridge)  # after the alerts: its icon follows their level
        self.menus.quit.triggered.disconnect()
        self.menus.quit.triggered.connect(self.tray.quit)  # Ctrl+Q quits, even with a tray

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
        self.alert_banner = AlertBanner(self._theme)
        self.gpu_strip = GpuStrip(self._theme)
        # One tab per GPU, then the host's: the strip above keeps every GPU in sight.
        self.gpu_tabs = QTabWidget()
        self._frame: tuple[HistoryFrame, FloatArray] | None = None
        self._early_marks: dict[int, list[GraphMark]] = {}
        self.gpu_tabs.currentChanged.connect(self._on_tab_changed)
        self.gpu_strip.gpu_clicked.connect(self.show_gpu)
        self.host_panel = HostPanel(self._theme)
        self.gpu_tabs.addTab(self.host_panel, "Host")
        self.event_log = EventLog(self._theme)
        self.event_log.message.connect(lambda text: self.show_answer(text, warning=False))
        self.model_panel = ModelPanel(self._theme)
        self.details_panel = ModelDetailsPanel(self._theme)
        self.details_panel.open_failed.connect(lambda text: self.show_answer(text, warning=True))
        split = QSplitter(Qt.Orientation.Vertical)
        split.setChildrenCollapsible(False)
        split.addWidget(self.model_panel)
        split.addWidget(self.gpu_tabs)
        split.addWidget(self.event_log)
        split.setStretchFactor(0, 0)  # the table keeps its height; the graphs take the rest
        split.setStretchFactor(1, 6)
        split.setStretchFactor(2, 2)
        split.setSizes([self.model_panel.preferred_height(), 520, 170])
        self.splitter = split
        # The selected model's details run the window's full height on the right.
        beside = QSplitter(Qt.Orientation.Horizontal)
        beside.addWidget(split)
        beside.addWidget(self.details_panel)
        beside.setCollapsible(0, False)
        beside.setStretchFactor(0, 1)
        beside.setStretchFactor(1, 0)
        beside.setSizes([1000, 380])
        self.models_splitter = beside
        self.split_moved_by_user = False
        split.splitterMoved.connect(self._on_split_moved)
        self.command_label = QLabel()
        self.command_label.setObjectName("commandAnswer")
        # A long answer is cut at the window's edge (its tooltip has it all), never widens it.
        self.command_label.setSizePolicy(QSizePolicy.Policy.Ignored,
                                         QSizePolicy.Policy.Preferred)
        self.note_label = QLabel()
        self.note_label.setObjectName("sourceNote")
        self.statusBar().addWidget(self.command_label, 1)
        self.statusBar().addPermanentWidget(self.note_label)
        self._answer_timer = QTimer(self)
        self._answer_timer.setSingleShot(True)
        self._answer_timer.timeout.connect(self.command_label.clear)
        central = QWidget()
        layout = QVBoxLayout(central)
        layout.addLayout(top)
        layout.addWidget(self.banner)
        layout.addWidget(self.alert_banner)
        layout.addWidget(self.gpu_strip)
        layout.addWidget(beside, 1)
        self.setCentralWidget(central)

    def _set_tab_order(self) -> None:
        """Tab goes top to bottom, then to the details on the right: the time range, the
        model actions, the models table, the graph tabs, the event log, the details."""
        panel = self.model_panel
        chain = [self.window_choice, *panel.buttons.values(), panel.table,
                 self.gpu_tabs, self.event_log.model_filter,
                 self.event_log.severity_filter, self.event_log.search,
                 *self.event_log.buttons, self.event_log.table,
                 self.details_panel.tabs]
        for first, second in itertools.pairwise(chain):
            QWidget.setTabOrder(first, second)

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
        if hasattr(self, "menus"):
            self.menus.check_range(self._window_s)
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
            title = _tab_title(sample.index, sample.name, sample.available)
            if self.gpu_tabs.tabText(tab) != title:  # a new title lays the tab bar out again
                self.gpu_tabs.setTabText(tab, title)
        self.host_panel.update_sample(snap.host)
        self.alerts.on_snapshot(snap)
        stamp = time.strftime("%H:%M:%S", time.localtime(snap.ts))
        self.source_label.setText(f"{_SOURCE_TEXT[snap.gpu_source]} · last sample {stamp}")
        # The banner already explains a missing GPU; the status bar notes a simulation.
        self.note_label.setText("" if no_gpu else (snap.gpu_note or ""))
        self.tray.on_snapshot(snap)

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
                panel.set_pressure_threshold(self._bridge.config.pressure.vram.enter)
                for mark in self._early_marks.pop(g.index, []):
                    panel.add_marker(mark.ts, mark.text, mark.level)
                self.gpu_panels[g.index] = panel
                at = self.gpu_tabs.indexOf(self.host_panel)  # GPUs before the host
                self.gpu_tabs.insertTab(at, panel, _tab_title(g.index, g.name, g.available))
                if len(self.gpu_panels) == 1:
                    self.gpu_tabs.setCurrentIndex(0)

    @Slot(object)
    def on_history(self, frame: HistoryFrame) -> None:
        """Only the graphs in view get the new data (a hidden tab's four plots would cost
        as much); a tab gets the latest when it is brought to the front."""
        self._frame = (frame, seconds_ago(frame))
        self._on_tab_changed()

    @Slot()
    def _on_tab_changed(self) -> None:
        panel = self.gpu_tabs.currentWidget()
        if isinstance(panel, GpuPanel | HostPanel) and self._frame is not None:
            panel.update_history(*self._frame)

    @Slot(object)
    def on_event(self, event: Event) -> None:
        self.event_log.add_event(event)
        self.alerts.on_event(event)
        self._mark(event)
        self.llama_setup.on_event(event)
        self.tray.on_event(event)

    def _mark(self, event: Event) -> None:
        """What the engine did, on the graphs of the GPU (or the host) it concerns; a mark
        for a GPU whose tab is not there yet waits for it."""
        mark = graph_mark(event, self._bridge.rows)
        if mark is None:
            return
        if mark.gpu is None:
            self.host_panel.add_marker(mark.ts, mark.text, mark.level)
        elif (panel := self.gpu_panels.get(mark.gpu)) is not None:
            panel.add_marker(mark.ts, mark.text, mark.level)
        else:
            self._early_marks.setdefault(mark.gpu, []).append(mark)

    @Slot(object)
    def _on_config(self, config: Config) -> None:
        for panel in self.gpu_panels.values():
            panel.set_pressure_threshold(config.pressure.vram.enter)

    @Slot(object)
    def on_models(self, rows: tuple[ModelRow, ...]) -> None:
        count = self.model_panel.model.rowCount()
        self.model_panel.set_rows(rows)
        self.alerts.on_models(rows)
        self.refresh_details()
        if self.model_panel.model.rowCount() != count:
            # After the layout settles: the GPU tabs may have just been shown.
            QTimer.singleShot(0, self._fit_model_panel)

    def refresh_details(self) -> None:
        """Ask the engine thread for the selected model's details (answered in
        :meth:`_on_answer`; an answer for an earlier selection is dropped)."""
        row = self.model_panel.selected()
        if row is None:
            self._details_query = None
            self.details_panel.show_details(None)
            return
        self._details_query = self._bridge.ask("details", row.name)

    @Slot(int, object)
    def _on_answer(self, query_id: int, answer: object) -> None:
        if query_id == self._details_query and (
                answer is None or isinstance(answer, ModelDetails)):
            self.details_panel.show_details(answer)

    @Slot()
    def _fit_model_panel(self) -> None:
        """Give the table the height of its rows (up to eight), taken from the graphs
        below it, until the user drags the splitter."""
        sizes = self.splitter.sizes()
        want = self.model_panel.preferred_height()
        if self.split_moved_by_user or not sum(sizes) or sizes[0] == want:
            return
        biggest = max(range(1, len(sizes)), key=lambda i: sizes[i])
        sizes[biggest] = max(0, sizes[biggest] - (want - sizes[0]))
        sizes[0] = want
        self.splitter.setSizes(sizes)

    @Slot(int, int)
    def _on_split_moved(self, _pos: int, _index: int) -> None:
        self.split_moved_by_user = True

    def show_answer(self, text: str, *, warning: bool) -> None:
        """A command's answer in the status bar, without a dialog: refusals stand out in
        the warning colour and stay longer."""
        self.command_label.setStyleSheet(
            f"#commandAnswer {{ color: {self._theme.state_busy}; font-weight: bold; }}"
            if warning else "")
        self.command_label.setText(text)
        self.command_label.setToolTip(text)
        self._answer_timer.start(REFUSAL_SHOWN_MS if warning else DONE_SHOWN_MS)

    def open_config(self) -> None:
        path = self._bridge.config_path
        if path is None:
            self.show_answer("No config file: gpuwarden was started with its built-in "
                             "defaults", warning=True)
        elif not path.exists():
            self.show_answer(f"{path} does not exist yet: write it (see docs/config.md) and "
                             "gpuwarden reads it at once", warning=True)
        elif not open_file(path):
            self.show_answer(f"No application opens {path}", warning=True)

    @property
    def prefs(self) -> QSettings:
        """Where the app's preferences live: the window's settings; a window made
        without any (tests) gets a throwaway file the first time they are needed."""
        if self._settings is None:
            folder = Path(tempfile.mkdtemp(prefix="gpuwarden-prefs-"))
            self._settings = QSettings(str(folder / "prefs.ini"), QSettings.Format.IniFormat)
        return self._settings

    def _on_selected(self, action: Callable[[str], object]) -> None:
        row = self.model_panel.selected()
        if row is None:
            self.show_answer("Select a model first", warning=True)
        else:
            action(row.name)

    @Slot(int)
    def show_gpu(self, index: int) -> None:
        """Bring GPU ``index``'s graphs to the front (a click on its strip row)."""
        if index in self.gpu_panels:
            self.gpu_tabs.setCurrentWidget(self.gpu_panels[index])

    def free_vram(self) -> None:
        current = self.gpu_tabs.currentWidget()
        self.commands.free_vram(current.index if isinstance(current, GpuPanel) else 0)

    def emergency_stop(self) -> None:
        if confirm(self, "Emergency stop", "Stop every model on every GPU now? Nothing "
                   "restarts by itself; load them again by hand.", warning=True):
            self.commands.send("emergency_stop", ())

    def closeEvent(self, event: QCloseEvent) -> None:
        if self._settings is not None:
            save_state(self, self._settings)
        if not self.tray.closing.close_for_real(event):
            return  # hidden to the tray, or asking first: the engine keeps running
        self.hide()  # stopping servers can take their 10 s grace: not with a frozen window
        self._bridge.stop()
        super().closeEvent(event)
        self.tray.closing.closed()


def _tab_title(index: int, name: str, available: bool) -> str:
    title = f"GPU {index} · {name}"
    return title if available else f"{title} (lost)"
