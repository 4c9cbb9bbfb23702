"""Small builders shared by tests."""

from __future__ import annotations

from gpuwarden.engine.clock import FakeClock
from gpuwarden.engine.events import Event
from gpuwarden.engine.facade import Engine
from gpuwarden.engine.telemetry.probe import GpuReading
from gpuwarden.engine.telemetry.snapshot import (
    GpuProcess,
    GpuSample,
    GpuSource,
    HostSample,
    Snapshot,
)


def gpu(index: int = 0, **fields: object) -> GpuSample:
    base: dict[str, object] = {
        "name": f"Test GPU {index}",
        "uuid": f"GPU-test-{index}",
        "memory_total_mib": 8192.0,
        "memory_used_mib": 1024.0,
        "memory_free_mib": 7168.0,
        "temperature_c": 40.0,
        "power_draw_w": 50.0,
        "power_limit_w": 200.0,
    }
    base.update(fields)
    return GpuSample(index=index, **base)  # type: ignore[arg-type]


def snapshot(ts: float, *gpus: GpuSample, cpu_pct: float = 10.0, seq: int = 0) -> Snapshot:
    return Snapshot(
        ts=ts,
        seq=seq,
        gpu_source="simulated",
        gpus=gpus,
        host=HostSample(cpu_pct=cpu_pct, ram_used_mib=1000.0, ram_total_mib=4000.0),
    )


class ScriptedGpuProbe:
    """A GPU probe that returns what the test queues, then repeats its last reading."""

    def __init__(self, *readings: GpuReading, source: GpuSource = "simulated") -> None:
        self.readings = list(readings) or [GpuReading(gpus=(gpu(0),))]
        self._source: GpuSource = source
        self.calls: list[float] = []
        self.closed = False
        self.fail_with: Exception | None = None

    @property
    def source(self) -> GpuSource:
        return self._source

    def sample(self, now: float) -> GpuReading:
        self.calls.append(now)
        if self.fail_with is not None:
            raise self.fail_with
        return self.readings.pop(0) if len(self.readings) > 1 else self.readings[0]

    def process_lists(self) -> dict[int, tuple[GpuProcess, ...] | None]:
        return {g.index: g.processes for g in self.readings[0].gpus}

    def close(self) -> None:
        self.closed = True


class StaticHostProbe:
    def __init__(self, sample: HostSample | None = None) -> None:
        self.value = sample or HostSample(cpu_pct=12.0, ram_used_mib=2048.0, ram_total_mib=8192.0)

    def sample(self, now: float) -> HostSample:
        return self.value


def collect(bus_events: list[Event]) -> list[str]:
    return [e.type for e in bus_events]


def drive(engine: Engine, clock: FakeClock, seconds: float) -> None:
    """Drive ``engine`` as `gpuwarden headless` does, on a fake clock: call its step, then
    let the time it asks for pass, until ``seconds`` have passed."""
    end = clock.monotonic() + seconds
    while True:
        delay = engine.step()
        left = end - clock.monotonic()
        if left <= 1e-9:
            return
        clock.advance(min(delay, left))


def without_api_line(err: str) -> str:
    """A gpuwarden's stderr less the one line that says where its control API listens."""
    return "".join(line for line in err.splitlines(keepends=True)
                   if not line.startswith("gpuwarden: control API on http://"))
