"""The one place where the engine meets Qt.

The engine runs on its own QThread, driven by one single-shot QTimer that lives in that
thread: each :meth:`Engine.step` says when it wants the next, and the engine's waker (a
queued signal) brings the next step forward when something happens in between (a model
died and its restart is due sooner). Snapshots, history frames, model rows, events and
command results cross to the UI thread as queued signals; user commands travel the other
way as signals into the engine thread, so the UI thread never waits on the engine.
"""

from __future__ import annotations

import itertools
import logging
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PySide6.QtCore import QMetaObject, QObject, Qt, QThread, QTimer, Signal, Slot

from gpuwarden.engine.events import Event
from gpuwarden.engine.facade import Engine
from gpuwarden.engine.lifecycle.config import Config
from gpuwarden.engine.telemetry.snapshot import HistoryFrame, Snapshot
from gpuwarden.engine.views import ModelRow
from gpuwarden.remote.engine import RemoteEngine

log = logging.getLogger(__name__)

_threads: weakref.WeakSet[QThread] = weakref.WeakSet()

# The engine commands the window may send; each answers an AdminResult.
COMMANDS = frozenset({"load", "unload", "offload", "restart", "set_policy", "set_priority",
                      "pin", "unpin", "make_room", "reload_config", "emergency_stop",
                      "pause_automation"})
# The engine views the window may ask for off the UI thread; each answers what the engine
# method returns.
QUERIES = frozenset({"load_preview", "preflight", "details", "endpoint"})
AnyEngine = Engine | RemoteEngine  # here, or elsewhere through its control API


def running_engine_threads() -> list[QThread]:
    """Engine threads still running (tests assert none is left behind)."""
    return [t for t in _threads if t.isRunning()]


@dataclass(frozen=True)
class Command:
    id: int
    name: str
    args: tuple[Any, ...]


class _EngineWorker(QObject):
    """Lives in the engine thread; every slot runs there."""

    snapshot = Signal(object)
    frame = Signal(object)
    engine_event = Signal(object)  # not `event`: that would shadow QObject.event()
    models = Signal(object)  # tuple[ModelRow, ...]
    config = Signal(object)  # Config, when the settings in force change
    command_done = Signal(int, object)  # (command id, AdminResult)
    answer = Signal(int, object)  # (query id, what the view returned)
    _woken = Signal()

    def __init__(self, engine: AnyEngine, window_s: float, leave_running: bool = False) -> None:
        super().__init__()
        self._engine = engine
        self.leave_running = leave_running  # read when the engine shuts down
        self._window_s = window_s
        self._timer: QTimer | None = None
        self._last_seq = -1
        self._rows: tuple[ModelRow, ...] | None = None
        self._config: Config | None = None
        self._before = engine.events_since(0)  # what happened before the window opened
        engine.subscribe(self.engine_event.emit)
        self._woken.connect(self._step, Qt.ConnectionType.QueuedConnection)

    @Slot()
    def start(self) -> None:
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._timer.timeout.connect(self._step)
        for event in self._before:
            self.engine_event.emit(event)
        self._engine.set_waker(self._woken.emit)
        self._engine.start()  # adoption, a first sample, autostart
        self._step()

    @Slot()
    def _step(self) -> None:
        if self._timer is None:
            return  # shut down
        delay = self._engine.step()
        self._publish()
        self._timer.start(max(0, round(delay * 1000)))

    def _publish(self) -> None:
        snap = self._engine.snapshot()
        if snap is not None and snap.seq != self._last_seq:
            self._last_seq = snap.seq
            self.snapshot.emit(snap)
            self._emit_frame(snap)
        if self._engine.config is not self._config:
            self._config = self._engine.config
            self.config.emit(self._config)
        rows = self._engine.models()
        if rows != self._rows:
            self._rows = rows
            self.models.emit(rows)

    def _emit_frame(self, snap: Snapshot | None) -> None:
        if snap is not None:
            self.frame.emit(self._engine.history(since=snap.ts - self._window_s))

    @Slot(object)
    def run_command(self, command: Command) -> None:
        result = getattr(self._engine, command.name)(*command.args)
        self.command_done.emit(command.id, result)
        self._step()

    @Slot(object)
    def run_query(self, query: Command) -> None:
        self.answer.emit(query.id, getattr(self._engine, query.name)(*query.args))

    @Slot(float)
    def set_window(self, seconds: float) -> None:
        self._window_s = seconds
        self._emit_frame(self._engine.snapshot())

    @Slot(int)
    def use_simulated(self, count: int) -> None:
        self._engine.use_simulated(count)
        self._step()

    @Slot()
    def shutdown(self) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        self._engine.close(leave_running=self.leave_running)


