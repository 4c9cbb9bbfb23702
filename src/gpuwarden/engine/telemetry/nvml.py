"""The real GPU probe: NVIDIA GPUs read through NVML (the ``pynvml`` bindings).

NVML is initialised once and kept open. Fast fields (memory, load, temperature,
power, fan, clocks, throttle reasons) are read every sample; slow fields
(thresholds, power limit, process list) are cached for ``slow_every_s``.
Every per-device call goes through :meth:`NvmlProbe._query`: a field the GPU
does not support is n/a and never asked again, a lost GPU or a driver that went
away becomes events and a retry every ``retry_every_s``, never an exception.
"""

from __future__ import annotations

import logging
import math
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import psutil
import pynvml

from gpuwarden.engine.events import Event, GpuLost, GpuRecovered, GpuUnavailable
from gpuwarden.engine.telemetry.probe import GpuReading, ProcessLists
from gpuwarden.engine.telemetry.snapshot import GpuProcess, GpuSample, GpuSource

log = logging.getLogger(__name__)

_MIB = 1024.0 * 1024.0
_SIMULATE_HINT = "start with `gpuwarden --simulate` to try gpuwarden with a simulated GPU."

# Short name -> suffix of pynvml's nvmlClocksEventReason* / nvmlClocksThrottleReason*.
_THROTTLE_REASONS: tuple[tuple[str, str], ...] = (
    ("gpu_idle", "GpuIdle"),
    ("app_clocks", "ApplicationsClocksSetting"),
    ("sw_power_cap", "SwPowerCap"),
    ("hw_slowdown", "HwSlowdown"),
    ("sync_boost", "SyncBoost"),
    ("sw_thermal", "SwThermalSlowdown"),
    ("hw_thermal", "HwThermalSlowdown"),
    ("hw_power_brake", "HwPowerBrakeSlowdown"),
    ("display_clocks", "DisplayClockSetting"),
)


class _GpuGone(Exception):
    """Internal: NVML said GPU_IS_LOST for this device."""


class _DriverGone(Exception):
    """Internal: NVML as a whole stopped answering (driver unloaded, uninitialised)."""


@dataclass
class _Slow:
    slowdown_c: float | None = None
    shutdown_c: float | None = None
    power_limit_w: float | None = None
    processes: tuple[GpuProcess, ...] | None = None


@dataclass
class _Gpu:
    index: int
    name: str
    uuid: str = ""
    handle: Any = None
    lost: bool = False
    retry_at: float = -math.inf
    slow_due: float = -math.inf
    slow: _Slow = field(default_factory=_Slow)
    unsupported: set[str] = field(default_factory=set)
    warned: set[str] = field(default_factory=set)

    @property
    def key(self) -> str:
        return self.uuid or f"#{self.index}"

    def lost_sample(self) -> GpuSample:
        return GpuSample(index=self.index, name=self.name, uuid=self.uuid, available=False)


def _psutil_name(pid: int) -> str:
    try:
        return str(psutil.Process(pid).name())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return f"pid {pid}"


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _num(value: Any, scale: float = 1.0) -> float | None:
    return None if value is None else float(value) / scale


def _attr(obj: Any, name: str, scale: float = 1.0) -> float | None:
    return None if obj is None else _num(getattr(obj, name, None), scale)


def _library_file() -> str:
    return "nvml.dll" if sys.platform.startswith("win") else "libnvidia-ml.so"


def unavailable_note(reason: str, detail: str = "") -> str:
    """The sentence shown to a person when no GPU can be read, for each reason."""
    if reason == "no_library":
        return (
            f"No NVIDIA GPU driver found (the NVML library {_library_file()} is not "
            f"installed). Showing the host only; {_SIMULATE_HINT}"
        )
    if reason == "driver_not_loaded":
        return (
            "The NVIDIA driver is installed but not loaded, so no GPU can be read. "
            f"Showing the host only and checking again every few seconds; {_SIMULATE_HINT}"
        )
    if reason == "no_device":
        return (
            "The NVIDIA driver is running but reports no GPU. "
            f"Showing the host only; {_SIMULATE_HINT}"
        )
    return (
        f"NVML could not start ({detail or 'unknown error'}), so no GPU can be read. "
        f"Showing the host only; {_SIMULATE_HINT}"
    )


