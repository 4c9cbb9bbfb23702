"""Host RAM booked by simulated models: with `--simulate`, a model loaded on the CPU
takes its RAM here, added to what the real host reports, so RAM pressure and its relief
can be shown and tested without filling the machine."""

from __future__ import annotations

import dataclasses

from gpuwarden.engine.telemetry.probe import HostProbe
from gpuwarden.engine.telemetry.snapshot import HostSample


class SimulatedRam:
    def __init__(self) -> None:
        self._booked: dict[str, float] = {}

    def allocate(self, owner: str, mib: float) -> None:
        if mib < 0:
            raise ValueError("cannot book negative memory")
        self._booked[owner] = mib

    def release(self, owner: str) -> float:
        return self._booked.pop(owner, 0.0)

    @property
    def booked_mib(self) -> float:
        return sum(self._booked.values())


class HostWithSimulatedRam:
    """A host probe that adds the simulated bookings to the real RAM in use."""

    def __init__(self, inner: HostProbe, ram: SimulatedRam) -> None:
        self._inner = inner
        self.ram = ram

    def sample(self, now: float) -> HostSample:
        real = self._inner.sample(now)
        if real.ram_used_mib is None or real.ram_total_mib is None:
            return real
        used = min(real.ram_total_mib, real.ram_used_mib + self.ram.booked_mib)
        return dataclasses.replace(real, ram_used_mib=used)
