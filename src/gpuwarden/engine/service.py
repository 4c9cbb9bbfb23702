"""The whole engine in one object: telemetry, the lifecycle manager, the journal and the
persisted hints, wired together. `gpuwarden headless` runs it on the main thread; the
window's bridge will run the same object on its QThread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gpuwarden.engine.clock import Clock, SystemClock
from gpuwarden.engine.events import Event, EventBus, StorageError
from gpuwarden.engine.journal import Journal
from gpuwarden.engine.lifecycle.backend import Backend
from gpuwarden.engine.lifecycle.config import Config
from gpuwarden.engine.lifecycle.hints import HintStore
from gpuwarden.engine.lifecycle.manager import LifecycleManager
from gpuwarden.engine.lifecycle.simulated_backend import SimulatedBackend
from gpuwarden.engine.runtime import TelemetryOptions, build_sampler
from gpuwarden.engine.telemetry.scenario import Scenario, StepCursor
from gpuwarden.engine.telemetry.simulated import SimulatedProbe

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServicePaths:
    journal: Path | None
    hints: Path | None


class EngineService:
    def __init__(self, config: Config, telemetry: TelemetryOptions, paths: ServicePaths, *,
                 clock: Clock | None = None) -> None:
        self.clock = clock or SystemClock()
        self.bus = EventBus(clock=self.clock)
        self.journal = Journal(paths.journal) if paths.journal is not None else None
        self._journal_failing = False
        if self.journal is not None:
            self.bus.subscribe(self._journal_write)
        self.sampler = build_sampler(telemetry, bus=self.bus, clock=self.clock)
        probe = self.sampler.gpu_probe
        sim = probe if isinstance(probe, SimulatedProbe) else None
        self.simulated_backend = SimulatedBackend(sim, self.clock)
        backends: dict[str, Backend] = {"simulated": self.simulated_backend}
        self.hints = HintStore(paths.hints, self.clock) if paths.hints is not None else None
        self.hint_problems = self.hints.load() if self.hints is not None else []
        self.manager = LifecycleManager(config, backends, bus=self.bus, clock=self.clock,
                                        hints=self.hints)
        self.sampler.subscribe(self.manager.on_snapshot)
        scenario: Scenario | None = sim.scenario if sim is not None else None
        self._crashes = StepCursor(scenario.steps if scenario else (), actions=("crash",))
        self._started = self.clock.monotonic()

    def subscribe(self, listener: Callable[[Event], None]) -> None:
        self.bus.subscribe(listener)

    def _journal_write(self, event: Event) -> None:
        assert self.journal is not None
        if self.journal.write(event) or isinstance(event, StorageError):
            self._journal_failing = False
            return
        if not self._journal_failing:
            self._journal_failing = True
            self.bus.publish(StorageError(path=str(self.journal.path),
                                          message=self.journal.last_error or "write failed"))

    def tick(self) -> None:
        """One telemetry sample (the manager reacts inside it), then due scenario crashes."""
        self.sampler.tick()
        for step in self._crashes.due(self.clock.monotonic() - self._started):
            self.simulated_backend.crash(step.text("model"), int(step.number("exit_code")))

    def run(self, stop: threading.Event, duration_s: float | None = None) -> None:
        """Sample at the interval and fire restarts on time, until ``stop`` or the duration."""
        self.manager.autostart()
        interval = self.sampler.interval_s
        next_sample = self.clock.monotonic()
        end = None if duration_s is None else next_sample + duration_s
        while not stop.is_set():
            now = self.clock.monotonic()
            if end is not None and now >= end:
                break
            if now >= next_sample:
                self.tick()
                next_sample = max(next_sample + interval, now)
            self.manager.tick()
            stop.wait(self._wait(next_sample, end))

    def _wait(self, next_sample: float, end: float | None) -> float:
        now = self.clock.monotonic()
        wait = next_sample - now
        deadline = self.manager.next_deadline()  # wall clock
        if deadline is not None:
            wait = min(wait, deadline - self.clock.time())
        if end is not None:
            wait = min(wait, end - now)
        return max(0.0, min(wait, interval_cap(self.sampler.interval_s)))

    def close(self) -> None:
        """Stop every model cleanly, save the hints, close the journal and the probes."""
        self.manager.shutdown()
        self.sampler.close()
        if self.journal is not None:
            self.journal.close()


def interval_cap(interval_s: float) -> float:
    return max(0.01, interval_s)
