"""Host telemetry through psutil: CPU, RAM, swap, disk free of the folders that matter."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import psutil

from gpuwarden.engine.telemetry.snapshot import DiskSample, HostSample

log = logging.getLogger(__name__)

MIB = 1024 * 1024
GIB = 1024 * MIB

# Sensor chips that carry the CPU package temperature, most specific first.
_CPU_SENSOR_CHIPS = ("coretemp", "k10temp", "zenpower", "cpu_thermal", "acpitz")


class PsutilHostProbe:
    """Reads the host. Slow parts (sensors, disks) are refreshed every ``slow_every_s``."""

    def __init__(
        self,
        disk_paths: Sequence[Path] = (),
        *,
        per_core: bool = False,
        slow_every_s: float = 5.0,
    ) -> None:
        self._disk_paths = tuple(disk_paths)
        self._per_core = per_core
        self._slow_every_s = slow_every_s
        self._slow_at: float | None = None
        self._cpu_temp: float | None = None
        self._disks: tuple[DiskSample, ...] = ()
        # psutil measures CPU % between calls: the first call only primes it.
        if per_core:
            psutil.cpu_percent(interval=None, percpu=True)
        else:
            psutil.cpu_percent(interval=None)

    def sample(self, now: float) -> HostSample:
        if self._slow_at is None or now - self._slow_at >= self._slow_every_s:
            self._slow_at = now
            self._cpu_temp = read_cpu_temperature()
            self._disks = tuple(read_disk(p) for p in self._disk_paths)
        vm = psutil.virtual_memory()
        sw = psutil.swap_memory()
        cpu_pct, per_core = self._read_cpu()
        return HostSample(
            cpu_pct=cpu_pct,
            per_core_pct=per_core,
            ram_used_mib=(vm.total - vm.available) / MIB,
            ram_total_mib=vm.total / MIB,
            swap_used_mib=sw.used / MIB,
            swap_total_mib=sw.total / MIB,
            cpu_temp_c=self._cpu_temp,
            disks=self._disks,
        )

    def _read_cpu(self) -> tuple[float, tuple[float, ...] | None]:
        if not self._per_core:
            return float(psutil.cpu_percent(interval=None)), None
        cores = tuple(float(c) for c in psutil.cpu_percent(interval=None, percpu=True))
        return (sum(cores) / len(cores) if cores else 0.0), cores


def read_disk(path: Path) -> DiskSample:
    """Free space of the file system holding ``path`` (its nearest existing parent)."""
    probe = path
    try:
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        usage = psutil.disk_usage(str(probe))
    except OSError as exc:
        log.warning("cannot read disk usage of %s: %s", path, exc)
        return DiskSample(path=str(path), free_gib=None, total_gib=None)
    return DiskSample(path=str(path), free_gib=usage.free / GIB, total_gib=usage.total / GIB)


def read_cpu_temperature() -> float | None:
    """The CPU package temperature where psutil has sensors, else None (n/a)."""
    reader = getattr(psutil, "sensors_temperatures", None)
    if reader is None:  # not on this platform
        return None
    try:
        chips = reader()
    except OSError as exc:
        log.debug("no CPU temperature sensors: %s", exc)
        return None
    for chip in _CPU_SENSOR_CHIPS:
        entries = chips.get(chip)
        if entries:
            return float(max(e.current for e in entries))
    return None
