"""The whole engine in one object: telemetry, the lifecycle manager, the journal and the
persisted hints, wired together. `gpuwarden headless` runs it on the main thread; the
window's bridge will run the same object on its QThread.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from gpuwarden.engine.clock import Clock, SystemClock
from gpuwarden.engine.events import ConfigProblemFound, Event, EventBus, StorageError
from gpuwarden.engine.journal import Journal, default_journal_path
from gpuwarden.engine.lifecycle.backend import (
    ActivityCallback,
    Backend,
    ExitCallback,
    Launch,
    ReadyCallback,
)
from gpuwarden.engine.lifecycle.config import Config
from gpuwarden.engine.lifecycle.hints import HintStore, default_hints_path
from gpuwarden.engine.lifecycle.manager import LifecycleManager
from gpuwarden.engine.lifecycle.simulated_backend import SimulatedBackend
from gpuwarden.engine.paths import data_dir
from gpuwarden.engine.runtime import TelemetryOptions, build_sampler
from gpuwarden.engine.supervisor.llama_cpp_python import LlamaCppPythonBackend
from gpuwarden.engine.supervisor.llama_server import LlamaServerBackend, gpu_layers_of
from gpuwarden.engine.supervisor.registry import (
    ServerRecord,
    ServerRegistry,
    default_registry_path,
)
from gpuwarden.engine.telemetry.sampler import Sampler
from gpuwarden.engine.telemetry.scenario import Scenario, StepCursor
from gpuwarden.engine.telemetry.simulated import SimulatedProbe
from gpuwarden.engine.telemetry.simulated_ram import HostWithSimulatedRam, SimulatedRam

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServicePaths:
    journal: Path | None
    hints: Path | None
    logs: Path | None = None  # model server logs; None: <data folder>/logs
    registry: Path | None = None  # servers we started, for adoption; None: none kept


def _configured_llama_server() -> Path | None:
    value = os.environ.get("GPUWARDEN_LLAMA_SERVER")
    return Path(value) if value else None


def default_service_paths() -> ServicePaths:
    return ServicePaths(journal=default_journal_path(), hints=default_hints_path(),
                        registry=default_registry_path())


class EngineService:
    """Build it with :meth:`build` (from options) or hand it a sampler (tests, scripts)."""

    def __init__(self, config: Config, sampler: Sampler, paths: ServicePaths,
                 problems: Iterable[object] = ()) -> None:
        self.config = config
        self.sampler = sampler
        self.clock = sampler.clock
        self.bus = sampler.bus
        self.journal = Journal(paths.journal) if paths.journal is not None else None
        self._journal_failing = False
        if self.journal is not None:
            self.bus.subscribe(self._journal_write)
        self.simulated_ram = SimulatedRam()
        if self._simulated_probe() is not None:  # --simulate: CPU models book RAM too
            sampler.replace_host_probe(HostWithSimulatedRam(sampler.host_probe,
                                                            self.simulated_ram))
        self.simulated_backend = SimulatedBackend(self._simulated_probe(), self.clock,
                                                  self.simulated_ram)
        self.registry = ServerRegistry(paths.registry) if paths.registry is not None else None
        registry_problems = self.registry.load() if self.registry is not None else []
        self.registry_problems = registry_problems
        self.llama_server = LlamaServerBackend(paths.logs or data_dir() / "logs",
                                               binary=config.llama_server
                                               or _configured_llama_server(),
                                               registry=self.registry)
        logs = paths.logs or data_dir() / "logs"
        backends: dict[str, Backend] = {"simulated": self.simulated_backend,
                                        "llama-server": self.llama_server,
                                        "llama-cpp": LlamaCppPythonBackend(logs)}
        self.hints = HintStore(paths.hints, self.clock) if paths.hints is not None else None
        self.hint_problems = self.hints.load() if self.hints is not None else []
        self.manager = LifecycleManager(config, backends, bus=self.bus, clock=self.clock,
                                        hints=self.hints)
        self.sampler.subscribe(self.manager.on_snapshot)
        sim = self._simulated_probe()
        scenario: Scenario | None = sim.scenario if sim is not None else None
        self._crashes = StepCursor(scenario.steps if scenario else (), actions=("crash",))
        self._started = self.clock.monotonic()
        for problem in (*problems, *self.hint_problems, *registry_problems):
            self.bus.publish(ConfigProblemFound(message=str(problem)))

    def start(self) -> None:
        """On the engine's own thread: adopt servers left running, take a first sample
        (so autostart loads know what fits), then autostart."""
        self.adopt_running_servers()
        self.tick()
        self.manager.autostart()

    def adopt_running_servers(self) -> list[str]:
        """Take over llama-servers an earlier gpuwarden left running (same binary and
        command line, /health answers) instead of launching second copies."""
        adopted = []
        for record in self.llama_server.adoptable():
            model = self.config.model(record.model)
            if model is None or model.backend != "llama-server":
                continue

            def attach(launch: Launch, on_ready: ReadyCallback, on_exit: ExitCallback,
                       on_activity: ActivityCallback, record: ServerRecord = record) -> None:
                self.llama_server.adopt(record, launch, on_ready, on_exit, on_activity)

            if self.manager.adopt(record.model, gpu_layers_of(record.cmdline), attach):
                adopted.append(record.model)
        return adopted

    @classmethod
    def build(cls, config: Config, telemetry: TelemetryOptions, paths: ServicePaths, *,
              clock: Clock | None = None, problems: Iterable[object] = ()) -> EngineService:
        clock = clock or SystemClock()
        sampler = build_sampler(telemetry, bus=EventBus(clock=clock), clock=clock)
        return cls(config, sampler, paths, problems)

    def _simulated_probe(self) -> SimulatedProbe | None:
        probe = self.sampler.gpu_probe
        return probe if isinstance(probe, SimulatedProbe) else None

    def use_simulated(self, count: int = 1) -> None:
        """Switch the GPU source to simulated GPUs (the no-driver banner's button)."""
        probe = SimulatedProbe(count=count)
        self.sampler.replace_gpu_probe(probe)
        self.simulated_backend.attach(probe)
        if not isinstance(self.sampler.host_probe, HostWithSimulatedRam):
            self.sampler.replace_host_probe(HostWithSimulatedRam(self.sampler.host_probe,
                                                                 self.simulated_ram))

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
        self.start()
        interval = self.sampler.interval_s
        next_sample = self.clock.monotonic() + interval
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

    def close(self, leave_running: bool = False) -> None:
        """Stop every model cleanly (or leave the servers running for the next gpuwarden to
        adopt), save the hints, close the journal and the probes."""
        if leave_running:
            self.llama_server.detach()
            self.manager.save_hints()
        else:
            self.manager.shutdown()
            self.llama_server.wait_stopped()
        self.sampler.close()
        if self.journal is not None:
            self.journal.close()


def interval_cap(interval_s: float) -> float:
    return max(0.01, interval_s)