class NvmlProbe:
    """Reads every NVIDIA GPU through NVML. Implements :class:`GpuProbe`."""

    def __init__(
        self,
        nvml: types.ModuleType | Any | None = None,
        *,
        slow_every_s: float = 5.0,
        retry_every_s: float = 5.0,
        process_name: Callable[[int], str] | None = None,
    ) -> None:
        self._nv: Any = nvml if nvml is not None else pynvml
        self._slow_every_s = slow_every_s
        self._retry_every_s = retry_every_s
        self._process_name = process_name or _psutil_name
        self._initialised = False
        self._next_init_at = -math.inf
        self._gpus: list[_Gpu] = []
        self._reason: str | None = None
        self._note: str | None = None
        self._throttle_fn: Any = getattr(
            self._nv, "nvmlDeviceGetCurrentClocksEventReasons", None
        ) or getattr(self._nv, "nvmlDeviceGetCurrentClocksThrottleReasons", None)
        self._throttle_bits = self._reason_bits()

    @property
    def source(self) -> GpuSource:
        return "nvml" if self._initialised and self._gpus else "none"

    def sample(self, now: float) -> GpuReading:
        events: list[Event] = []
        try:
            if not self._initialised and now >= self._next_init_at:
                events += self._try_init(now)
            if not self._initialised:
                return self._offline(events)
            gpus = tuple(self._sample_gpu(gpu, now, events) for gpu in self._gpus)
        except _DriverGone as exc:
            events += self._driver_gone(now, str(exc))
            return self._offline(events)
        return GpuReading(gpus=gpus, events=tuple(events))

    def process_lists(self) -> ProcessLists:
        return {gpu.index: self._processes(gpu) for gpu in list(self._gpus) if not gpu.lost}

    def close(self) -> None:
        if self._initialised:
            self._shutdown()

    # -- init, shutdown, driver trouble ------------------------------------------------

    def _try_init(self, now: float) -> list[Event]:
        self._next_init_at = now + self._retry_every_s
        nv = self._nv
        try:
            nv.nvmlInit()
        except nv.NVMLError_LibraryNotFound:
            return self._unavailable("no_library")
        except nv.NVMLError_DriverNotLoaded:
            return self._unavailable("driver_not_loaded")
        except nv.NVMLError as exc:
            log.warning("nvmlInit failed: %s", exc)
            return self._unavailable("error", str(exc))
        self._initialised = True
        try:
            return self._enumerate(int(nv.nvmlDeviceGetCount()), now)
        except (nv.NVMLError, _DriverGone) as exc:
            log.warning("could not list the NVIDIA GPUs: %s", exc)
            self._shutdown()
            return self._unavailable("error", str(exc))

    def _enumerate(self, count: int, now: float) -> list[Event]:
        if count == 0:
            self._shutdown()
            return self._unavailable("no_device")
        was_lost = {gpu.key for gpu in self._gpus if gpu.lost}
        gpus = [self._open(index, now) for index in range(count)]
        self._gpus, self._reason, self._note = gpus, None, None
        events: list[Event] = []
        for gpu in gpus:
            if gpu.lost and gpu.key not in was_lost:
                events.append(self._lost_event(gpu, "it did not answer at start-up"))
            elif not gpu.lost and gpu.key in was_lost:
                events.append(GpuRecovered(gpu=gpu.index, uuid=gpu.uuid))
        return events

    def _open(self, index: int, now: float) -> _Gpu:
        gpu = _Gpu(index=index, name=f"GPU {index}")
        try:
            self._read_static(gpu)
        except _GpuGone:
            gpu.lost, gpu.retry_at = True, now + self._retry_every_s
        return gpu

    def _unavailable(self, reason: str, detail: str = "") -> list[Event]:
        """No GPU can be read. Known GPUs stay listed as lost; else announce once."""
        if self._gpus:
            return []
        self._note = unavailable_note(reason, detail)
        if reason == self._reason:
            return []
        self._reason = reason
        return [GpuUnavailable(reason=reason, message=self._note)]

    def _driver_gone(self, now: float, detail: str) -> list[Event]:
        log.warning("the NVIDIA driver stopped answering: %s", detail)
        retry = f"retrying every {self._retry_every_s:g} s"
        message = f"the NVIDIA driver stopped answering ({detail}); {retry}"
        events: list[Event] = [
            GpuLost(gpu=gpu.index, uuid=gpu.uuid, message=message)
            for gpu in self._gpus
            if not gpu.lost
        ]
        for gpu in self._gpus:
            gpu.lost, gpu.slow, gpu.slow_due = True, _Slow(), -math.inf
        self._shutdown()
        self._next_init_at = now + self._retry_every_s
        self._note = f"The NVIDIA driver stopped answering ({detail}); gpuwarden is {retry}."
        return events

    def _shutdown(self) -> None:
        self._initialised = False
        try:
            self._nv.nvmlShutdown()
        except self._nv.NVMLError as exc:
            log.warning("nvmlShutdown failed: %s", exc)

    def _offline(self, events: list[Event]) -> GpuReading:
        gpus = tuple(gpu.lost_sample() for gpu in self._gpus)
        return GpuReading(gpus=gpus, events=tuple(events), note=self._note)

    # -- one GPU -----------------------------------------------------------------------

    def _sample_gpu(self, gpu: _Gpu, now: float, events: list[Event]) -> GpuSample:
        if gpu.lost:
            if now < gpu.retry_at or not self._try_recover(gpu, now):
                return gpu.lost_sample()
            events.append(GpuRecovered(gpu=gpu.index, uuid=gpu.uuid))
        try:
            if now >= gpu.slow_due:
                gpu.slow, gpu.slow_due = self._read_slow(gpu), now + self._slow_every_s
            return self._read_fast(gpu)
        except _GpuGone as exc:
            gpu.lost, gpu.retry_at = True, now + self._retry_every_s
            gpu.slow, gpu.slow_due = _Slow(), -math.inf
            log.warning("GPU %d (%s) is lost: %s", gpu.index, gpu.name, exc)
            events.append(self._lost_event(gpu, f"it stopped answering ({exc})"))
            return gpu.lost_sample()

    def _lost_event(self, gpu: _Gpu, what: str) -> GpuLost:
        retry = f"retrying every {self._retry_every_s:g} s"
        message = f"{what}; it may have fallen off the bus, {retry}"
        return GpuLost(gpu=gpu.index, uuid=gpu.uuid, message=message)

    def _try_recover(self, gpu: _Gpu, now: float) -> bool:
        gpu.retry_at = now + self._retry_every_s
        try:
            if gpu.handle is not None:
                self._query(gpu, "memory", self._nv.nvmlDeviceGetMemoryInfo, gpu.handle)
            self._read_static(gpu)
        except _GpuGone:
            return False
        log.info("GPU %d (%s) is back", gpu.index, gpu.name)
        gpu.lost, gpu.slow_due = False, -math.inf
        return True

    def _query(self, gpu: _Gpu, name: str, fn: Callable[..., Any], *args: Any) -> Any:
        """Call one NVML function for one GPU; None when the field is n/a."""
        if name in gpu.unsupported:
            return None
        try:
            return fn(*args)
        except self._nv.NVMLError as exc:
            self._on_error(gpu, name, exc)
            return None

    def _on_error(self, gpu: _Gpu, name: str, exc: Exception) -> None:
        nv = self._nv
        if isinstance(exc, nv.NVMLError_GpuIsLost):
            raise _GpuGone(str(exc)) from exc
        driver_errors = (
            nv.NVMLError_DriverNotLoaded,
            nv.NVMLError_Uninitialized,
            nv.NVMLError_LibraryNotFound,
        )
        if isinstance(exc, driver_errors):
            raise _DriverGone(str(exc)) from exc
        if isinstance(exc, nv.NVMLError_NotSupported):
            gpu.unsupported.add(name)
        elif isinstance(exc, nv.NVMLError_NoPermission):
            log.debug("GPU %d %s: no permission", gpu.index, name)
        elif name not in gpu.warned:
            gpu.warned.add(name)
            log.warning("GPU %d: reading %s failed: %s", gpu.index, name, exc)

    def _read_static(self, gpu: _Gpu) -> None:
        nv = self._nv
        try:
            gpu.handle = nv.nvmlDeviceGetHandleByIndex(gpu.index)
        except nv.NVMLError as exc:
            self._on_error(gpu, "handle", exc)
            raise _GpuGone(str(exc)) from exc
        gpu.name = _text(self._query(gpu, "name", nv.nvmlDeviceGetName, gpu.handle)) or gpu.name
        gpu.uuid = _text(self._query(gpu, "uuid", nv.nvmlDeviceGetUUID, gpu.handle)) or gpu.uuid

    def _read_fast(self, gpu: _Gpu) -> GpuSample:
        nv, h, q = self._nv, gpu.handle, self._query
        mem = q(gpu, "memory", nv.nvmlDeviceGetMemoryInfo, h)
        util = q(gpu, "utilization", nv.nvmlDeviceGetUtilizationRates, h)
        slow = gpu.slow
        return GpuSample(
            index=gpu.index,
            name=gpu.name,
            uuid=gpu.uuid,
            memory_total_mib=_attr(mem, "total", _MIB),
            memory_used_mib=_attr(mem, "used", _MIB),
            memory_free_mib=_attr(mem, "free", _MIB),
            gpu_util_pct=_attr(util, "gpu"),
            memory_util_pct=_attr(util, "memory"),
            temperature_c=_num(
                q(gpu, "temperature", nv.nvmlDeviceGetTemperature, h, nv.NVML_TEMPERATURE_GPU)
            ),
            temperature_slowdown_c=slow.slowdown_c,
            temperature_shutdown_c=slow.shutdown_c,
            power_draw_w=_num(q(gpu, "power", nv.nvmlDeviceGetPowerUsage, h), 1000.0),
            power_limit_w=slow.power_limit_w,
            fan_speed_pct=_num(q(gpu, "fan", nv.nvmlDeviceGetFanSpeed, h)),
            sm_clock_mhz=_num(q(gpu, "sm_clock", nv.nvmlDeviceGetClockInfo, h, nv.NVML_CLOCK_SM)),
            mem_clock_mhz=_num(
                q(gpu, "mem_clock", nv.nvmlDeviceGetClockInfo, h, nv.NVML_CLOCK_MEM)
            ),
            throttle_reasons=self._throttle(gpu),
            processes=slow.processes,
        )

    def _read_slow(self, gpu: _Gpu) -> _Slow:
        nv, h, q = self._nv, gpu.handle, self._query
        threshold = nv.nvmlDeviceGetTemperatureThreshold
        return _Slow(
            slowdown_c=_num(
                q(gpu, "temp_slowdown", threshold, h, nv.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN)
            ),
            shutdown_c=_num(
                q(gpu, "temp_shutdown", threshold, h, nv.NVML_TEMPERATURE_THRESHOLD_SHUTDOWN)
            ),
            power_limit_w=_num(
                q(gpu, "power_limit", nv.nvmlDeviceGetEnforcedPowerLimit, h), 1000.0
            ),
            processes=self._processes(gpu),
        )

    def _processes(self, gpu: _Gpu) -> tuple[GpuProcess, ...] | None:
        nv = self._nv
        compute = self._query(
            gpu, "compute_processes", nv.nvmlDeviceGetComputeRunningProcesses, gpu.handle
        )
        graphics = self._query(
            gpu, "graphics_processes", nv.nvmlDeviceGetGraphicsRunningProcesses, gpu.handle
        )
        if compute is None and graphics is None:
            return None
        return self._to_processes(compute, "compute") + self._to_processes(graphics, "graphics")

    def _to_processes(
        self, infos: Any, kind: Literal["compute", "graphics"]
    ) -> tuple[GpuProcess, ...]:
        return tuple(
            GpuProcess(
                pid=int(info.pid),
                name=self._process_name(int(info.pid)),
                used_memory_mib=_num(info.usedGpuMemory, _MIB),
                kind=kind,
            )
            for info in infos or ()
        )

    def _throttle(self, gpu: _Gpu) -> tuple[str, ...] | None:
        if self._throttle_fn is None:
            return None
        mask = self._query(gpu, "throttle_reasons", self._throttle_fn, gpu.handle)
        if mask is None:
            return None
        return tuple(name for name, bit in self._throttle_bits if int(mask) & bit)

    def _reason_bits(self) -> tuple[tuple[str, int], ...]:
        bits: list[tuple[str, int]] = []
        for name, suffix in _THROTTLE_REASONS:
            bit = getattr(self._nv, f"nvmlClocksEventReason{suffix}", None)
            if bit is None:
                bit = getattr(self._nv, f"nvmlClocksThrottleReason{suffix}", None)
            if bit is not None:
                bits.append((name, int(bit)))
        return tuple(bits)