class EngineBridge(QObject):
    """Owns the engine thread. Widgets connect to its signals and call its methods."""

    snapshot_ready = Signal(object)  # Snapshot
    history_ready = Signal(object)  # HistoryFrame
    event_raised = Signal(object)  # Event
    models_changed = Signal(object)  # tuple[ModelRow, ...]
    config_changed = Signal(object)  # Config: the settings in force (at start, on reload)
    command_finished = Signal(int, object)  # (the id request() returned, AdminResult)
    answered = Signal(int, object)  # (the id ask() returned, the view's answer)

    _window_requested = Signal(float)
    _simulate_requested = Signal(int)
    _command_requested = Signal(object)
    _query_requested = Signal(object)

    def __init__(self, engine: AnyEngine, window_s: float = 60.0, *,
                 leave_running: bool = False) -> None:
        super().__init__()
        self._thread = QThread()
        self._thread.setObjectName("gpuwarden-engine")
        _threads.add(self._thread)
        self._worker = _EngineWorker(engine, window_s, leave_running)
        self._forced_leave_running = leave_running  # --leave-running: always
        self._worker.moveToThread(self._thread)
        self._thread.started.connect(self._worker.start)
        self._worker.snapshot.connect(self._on_snapshot)
        self._worker.frame.connect(self._on_frame)
        self._worker.engine_event.connect(self._on_event)
        self._worker.models.connect(self._on_models)
        self._worker.config.connect(self._on_config)
        self._worker.command_done.connect(self._on_command_done)
        self._window_requested.connect(self._worker.set_window)
        self._simulate_requested.connect(self._worker.use_simulated)
        self._command_requested.connect(self._worker.run_command)
        self._query_requested.connect(self._worker.run_query)
        self._worker.answer.connect(self.answered)
        self._ids = itertools.count(1)
        self.latest: Snapshot | None = None
        self.rows: tuple[ModelRow, ...] = ()
        self.config: Config = engine.config
        self.config_path: Path | None = engine.config_path

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_ms: int = 30000) -> None:
        """Stop the engine (its models, unless left running) and join its thread. Safe to
        call twice."""
        if not self._thread.isRunning():
            return
        _invoke_blocking(self._worker, "shutdown")
        self._thread.quit()
        if not self._thread.wait(timeout_ms):
            log.error("the engine thread did not stop within %d ms", timeout_ms)

    def set_leave_running(self, on: bool) -> None:
        """Whether quitting leaves the model servers running (for the next gpuwarden to
        adopt); ``--leave-running`` keeps it on. The engine thread reads it only in the
        shutdown that :meth:`stop` waits for."""
        self._worker.leave_running = self._forced_leave_running or on

    def request(self, command: str, *args: Any) -> int:
        """Send a command to the engine; its result comes back as command_finished with
        the id returned here. Never blocks."""
        if command not in COMMANDS:
            raise ValueError(f"unknown engine command {command!r}")
        command_id = next(self._ids)
        self._command_requested.emit(Command(command_id, command, args))
        return command_id

    def ask(self, query: str, *args: Any) -> int:
        """Ask the engine thread for a view (a load preview, a model's details); the
        answer comes back as ``answered`` with the id returned here. Never blocks."""
        if query not in QUERIES:
            raise ValueError(f"unknown engine query {query!r}")
        query_id = next(self._ids)
        self._query_requested.emit(Command(query_id, query, args))
        return query_id

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

    @Slot(object)
    def _on_models(self, rows: tuple[ModelRow, ...]) -> None:
        self.rows = rows
        self.models_changed.emit(rows)

    @Slot(object)
    def _on_config(self, config: Config) -> None:
        self.config = config
        self.config_changed.emit(config)

    @Slot(int, object)
    def _on_command_done(self, command_id: int, result: object) -> None:
        self.command_finished.emit(command_id, result)


def _invoke_blocking(obj: QObject, method: str) -> None:
    QMetaObject.invokeMethod(obj, method, Qt.ConnectionType.BlockingQueuedConnection)
