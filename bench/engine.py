"""Engine benchmark (not a test: run it by hand on a quiet machine).

Prints:
  1. the time of one Engine.step() with 100 simulated models, calm and under VRAM
     pressure: a step that takes a sample (the telemetry tick and the decision pass) and a
     step with nothing due;
  2. the round trip of one command from the UI thread to the engine thread and back,
     through the window's EngineBridge (offscreen Qt), the engine idle with a few
     simulated models;
  3. the cost of evaluating every safety limit for one sample: SafetyMonitor.check on a
     snapshot of 8 simulated GPUs and the host.

    QT_QPA_PLATFORM=offscreen python bench/engine.py [--steps 2000] [--requests 500]
        [--checks 20000]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from gpuwarden.engine.clock import FakeClock
from gpuwarden.engine.facade import Engine, ServicePaths
from gpuwarden.engine.lifecycle.config import Config, ModelConfig
from gpuwarden.engine.runtime import SimulateSpec, TelemetryOptions
from gpuwarden.engine.safety.limits import SafetyConfig
from gpuwarden.engine.safety.verdict import SafetyMonitor
from gpuwarden.engine.telemetry.sampler import Sampler
from gpuwarden.engine.telemetry.simulated import SimulatedProbe
from gpuwarden.engine.telemetry.snapshot import HostSample, Snapshot

GIB = 1024.0
MODELS = 100
INTERVAL_S = 1.0


class _Host:
    def sample(self, now: float) -> HostSample:
        return HostSample(cpu_pct=20.0, ram_used_mib=8 * GIB, ram_total_mib=64 * GIB)


class _HostWithTemp:
    """A host that reads every value a host limit is kept on (CPU temperature included)."""

    def sample(self, now: float) -> HostSample:
        return HostSample(cpu_pct=20.0, ram_used_mib=8 * GIB, ram_total_mib=64 * GIB,
                          cpu_temp_c=55.0)


def _models(n: int, rng: random.Random) -> tuple[ModelConfig, ...]:
    return tuple(
        ModelConfig(name=f"m{i}", backend="simulated", vram_mib=100.0 + rng.random() * 100,
                    load_time_s=0.0, idle_timeout_s=rng.choice((300.0, 600.0, 1800.0)),
                    eviction=rng.choice(("idle", "pressure", "never")),
                    priority=rng.randint(0, 5), placement=rng.choice(("gpu", "cpu", 8)))
        for i in range(n)
    )


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def step_times_ms(*, under_pressure: bool, steps: int,
                  logs: Path) -> tuple[list[float], list[float]]:
    """(times of a step that samples, times of a step with nothing due), in ms.

    Half the models are loaded. Under pressure something outside gpuwarden holds 22 GiB
    of the 24 GiB simulated GPU, so VRAM stays above the 90 % enter level whatever relief
    does: after the warm-up (which unloads what pressure may take) every sample plans
    relief and finds nothing left to take, the worst steady case."""
    rng = random.Random(MODELS)
    clock = FakeClock()
    probe = SimulatedProbe(count=1)
    sampler = Sampler(probe, _Host(), clock=clock, interval_s=INTERVAL_S)
    engine = Engine(Config(models=_models(MODELS, rng)), sampler,
                    ServicePaths(None, None, logs=logs))
    engine.start(watch_config=False)
    for row in engine.models()[: MODELS // 2]:
        engine.load(row.name)
    if under_pressure:
        probe.gpu(0).grab_external("intruder", 22 * GIB)
    for _ in range(50):  # warm-up: loads finish, relief does what it can
        clock.advance(INTERVAL_S)
        engine.step()
    snap = engine.snapshot()
    assert snap is not None
    used = snap.gpus[0].memory_used_mib or 0.0
    total = snap.gpus[0].memory_total_mib or 1.0
    if under_pressure:
        assert used / total > 0.9, f"VRAM at {100 * used / total:.0f} %, not under pressure"
    loaded = sum(row.device in ("gpu", "partial", "cpu") for row in engine.models())
    print(f"  ({'pressure' if under_pressure else 'calm'}: {loaded} of {MODELS} models loaded, "
          f"VRAM {100 * used / total:.0f} % used)")
    sampling, idle = [], []
    for _ in range(steps):
        clock.advance(INTERVAL_S)
        start = time.perf_counter()
        engine.step()
        sampling.append(1000 * (time.perf_counter() - start))
        clock.advance(INTERVAL_S / 2)
        start = time.perf_counter()
        engine.step()
        idle.append(1000 * (time.perf_counter() - start))
    engine.close()
    return sampling, idle


def bridge_round_trip_ms(requests: int, tmp: Path) -> list[float]:
    """request("set_priority", ...) on the UI thread -> command_finished on the UI thread."""
    from PySide6.QtCore import QEventLoop, QTimer
    from PySide6.QtWidgets import QApplication

    from gpuwarden.app.bridge import EngineBridge

    app = QApplication.instance() or QApplication(sys.argv[:1])
    models = tuple(ModelConfig(name=f"sim{i}", backend="simulated", vram_mib=1000.0,
                               load_time_s=0.0, autostart=True) for i in range(4))
    engine = Engine.build(Config(models=models),
                          TelemetryOptions(simulate=SimulateSpec(), interval_s=1.0),
                          ServicePaths(None, None, logs=tmp / "logs"))
    bridge = EngineBridge(engine)
    loop = QEventLoop()
    done: dict[int, float] = {}

    def finished(command_id: int, _result: object) -> None:
        done[command_id] = time.perf_counter()
        loop.quit()

    bridge.command_finished.connect(finished)
    bridge.start()
    QTimer.singleShot(1500, loop.quit)  # let it start, autostart, sample
    loop.exec()
    rng = random.Random(1)
    times = []
    try:
        for i in range(requests):
            pause = QEventLoop()
            QTimer.singleShot(rng.randint(1, 20), pause.quit)  # land at varied moments
            pause.exec()
            start = time.perf_counter()
            command_id = bridge.request("set_priority", f"sim{i % len(models)}", 1)
            guard = QTimer()
            guard.setSingleShot(True)
            guard.timeout.connect(loop.quit)
            guard.start(5000)
            while command_id not in done and guard.isActive():
                loop.exec()
            guard.stop()
            if command_id not in done:
                raise RuntimeError(f"no command_finished for request {command_id} in 5 s")
            times.append(1000 * (done[command_id] - start))
    finally:
        bridge.stop()
    app.processEvents()
    return times


SAFETY_GPUS = 8
SAFETY_SNAPSHOTS = 100


def safety_check_us(calls: int) -> list[float]:
    """Times of one SafetyMonitor.check (every GPU limit of 8 simulated GPUs, then the
    host's), in microseconds. The snapshots are 100 successive samples of 8 idle simulated
    cards (every reading known, changing a little with the simulator's noise), checked in
    turn with the default [safety] table (so the cards' own thresholds); the monitor keeps
    its state between calls, as the lifecycle manager's does, so no verdict changes."""
    clock = FakeClock()
    probe = SimulatedProbe(count=SAFETY_GPUS)
    sampler = Sampler(probe, _HostWithTemp(), clock=clock, interval_s=INTERVAL_S)
    snaps: list[Snapshot] = []
    for _ in range(SAFETY_SNAPSHOTS):
        clock.advance(INTERVAL_S)
        snaps.append(sampler.tick())
    sampler.close()
    assert all(len(s.gpus) == SAFETY_GPUS for s in snaps)
    monitor = SafetyMonitor()
    cfg = SafetyConfig()
    for snap in snaps:  # warm-up: every verdict known
        monitor.check(snap, cfg)
    times: list[float] = []
    clock_ns = time.perf_counter_ns
    for i in range(calls):
        snap = snaps[i % SAFETY_SNAPSHOTS]
        start = clock_ns()
        monitor.check(snap, cfg)
        times.append((clock_ns() - start) / 1000.0)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--checks", type=int, default=20000)
    args = parser.parse_args()
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    tmp = Path(tempfile.mkdtemp(prefix="gpuwarden-bench-"))
    for pressure in (False, True):
        sampling, idle = step_times_ms(under_pressure=pressure, steps=args.steps,
                                       logs=tmp / "logs")
        label = "under VRAM pressure" if pressure else "calm"
        print(f"Engine.step(), {MODELS} simulated models, {label}: with a sample median "
              f"{statistics.median(sampling):.3f} ms, p99 {_pct(sampling, 0.99):.3f} ms; "
              f"nothing due median {statistics.median(idle):.4f} ms, p99 "
              f"{_pct(idle, 0.99):.4f} ms ({args.steps} steps each)")
    trips = bridge_round_trip_ms(args.requests, tmp)
    print(f"command round trip UI -> engine thread -> UI (EngineBridge, set_priority), "
          f"{len(trips)} requests: median {statistics.median(trips):.2f} ms, p90 "
          f"{_pct(trips, 0.9):.2f} ms, max {max(trips):.2f} ms   [target: median < 5 ms]")
    checks = safety_check_us(args.checks)
    print(f"SafetyMonitor.check, {SAFETY_GPUS} simulated GPUs + host, every limit, "
          f"{len(checks)} calls: median {statistics.median(checks):.1f} us, p99 "
          f"{_pct(checks, 0.99):.1f} us, max {max(checks):.1f} us   [target: well under 1 ms]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
