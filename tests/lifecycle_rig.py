"""A whole lifecycle engine on a fake clock: simulated GPU, sampler, manager, bus."""

from __future__ import annotations

from gpuwarden.engine.clock import FakeClock
from gpuwarden.engine.events import Event, EventBus
from gpuwarden.engine.lifecycle.config import Config, ModelConfig, PressureConfig, RestartConfig
from gpuwarden.engine.lifecycle.manager import LifecycleManager
from gpuwarden.engine.lifecycle.simulated_backend import SimulatedBackend
from gpuwarden.engine.telemetry.sampler import Sampler
from gpuwarden.engine.telemetry.simulated import SimulatedProbe
from gpuwarden.engine.telemetry.snapshot import Snapshot, measured_vram_mib
from helpers import StaticHostProbe


class Rig:
    def __init__(self, *models: ModelConfig, pressure: PressureConfig | None = None,
                 restart: RestartConfig | None = None, vram_total_mib: float = 24576.0,
                 stop_time_s: float = 0.0) -> None:
        self.clock = FakeClock()
        self.bus = EventBus(clock=self.clock)
        self.events: list[Event] = []
        self.bus.subscribe(self.events.append)
        self.probe = SimulatedProbe(count=1, seed=0)
        self.gpu = self.probe.gpu(0)
        assert abs(self.gpu.profile.memory_total_mib - vram_total_mib) < 1
        self.sampler = Sampler(self.probe, StaticHostProbe(), bus=self.bus, clock=self.clock)
        self.backend = SimulatedBackend(self.probe, self.clock, stop_time_s=stop_time_s)
        config = Config(models=models, pressure=pressure or PressureConfig(),
                        restart=restart or RestartConfig())
        self.manager = LifecycleManager(
            config, {"simulated": self.backend}, bus=self.bus, clock=self.clock,
            measure=lambda pids: measured_vram_mib(self.sampler.read_processes(), pids))
        self.sampler.subscribe(self.manager.on_snapshot)
        self.snap: Snapshot = self.sampler.tick()

    def step(self, seconds: float = 1.0, every: float = 1.0) -> Snapshot:
        """Let time pass, sampling every ``every`` seconds."""
        left = seconds
        while left > 1e-9:
            dt = min(every, left)
            self.clock.advance(dt)
            self.manager.tick()
            self.snap = self.sampler.tick()
            left -= dt
        return self.snap

    def types(self, since: int = 0) -> list[str]:
        return [e.type for e in self.events[since:]]

    def of(self, type_: str, model: str | None = None) -> list[Event]:
        return [e for e in self.events if e.type == type_
                and (model is None or getattr(e, "model", None) == model)]

    def device(self, name: str) -> str:
        return self.manager.state(name).device
