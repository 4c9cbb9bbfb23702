"""The probe interfaces: what every GPU and host probe must offer the sampler."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from gpuwarden.engine.events import Event
from gpuwarden.engine.telemetry.snapshot import GpuProcess, GpuSample, GpuSource, HostSample

# Per GPU index, the processes on it and what each holds; None: not reported.
ProcessLists = dict[int, tuple[GpuProcess, ...] | None]


@dataclass(frozen=True, slots=True)
class GpuReading:
    """What one call to :meth:`GpuProbe.sample` returns.

    ``gpus`` lists every GPU the probe knows, lost ones with ``available=False``;
    ``events`` are the changes noticed during this read (GPU lost, back, ...);
    ``note`` is a sentence for a person when there is something to explain
    (no driver, simulated), else None.
    """

    gpus: tuple[GpuSample, ...]
    events: tuple[Event, ...] = field(default=())
    note: str | None = None


class GpuProbe(Protocol):
    """A source of GPU readings: NVML, the simulated GPU, or nothing at all."""

    @property
    def source(self) -> GpuSource: ...

    def sample(self, now: float) -> GpuReading:
        """Read every GPU. ``now`` is monotonic seconds. Never raises for hardware trouble:
        trouble becomes fields set to None, GPUs marked unavailable, and events."""
        ...

    def process_lists(self) -> ProcessLists:
        """Read the per-process lists now (not cached), for measuring a model that just
        became ready. May be called from another thread than :meth:`sample`."""
        ...

    def close(self) -> None: ...


class HostProbe(Protocol):
    def sample(self, now: float) -> HostSample: ...


class NoGpuProbe:
    """The probe used when there is no GPU to read and no simulation was asked for."""

    def __init__(self, note: str) -> None:
        self._note = note

    @property
    def source(self) -> GpuSource:
        return "none"

    def sample(self, now: float) -> GpuReading:
        return GpuReading(gpus=(), note=self._note)

    def process_lists(self) -> ProcessLists:
        return {}

    def close(self) -> None:
        return None
