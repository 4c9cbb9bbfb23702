"""Checks every sample for pressure, announces changes, and picks the relief."""

from __future__ import annotations

from collections.abc import Mapping

from gpuwarden.engine.events import EventBus, PressureAlert, PressureCleared, PressureRaised
from gpuwarden.engine.lifecycle import policy
from gpuwarden.engine.lifecycle.actions import Action
from gpuwarden.engine.lifecycle.config import PressureConfig
from gpuwarden.engine.lifecycle.pressure import (
    CpuAverage,
    Level,
    PressureKey,
    alert_due,
    mib_to_free,
    read_levels,
    step_pressure,
)
from gpuwarden.engine.lifecycle.state import ModelState
from gpuwarden.engine.telemetry.snapshot import Snapshot


class PressureMonitor:
    """Holds which pressures are active and when each kind last alerted the user."""

    def __init__(self, cfg: PressureConfig, bus: EventBus) -> None:
        self._cfg = cfg
        self._bus = bus
        self.active: frozenset[PressureKey] = frozenset()
        self._last_alert: dict[str, float] = {}
        self._cpu = CpuAverage()

    def cpu_average(self) -> float | None:
        """CPU use averaged over 10 s (None until there is such an average): a spike is
        neither pressure nor a reason to throttle."""
        return self._cpu.value

    def configure(self, cfg: PressureConfig) -> None:
        """New thresholds (a reloaded config): judged from the next sample on."""
        self._cfg = cfg

    def check(self, snap: Snapshot, states: Mapping[str, ModelState], now: float,
              can_offload: policy.CanOffload) -> list[Action]:
        levels = self._smoothed(read_levels(snap, self._cfg), now)
        self.active, changes = step_pressure(self.active, levels)
        for change in changes:
            self._announce(change.raised, change.level, now)
        if PressureKey("ram") in self.active:  # no room on the CPU either: unload instead
            def can_offload(_state: ModelState) -> bool:
                return False
        actions: list[Action] = []
        for level in levels:
            if level.key in self.active:
                actions += self._relief(level, snap, states, now, can_offload)
        return actions

    def _smoothed(self, levels: list[Level], now: float) -> list[Level]:
        out = []
        for level in levels:
            if level.key.kind == "cpu":
                averaged = self._cpu.feed(level, now)
                if averaged is not None:
                    out.append(averaged)
            else:
                out.append(level)
        return out

    def _announce(self, raised: bool, level: Level, now: float) -> None:
        key = level.key
        if not raised:
            self._bus.publish(PressureCleared(kind=key.kind, gpu=key.gpu, value=level.value,
                                              threshold=level.clear))
            return
        self._bus.publish(PressureRaised(kind=key.kind, gpu=key.gpu, value=level.value,
                                         threshold=level.enter))
        if alert_due(self._last_alert, key.kind, now, self._cfg.alert_debounce_s):
            self._last_alert[key.kind] = now
            self._bus.publish(PressureAlert(kind=key.kind, gpu=key.gpu, value=level.value,
                                            threshold=level.enter, throttle=level.throttle()))

    def _relief(self, level: Level, snap: Snapshot, states: Mapping[str, ModelState],
                now: float, can_offload: policy.CanOffload) -> list[Action]:
        key = level.key
        if key.kind == "vram" and key.gpu is not None:
            gpu = snap.gpu(key.gpu)
            total = gpu.memory_total_mib if gpu is not None else None
            if total:
                return policy.vram_relief(states, key.gpu, mib_to_free(level, total), now,
                                          can_offload)
        if key.kind == "ram" and snap.host.ram_total_mib:
            return policy.ram_relief(states, mib_to_free(level, snap.host.ram_total_mib), now)
        return []  # cpu and disk: the alert is the action
