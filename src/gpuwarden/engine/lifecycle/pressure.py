"""Resource pressure with hysteresis: raised at the enter level, cleared only below the
(lower) clear level, so usage hovering at a threshold never flaps.

Everything here is a pure function of (what was active, the snapshot, the config).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gpuwarden.engine.events import PressureKind
from gpuwarden.engine.lifecycle.config import PressureConfig
from gpuwarden.engine.telemetry.snapshot import Snapshot


@dataclass(frozen=True, order=True)
class PressureKey:
    kind: PressureKind
    gpu: int | None = None


@dataclass(frozen=True)
class Level:
    """One reading that can be under pressure. ``value`` is percent used (vram, ram, cpu)
    or free GiB (disk: pressure means *less* free space)."""

    key: PressureKey
    value: float
    enter: float
    clear: float

    @property
    def inverse(self) -> bool:
        return self.key.kind == "disk"

    def should_raise(self) -> bool:
        return self.value < self.enter if self.inverse else self.value >= self.enter

    def should_clear(self) -> bool:
        return self.value >= self.clear if self.inverse else self.value < self.clear

    def throttle(self) -> float:
        """0 at the clear level, 1 when the resource is exhausted."""
        if self.inverse:
            span = self.clear
            over = self.clear - self.value
        else:
            span = 100.0 - self.clear
            over = self.value - self.clear
        return 1.0 if span <= 0 else min(1.0, max(0.0, over / span))


@dataclass(frozen=True)
class PressureChange:
    raised: bool  # False: cleared
    level: Level


def read_levels(snap: Snapshot, cfg: PressureConfig) -> list[Level]:
    """Every level this snapshot can be judged on; n/a readings are skipped."""
    levels: list[Level] = []
    for g in snap.gpus:
        if g.available and g.memory_used_mib is not None and g.memory_total_mib:
            pct = 100.0 * g.memory_used_mib / g.memory_total_mib
            levels.append(Level(PressureKey("vram", g.index), pct, cfg.vram.enter, cfg.vram.clear))
    host = snap.host
    if host.ram_used_mib is not None and host.ram_total_mib:
        pct = 100.0 * host.ram_used_mib / host.ram_total_mib
        levels.append(Level(PressureKey("ram"), pct, cfg.ram.enter, cfg.ram.clear))
    if host.cpu_pct is not None:
        levels.append(Level(PressureKey("cpu"), host.cpu_pct, cfg.cpu.enter, cfg.cpu.clear))
    free = [d.free_gib for d in host.disks if d.free_gib is not None]
    if free:
        levels.append(Level(PressureKey("disk"), min(free), cfg.disk.enter_below_gib,
                            cfg.disk.clear_above_gib))
    return levels


def step_pressure(
    active: frozenset[PressureKey], levels: list[Level]
) -> tuple[frozenset[PressureKey], list[PressureChange]]:
    """The new set of active pressures and what changed. A key that has no reading this
    time (GPU lost, field n/a) keeps its state: no news is not good news."""
    now_active = set(active)
    changes: list[PressureChange] = []
    for level in levels:
        if level.key not in active and level.should_raise():
            now_active.add(level.key)
            changes.append(PressureChange(True, level))
        elif level.key in active and level.should_clear():
            now_active.discard(level.key)
            changes.append(PressureChange(False, level))
    return frozenset(now_active), changes


def alert_due(last_alert: dict[str, float], kind: str, now: float, debounce_s: float) -> bool:
    """Whether a user alert of this kind may go out now (one per kind per debounce)."""
    last = last_alert.get(kind)
    return last is None or now - last >= debounce_s


def mib_to_free(level: Level, total_mib: float) -> float:
    """How much must go for a percent-used level to fall below its clear level."""
    target = level.clear / 100.0 * total_mib
    used = level.value / 100.0 * total_mib
    return max(0.0, used - target)


@dataclass
class CpuAverage:
    """CPU use averaged over ``tau_s`` (an exponential moving average): a compile or a
    start-up spike is not CPU pressure, minutes of full load are. Not judged at all until
    ``tau_s`` of readings have been seen."""

    tau_s: float = 10.0
    _value: float | None = None
    _since: float | None = None
    _last: float | None = None
    _skipped_first: bool = False

    @property
    def value(self) -> float | None:
        """The average so far; None until ``tau_s`` of readings have been seen."""
        if self._value is None or self._since is None or self._last is None or \
                self._last - self._since < self.tau_s:
            return None
        return self._value

    def feed(self, level: Level, now: float) -> Level | None:
        if not self._skipped_first:  # measured over the start-up itself: meaningless
            self._skipped_first = True
            return None
        if self._value is None or self._last is None or self._since is None:
            self._value, self._since = level.value, now
        else:
            alpha = 1.0 - math.exp(-max(0.0, now - self._last) / self.tau_s)
            self._value += alpha * (level.value - self._value)
        self._last = now
        if now - self._since < self.tau_s:
            return None
        return Level(level.key, self._value, level.enter, level.clear)
