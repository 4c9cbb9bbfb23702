"""The one place where the engine meets Qt.

The engine service (telemetry and the lifecycle manager) runs on its own QThread, ticked
by QTimers that live in that thread: one per sample, and a single-shot one for the next
restart that is due between samples. Snapshots, history frames and events cross to the UI
thread as queued signals; user commands travel the other way as signals into the engine
thread.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable

from PySide6.QtCore import QMetaObject, QObject, Qt, QThread, QTimer, Signal, Slot

from gpuwarden.engine.events import Event
from gpuwarden.engine.service import EngineService
from gpuwarden.engine.telemetry.snapshot import HistoryFrame, Snapshot

log = logging.getLogger(__name__)

_threads: weakref.WeakSet[QThread] = weakref.WeakSet()


def running_engine_threads() -> list[QThread]:
    """Engine threads still running (tests assert none is left behind)."""
    return [t for t in _threads if t.isRunning()]


class _EngineWorker(QObject):
    """Lives in the engine thread; every slot runs there."""

    snapshot = Signal(object)
    frame = Signal(object)
    event = Signal(object)

    def __init__(self, service: EngineService, window_s: float,
                 leave_running: bool = False) -> None:
        super().__init__()
        self._service = service
        self._leave_running = leave_running
        self._sampler = service.sampler
        self._window_s = window_s
        self._timer: QTimer | None = None
        self._deadline: QTimer | None = None
        service.bus.subscribe(self.event.emit)

    @Slot()
    def start(self) -> None:
        self._timer = QTimer(self)
        self._timer.setInterval(round(self._sampler.interval_s * 1000))
        self._timer.timeout.connect(self.tick)
        self._deadline = QTimer(self)
        self._deadline.setSingleShot(True)
        self._deadline.timeout.connect(self._on_deadline)
        for event in self._service.bus.recent():  # what happened before the window opened
            self.event.emit(event)
        self._timer.start()
        self._service.start()  # adoption, a first sample, autostart
        self._emit_latest()
        self._arm_deadline()

    @Slot()
    def tick(self) -> None:
        self._service.tick()
        self._emit_latest()
        self._arm_deadline()

    def _emit_latest(self) -> None:
        snap = self._sampler.last
        if snap is not None:
            self.snapshot.emit(snap)
            self._emit_frame(snap)

    @Slot()
    def _on_deadline(self) -> None:
        self._service.manager.tick()
        self._arm_deadline()

    def _arm_deadline(self) -> None:
        """Wake up for the next due restart instead of waiting for the next sample."""
        due = self._service.manager.next_deadline()
        if self._deadline is None or due is None:
            return
        delay_ms = max(0, round((due - self._service.clock.time()) * 1000))
        if delay_ms < self._sampler.interval_s * 1000:
            self._deadline.start(delay_ms)

    def _emit_frame(self, snap: Snapshot | None) -> None:
        if snap is None:
            return
        self.frame.emit(self._sampler.history.frame(since=snap.ts - self._window_s))

    @Slot(float)
    def set_window(self, seconds: float) -> None:
        self._window_s = seconds
        self._emit_frame(self._sampler.last)

    @Slot(int)
    def use_simulated(self, count: int) -> None:
        self._service.use_simulated(count)
        self.tick()

    @Slot()
    def shutdown(self) -> None:
        for timer in (self._timer, self._deadline):
            if timer is not None:
                timer.stop()
        self._service.close(leave_running=self._leave_running)


class EngineBridge(QObject):
    """Owns the engine thread. Widgets connect to its signals and call its methods."""

    snapshot_ready = Signal(object)  # Snapshot
    history_ready = Signal(object)  # HistoryFrame
    event_raised = Signal(object)  # Event

    _window_requested = Signal(float)
    _simulate_requested = Signal(int)

    def __init__(self, service_factory: Callable[[], EngineService],
                 window_s: float = 60.0, *, leave_running: bool = False) -> None:
        super().__init__()
        self._thread = QThread()
        self._thread.setObjectName("gpuwarden-engine")
        _threads.add(self._thread)
        self._worker = _EngineWorker(service_factory(), window_s, leave_running)
        self._worker.moveToThread(self._thread)
        self._thread.started.connect(self._worker.start)
        self._worker.snapshot.connect(self._on_snapshot)
        self._worker.frame.connect(self._on_frame)
        self._worker.event.connect(self._on_event)
        self._window_requested.connect(self._worker.set_window)
        self._simulate_requested.connect(self._worker.use_simulated)
        self.latest: Snapshot | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_ms: int = 5000) -> None:
        """Stop sampling and join the engine thread. Safe to call twice."""
        if not self._thread.isRunning():
            return
        _invoke_blocking(self._worker, "shutdown")
        self._thread.quit()
        if not self._thread.wait(timeout_ms):
            log.error("the engine thread did not stop within %d ms", timeout_ms)

    def set_window(self, seconds: float) -> None:
        self._window_requested.emit(seconds)

    def use_simulated(self, count: int = 1) -> None:
        self._simulate_requested.emit(count)

    @Slot(object)
    def _on_snapshot(self, snap: Snapshot) -> None:
        self.latest = snap
        self.snapshot_ready.emit(snap)

    @Slot(object)
    def _on_frame(self, frame: HistoryFrame) -> None:
        self.history_ready.emit(frame)

    @Slot(object)
    def _on_event(self, event: Event) -> None:
        self.event_raised.emit(event)


def _invoke_blocking(obj: QObject, method: str) -> None:
    QMetaObject.invokeMethod(obj, method, Qt.ConnectionType.BlockingQueuedConnection)
