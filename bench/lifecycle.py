"""Lifecycle benchmark (not a test: run it by hand on a quiet machine).

Prints:
  1. the time of one full decision pass (pressure check, relief, idle, restore) for
     10, 100 and 1000 models, as the manager runs it on every telemetry sample;
  2. the latency from the sample that crosses a VRAM threshold to the first relief
     action reaching the backend.

    python bench/lifecycle.py
"""

from __future__ import annotations

import dataclasses
import random
import statistics
import time

from gpuwarden.engine.clock import FakeClock
from gpuwarden.engine.events import EventBus
from gpuwarden.engine.lifecycle.backend import ExitCallback, Footprint, Launch, ReadyCallback
from gpuwarden.engine.lifecycle.config import Config, ModelConfig
from gpuwarden.engine.lifecycle.crash import DeathReport
from gpuwarden.engine.lifecycle.manager import LifecycleManager
from gpuwarden.engine.lifecycle.simulated_backend import SimulatedBackend
from gpuwarden.engine.telemetry.sampler import Sampler
from gpuwarden.engine.telemetry.simulated import SimulatedProbe
from gpuwarden.engine.telemetry.snapshot import HostSample, Snapshot

GIB = 1024.0


class _Host:
    def sample(self, now: float) -> HostSample:
        return HostSample(cpu_pct=20.0, ram_used_mib=8 * GIB, ram_total_mib=64 * GIB)


class _InstantBackend:
    """Ready at once, holds nothing real: measures the manager, not a simulation."""

    kind = "simulated"
    can_offload = True

    def __init__(self) -> None:
        self.exits: dict[str, ExitCallback] = {}

    def start(self, launch: Launch, on_ready: ReadyCallback, on_exit: ExitCallback) -> None:
        self.exits[launch.config.name] = on_exit
        on_ready(launch.instance, Footprint(launch.config.vram_mib or 0.0, 0.0))

    def stop(self, model: str, instance: int) -> None:
        self.exits[model](DeathReport(model, instance, exit_code=0, expected=True))

    def poll(self, now: float) -> None:
        return None


def _models(n: int, rng: random.Random) -> tuple[ModelConfig, ...]:
    return tuple(
        ModelConfig(name=f"m{i}", backend="simulated", vram_mib=10.0 + rng.random() * 20,
                    idle_timeout_s=rng.choice((300.0, 600.0, 1800.0)),
                    eviction=rng.choice(("idle", "pressure", "never")),
                    priority=rng.randint(0, 5), placement=rng.choice(("gpu", "cpu", 8)))
        for i in range(n)
    )


def decision_pass_ms(n: int, *, under_pressure: bool = False, repeats: int = 200) -> float:
    """Median time of manager.on_snapshot. Under pressure the VRAM stays at 95 % and every
    model has just been used, so relief is planned on every pass and finds nothing it may
    take (the worst steady case: it never gets to act and stop looking)."""
    rng = random.Random(n)
    clock = FakeClock()
    backend = _InstantBackend()
    manager = LifecycleManager(Config(models=_models(n, rng)), {"simulated": backend},
                               bus=EventBus(clock=clock), clock=clock)
    for name in list(manager.states())[: n // 2]:
        manager.load(name)
    for name in manager.states():
        if under_pressure or rng.random() < 0.5:
            manager.notify_access(name)
    probe = SimulatedProbe(count=1)
    sampler = Sampler(probe, _Host(), clock=clock)
    snap: Snapshot = sampler.tick()
    if under_pressure:
        gpu = snap.gpus[0]
        total = gpu.memory_total_mib or 0.0
        full = dataclasses.replace(gpu, memory_used_mib=0.95 * total)
        snap = dataclasses.replace(snap, gpus=(full,))
    times = []
    for _ in range(repeats):
        clock.advance(0.01)
        start = time.perf_counter()
        manager.on_snapshot(snap)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def relief_latency_ms(trials: int = 50) -> list[float]:
    out = []
    for seed in range(trials):
        clock = FakeClock()
        probe = SimulatedProbe(count=1, seed=seed)
        backend = SimulatedBackend(probe, clock)
        models = tuple(ModelConfig(name=f"m{i}", backend="simulated", vram_mib=2 * GIB,
                                   load_time_s=0.0, eviction="pressure") for i in range(8))
        manager = LifecycleManager(Config(models=models), {"simulated": backend},
                                   bus=EventBus(clock=clock), clock=clock)
        sampler = Sampler(probe, _Host(), clock=clock)
        sampler.subscribe(manager.on_snapshot)
        sampler.tick()
        for m in models:
            manager.load(m.name)
        for _ in range(120):
            clock.advance(1.0)
            sampler.tick()
        first_stop: list[float] = []
        original = backend.stop

        def timed_stop(model: str, instance: int, _o=original, _f=first_stop) -> None:
            _f.append(time.perf_counter())
            _o(model, instance)

        backend.stop = timed_stop  # type: ignore[method-assign]
        probe.gpu(0).grab_external("intruder", 8 * GIB)  # crosses 90 % at the next sample
        clock.advance(1.0)
        start = time.perf_counter()
        sampler.tick()
        assert first_stop, "no relief action in the crossing sample"
        out.append(1000 * (first_stop[0] - start))
    return out


def main() -> int:
    for n in (10, 100, 1000):
        calm, pressed = decision_pass_ms(n), decision_pass_ms(n, under_pressure=True)
        print(f"decision pass, {n:>4} models: median {calm:.3f} ms calm, {pressed:.3f} ms "
              "under VRAM pressure" + ("   [target: well under 1 ms at 100]" if n == 100
                                        else ""))
    lat = relief_latency_ms()
    print(f"threshold-crossing sample -> first relief action: median "
          f"{statistics.median(lat):.3f} ms, max {max(lat):.3f} ms over {len(lat)} trials "
          "(includes the sample itself)   [target < 10 ms, same sample]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
