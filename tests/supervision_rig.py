"""A lifecycle manager driving real llama-server processes, and a way to wait for what
it reports with a deadline (never a fixed sleep)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from gpuwarden.engine.clock import SystemClock
from gpuwarden.engine.events import Event, EventBus
from gpuwarden.engine.lifecycle.config import Config, ModelConfig, RestartConfig
from gpuwarden.engine.lifecycle.manager import LifecycleManager
from gpuwarden.engine.supervisor.llama_server import LlamaServerBackend
from gpuwarden.engine.supervisor.registry import ServerRegistry
from gpuwarden.engine.supervisor.watch import WatchSettings

FAST = WatchSettings(ready_poll_s=0.05, hang_poll_s=0.3, hang_timeout_s=1.0, hang_failures=3,
                     metrics_poll_s=0.1, stop_grace_s=5.0)


def wait_until(predicate: Callable[[], bool], timeout: float, step: float = 0.02) -> bool:
    """Poll ``predicate`` until it holds or the deadline passes (for state with no event)."""
    ticker = threading.Event()
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        ticker.wait(step)
    return True


class Subscribable(Protocol):
    def subscribe(self, listener: Callable[[Event], None]) -> None: ...


class EventWaiter:
    def __init__(self, bus: Subscribable) -> None:
        self.events: list[Event] = []
        self._cond = threading.Condition()
        bus.subscribe(self._on_event)

    def _on_event(self, event: Event) -> None:
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()

    def wait_for(self, type_: str, model: str | None = None, *, count: int = 1,
                 timeout: float = 30.0, where: Callable[[Event], bool] | None = None) -> Event:
        def matches() -> list[Event]:
            return [e for e in self.events if e.type == type_
                    and (model is None or getattr(e, "model", None) == model)
                    and (where is None or where(e))]
        with self._cond:
            if not self._cond.wait_for(lambda: len(matches()) >= count, timeout):
                seen = [f"{e.type}:{e.to_dict().get('model', '')}" for e in self.events]
                raise AssertionError(f"no {count}x {type_} for {model} within {timeout} s; "
                                     f"saw {seen}")
            return matches()[count - 1]

    def types(self, model: str | None = None) -> list[str]:
        with self._cond:
            return [e.type for e in self.events
                    if model is None or getattr(e, "model", None) == model]


class SupervisionRig:
    def __init__(self, binary: Path, log_dir: Path, *models: ModelConfig,
                 restart: RestartConfig | None = None, settings: WatchSettings = FAST,
                 backend_cls: type[LlamaServerBackend] = LlamaServerBackend,
                 registry: ServerRegistry | None = None) -> None:
        self.clock = SystemClock()
        self.bus = EventBus(clock=self.clock)
        self.waiter = EventWaiter(self.bus)
        self.backend = backend_cls(log_dir, binary=binary, settings=settings, registry=registry)
        self.manager = LifecycleManager(
            Config(models=models, restart=restart or RestartConfig(backoff_base_s=0.2)),
            {self.backend.kind: self.backend}, bus=self.bus, clock=self.clock)
        self._ticker_stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick, daemon=True)
        self._ticker.start()

    def _tick(self) -> None:
        """Fire due restarts, as the engine's deadline timer does."""
        while not self._ticker_stop.wait(0.02):
            self.manager.tick()

    def close(self) -> None:
        self._ticker_stop.set()
        self._ticker.join(5)
        self.manager.shutdown()
        for name in list(self.manager.states()):
            pid = self.backend.pid(name)
            if pid is not None:
                self.waiter.wait_for("model.unloaded", name, timeout=15,
                                     where=lambda e: e.to_dict()["reason"] == "shutdown")
