"""Immutable snapshots of what the probes read, and the history frames the UI draws.

Units are in the field names (``memory_used_mib``, ``power_draw_w``). A field the
hardware does not report (NVML answers NOT_SUPPORTED, no sensor) is ``None``,
which every formatter shows as ``n/a``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

NA_TEXT = "n/a"

GpuSource = Literal["nvml", "simulated", "none"]

# The numeric GPU fields that have a history series (and can be made n/a).
GPU_SERIES_FIELDS: tuple[str, ...] = (
    "memory_used_mib",
    "memory_total_mib",
    "gpu_util_pct",
    "memory_util_pct",
    "temperature_c",
    "temperature_slowdown_c",
    "temperature_shutdown_c",
    "power_draw_w",
    "power_limit_w",
    "fan_speed_pct",
    "sm_clock_mhz",
    "mem_clock_mhz",
)

HOST_SERIES_FIELDS: tuple[str, ...] = (
    "cpu_pct",
    "ram_used_mib",
    "ram_total_mib",
    "swap_used_mib",
    "cpu_temp_c",
)


@dataclass(frozen=True, slots=True)
class GpuProcess:
    pid: int
    name: str
    used_memory_mib: float | None
    kind: Literal["compute", "graphics"]


@dataclass(frozen=True, slots=True)
class GpuSample:
    """One reading of one GPU. ``available`` is False while the GPU is lost."""

    index: int
    name: str
    uuid: str
    available: bool = True
    memory_total_mib: float | None = None
    memory_used_mib: float | None = None
    memory_free_mib: float | None = None
    gpu_util_pct: float | None = None
    memory_util_pct: float | None = None
    temperature_c: float | None = None
    temperature_slowdown_c: float | None = None
    temperature_shutdown_c: float | None = None
    power_draw_w: float | None = None
    power_limit_w: float | None = None
    fan_speed_pct: float | None = None
    sm_clock_mhz: float | None = None
    mem_clock_mhz: float | None = None
    throttle_reasons: tuple[str, ...] | None = None
    processes: tuple[GpuProcess, ...] | None = None

    def without(self, *fields: str) -> GpuSample:
        """The same sample with the named fields made n/a."""
        blank: dict[str, Any] = dict.fromkeys(fields)
        return dataclasses.replace(self, **blank)


@dataclass(frozen=True, slots=True)
class DiskSample:
    path: str
    free_gib: float | None
    total_gib: float | None


@dataclass(frozen=True, slots=True)
class HostSample:
    cpu_pct: float | None = None
    per_core_pct: tuple[float, ...] | None = None
    ram_used_mib: float | None = None
    ram_total_mib: float | None = None
    swap_used_mib: float | None = None
    swap_total_mib: float | None = None
    cpu_temp_c: float | None = None
    disks: tuple[DiskSample, ...] = ()


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything one sampler tick read, published once per tick."""

    ts: float
    seq: int
    gpu_source: GpuSource
    gpus: tuple[GpuSample, ...]
    host: HostSample
    gpu_note: str | None = None  # why there is no GPU / what is simulated, for a person

    def gpu(self, index: int) -> GpuSample | None:
        for g in self.gpus:
            if g.index == index:
                return g
        return None

    def to_dict(self) -> dict[str, Any]:
        cleaned: dict[str, Any] = _clean(dataclasses.asdict(self))
        return cleaned


@dataclass(frozen=True, slots=True)
class HistoryFrame:
    """A read-only copy of the recent history, oldest first.

    ``t`` holds unix seconds; ``series`` maps a key such as ``gpu0.temperature_c``
    or ``host.cpu_pct`` to values aligned with ``t`` (NaN where n/a).
    """

    t: npt.NDArray[np.float64]
    series: Mapping[str, npt.NDArray[np.float64]]

    def get(self, key: str) -> npt.NDArray[np.float64] | None:
        return self.series.get(key)

    def __len__(self) -> int:
        return int(self.t.shape[0])


def measured_vram_mib(
    snap: Snapshot | None, pids: Collection[int], gpu: int | None = None
) -> float | None:
    """What the processes ``pids`` hold in VRAM, by the driver's per-process list: the sum
    over the available GPUs (or only GPU ``gpu``). None when there is no snapshot or no GPU
    considered reports a process list; 0.0 when the lists are known but hold none of the
    pids. A process whose memory is not reported counts 0.

    This, not the file-size estimate, is what a loaded model holds: pass the pids of its
    process and children (``backend.pids(model)``)."""
    if snap is None:
        return None
    wanted = frozenset(pids)
    total: float | None = None
    for sample in snap.gpus:
        if (gpu is not None and sample.index != gpu) or not sample.available:
            continue
        if sample.processes is None:
            continue
        total = (total or 0.0) + sum(
            _known_mib(p.used_memory_mib) for p in sample.processes if p.pid in wanted
        )
    return total


def _known_mib(value: float | None) -> float:
    """A process's memory, 0 when not reported (None, NaN)."""
    return value if value is not None and math.isfinite(value) else 0.0


def gpu_key(index: int, field_name: str) -> str:
    return f"gpu{index}.{field_name}"


def host_key(field_name: str) -> str:
    return f"host.{field_name}"


def fmt(value: float | None, unit: str = "", digits: int = 0) -> str:
    """Format a reading; ``None`` (not supported / not known) becomes ``n/a``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return NA_TEXT
    text = f"{value:.{digits}f}"
    return f"{text} {unit}".rstrip() if unit else text


def fmt_mib(value: float | None) -> str:
    """MiB below 1 GiB, GiB with one decimal above."""
    if value is None:
        return NA_TEXT
    if abs(value) >= 1024:
        return f"{value / 1024:.1f} GiB"
    return f"{value:.0f} MiB"


def _clean(value: Any) -> Any:
    """JSON-ready: tuples to lists, NaN to None."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
