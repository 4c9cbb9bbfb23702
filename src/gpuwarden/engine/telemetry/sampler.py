"""The sampler: reads every probe once per tick, records history, publishes a snapshot."""

from __future__ import annotations

import logging
from collections.abc import Callable

from gpuwarden.engine.clock import Clock, SystemClock
from gpuwarden.engine.events import EventBus, ProbeError
from gpuwarden.engine.telemetry.history import DEFAULT_HISTORY_S, History, capacity_for
from gpuwarden.engine.telemetry.probe import GpuProbe, GpuReading, HostProbe
from gpuwarden.engine.telemetry.snapshot import GpuSample, HostSample, Snapshot

log = logging.getLogger(__name__)

MIN_INTERVAL_S = 0.25
MAX_INTERVAL_S = 10.0
DEFAULT_INTERVAL_S = 1.0

SnapshotListener = Callable[[Snapshot], None]


def check_interval(seconds: float) -> float:
    """The sample interval, or ValueError with a sentence saying what is allowed."""
    if not MIN_INTERVAL_S <= seconds <= MAX_INTERVAL_S:
        raise ValueError(
            f"the sample interval must be between {MIN_INTERVAL_S} and {MAX_INTERVAL_S} "
            f"seconds, got {seconds:g}"
        )
    return seconds


class Sampler:
    """Owns the probes and the history. Call :meth:`tick` from one thread only."""

    def __init__(
        self,
        gpu_probe: GpuProbe,
        host_probe: HostProbe,
        *,
        bus: EventBus | None = None,
        clock: Clock | None = None,
        interval_s: float = DEFAULT_INTERVAL_S,
        history_s: float = DEFAULT_HISTORY_S,
    ) -> None:
        self.interval_s = check_interval(interval_s)
        self.clock = clock or SystemClock()
        self.bus = bus or EventBus(clock=self.clock)
        self.history = History(capacity_for(history_s, interval_s))
        self._gpu_probe = gpu_probe
        self._host_probe = host_probe
        self._listeners: list[SnapshotListener] = []
        self._seq = 0
        self._failing: set[str] = set()
        self.last: Snapshot | None = None

    @property
    def gpu_probe(self) -> GpuProbe:
        return self._gpu_probe

    def replace_gpu_probe(self, probe: GpuProbe) -> None:
        """Swap the GPU source (e.g. the user asked for the simulated GPU)."""
        self._gpu_probe.close()
        self._gpu_probe = probe

    @property
    def host_probe(self) -> HostProbe:
        return self._host_probe

    def replace_host_probe(self, probe: HostProbe) -> None:
        self._host_probe = probe

    def subscribe(self, listener: SnapshotListener) -> None:
        self._listeners.append(listener)

    def tick(self) -> Snapshot:
        now = self.clock.monotonic()
        reading = self._read_gpus(now)
        host = self._read_host(now)
        for event in reading.events:
            self.bus.publish(event)
        self._seq += 1
        snap = Snapshot(
            ts=self.clock.time(),
            seq=self._seq,
            gpu_source=self._gpu_probe.source,
            gpus=reading.gpus,
            host=host,
            gpu_note=reading.note,
        )
        self.history.append(snap)
        self.last = snap
        for listener in list(self._listeners):
            try:
                listener(snap)
            except Exception:
                log.exception("snapshot listener %r failed", listener)
        return snap

    def _read_gpus(self, now: float) -> GpuReading:
        try:
            reading = self._gpu_probe.sample(now)
        except Exception as exc:  # a probe bug must not stop the sampler
            log.exception("the GPU probe failed")
            self._report_failure("gpu", exc)
            return GpuReading(gpus=(), note=f"The GPU probe failed: {exc}")
        self._failing.discard("gpu")
        return reading

    def _read_host(self, now: float) -> HostSample:
        try:
            host = self._host_probe.sample(now)
        except Exception as exc:
            log.exception("the host probe failed")
            self._report_failure("host", exc)
            return HostSample()
        self._failing.discard("host")
        return host

    def _report_failure(self, probe: str, exc: Exception) -> None:
        if probe not in self._failing:  # one event per outage, not one per tick
            self._failing.add(probe)
            self.bus.publish(ProbeError(probe=probe, message=f"{type(exc).__name__}: {exc}"))

    def read_processes(self) -> Snapshot:
        """A snapshot of only the GPUs' process lists, read now (any thread): what a
        model's processes hold the moment it becomes ready."""
        try:
            lists = self._gpu_probe.process_lists()
        except Exception:  # a probe bug must not take a model's readiness down
            log.exception("reading the GPU process lists failed")
            lists = {}
        gpus = tuple(GpuSample(index, "", "", processes=procs) for index, procs in lists.items())
        return Snapshot(ts=self.clock.time(), seq=0, gpu_source=self._gpu_probe.source,
                        gpus=gpus, host=HostSample())

    def close(self) -> None:
        self._gpu_probe.close()
