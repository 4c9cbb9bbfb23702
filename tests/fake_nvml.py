"""A fake ``pynvml`` cut at its function boundary, for testing the NVML probe.

Every NVML function the probe may call is ``create_autospec(real_function)``, so a
call with the wrong signature fails, and ``fake.nvmlX.call_count`` counts calls. The
fake carries the REAL ``pynvml`` constants and ``NVMLError`` classes, and raises them
as pynvml does: ``pynvml.NVMLError(code)`` builds the matching subclass.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

import pynvml

GIB = 1024**3
MIB = 1024**2

# The NVML functions a probe may use. Anything else is missing from the fake.
FUNCTIONS: tuple[str, ...] = (
    "nvmlInit",
    "nvmlShutdown",
    "nvmlDeviceGetCount",
    "nvmlDeviceGetHandleByIndex",
    "nvmlDeviceGetName",
    "nvmlDeviceGetUUID",
    "nvmlDeviceGetMemoryInfo",
    "nvmlDeviceGetUtilizationRates",
    "nvmlDeviceGetTemperature",
    "nvmlDeviceGetPowerUsage",
    "nvmlDeviceGetFanSpeed",
    "nvmlDeviceGetClockInfo",
    "nvmlDeviceGetCurrentClocksEventReasons",
    "nvmlDeviceGetCurrentClocksThrottleReasons",
    "nvmlDeviceGetTemperatureThreshold",
    "nvmlDeviceGetEnforcedPowerLimit",
    "nvmlDeviceGetComputeRunningProcesses",
    "nvmlDeviceGetGraphicsRunningProcesses",
)


def nvml_error(code: int) -> pynvml.NVMLError:
    """The exception pynvml raises for ``code`` (an ``NVMLError_*`` subclass)."""
    return pynvml.NVMLError(code)


def process(pid: int, used_bytes: int | None) -> Any:
    """A process entry shaped like the ones pynvml returns (None: memory n/a)."""
    raw = pynvml.c_nvmlProcessInfo_v3_t(pid=pid, usedGpuMemory=used_bytes or 0)
    obj = pynvml.nvmlStructToFriendlyObject(raw)
    if used_bytes is None:
        obj.usedGpuMemory = None
    return obj


@dataclass
class FakeGpu:
    """What one fake GPU reports. Raw NVML units: bytes, mW, degrees C, MHz, %."""

    name: str | bytes = "NVIDIA Fake A100"
    uuid: str = "GPU-00000000-0000-0000-0000-000000000000"
    memory_total: int = 80 * GIB
    memory_used: int = 20 * GIB
    gpu_util: int = 55
    memory_util: int = 30
    temperature: int = 61
    slowdown: int = 90
    shutdown: int = 95
    power_mw: int = 250_500
    power_limit_mw: int = 400_000
    fan: int = 40
    sm_clock: int = 1410
    mem_clock: int = 1593
    throttle_mask: int = 0
    compute: list[Any] = field(default_factory=list)
    graphics: list[Any] = field(default_factory=list)
    unsupported: set[str] = field(default_factory=set)  # NVML function names
    errors: dict[str, int] = field(default_factory=dict)  # function name -> NVML error code
    lost: bool = False


class FakeNvml:
    """A stand-in for the ``pynvml`` module; switch ``library_present`` / ``driver_loaded``.

    With ``driver_loaded`` False, ``nvmlInit`` raises DriverNotLoaded and every other
    call raises ``driver_error`` (DriverNotLoaded by default; set it to
    ``NVML_ERROR_UNINITIALIZED`` to act out a different failure).
    """

    def __init__(
        self,
        gpus: Iterable[FakeGpu] = (),
        *,
        library_present: bool = True,
        driver_loaded: bool = True,
        event_reasons: bool = True,
    ) -> None:
        self.gpus = list(gpus)
        self.library_present = library_present
        self.driver_loaded = driver_loaded
        self.driver_error = pynvml.NVML_ERROR_DRIVER_NOT_LOADED
        self.initialised = False
        for name in dir(pynvml):
            value = getattr(pynvml, name)
            if name.startswith(("NVML", "nvmlClocks")) and not inspect.isfunction(value):
                if not event_reasons and name.startswith("nvmlClocksEventReason"):
                    continue
                setattr(self, name, value)
        for name in FUNCTIONS:
            if not event_reasons and name == "nvmlDeviceGetCurrentClocksEventReasons":
                continue
            impl = getattr(self, "_" + name)
            setattr(self, name, mock.create_autospec(getattr(pynvml, name), side_effect=impl))

    def __getattr__(self, name: str) -> Any:  # only reached for missing attributes
        raise AttributeError(f"the fake pynvml has no {name!r}")

    def mocks(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in FUNCTIONS if name in vars(self)}

    # -- library-wide --------------------------------------------------------------------

    def _check(self) -> None:
        if not self.library_present:
            raise nvml_error(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
        if not self.driver_loaded:
            raise nvml_error(self.driver_error)
        if not self.initialised:
            raise nvml_error(pynvml.NVML_ERROR_UNINITIALIZED)

    def _nvmlInit(self) -> None:
        if not self.library_present:
            raise nvml_error(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
        if not self.driver_loaded:
            raise nvml_error(pynvml.NVML_ERROR_DRIVER_NOT_LOADED)
        self.initialised = True

    def _nvmlShutdown(self) -> None:
        self._check()
        self.initialised = False

    def _nvmlDeviceGetCount(self) -> int:
        self._check()
        return len(self.gpus)

    def _nvmlDeviceGetHandleByIndex(self, index: int) -> FakeGpu:
        self._check()
        if not 0 <= index < len(self.gpus):
            raise nvml_error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        gpu = self.gpus[index]
        if gpu.lost:
            raise nvml_error(pynvml.NVML_ERROR_GPU_IS_LOST)
        return gpu

    # -- per device ----------------------------------------------------------------------

    def _device(self, fn: str, handle: FakeGpu) -> FakeGpu:
        self._check()
        if handle.lost:
            raise nvml_error(pynvml.NVML_ERROR_GPU_IS_LOST)
        if fn in handle.unsupported:
            raise nvml_error(pynvml.NVML_ERROR_NOT_SUPPORTED)
        if fn in handle.errors:
            raise nvml_error(handle.errors[fn])
        return handle

    def _nvmlDeviceGetName(self, handle: FakeGpu) -> str | bytes:
        return self._device("nvmlDeviceGetName", handle).name

    def _nvmlDeviceGetUUID(self, handle: FakeGpu) -> str:
        return self._device("nvmlDeviceGetUUID", handle).uuid

    def _nvmlDeviceGetMemoryInfo(self, handle: FakeGpu, version: Any = None) -> Any:
        g = self._device("nvmlDeviceGetMemoryInfo", handle)
        free = g.memory_total - g.memory_used
        return pynvml.c_nvmlMemory_t(total=g.memory_total, free=free, used=g.memory_used)

    def _nvmlDeviceGetUtilizationRates(self, handle: FakeGpu) -> Any:
        g = self._device("nvmlDeviceGetUtilizationRates", handle)
        return pynvml.c_nvmlUtilization_t(gpu=g.gpu_util, memory=g.memory_util)

    def _nvmlDeviceGetTemperature(self, handle: FakeGpu, sensor: int) -> int:
        assert sensor == pynvml.NVML_TEMPERATURE_GPU
        return self._device("nvmlDeviceGetTemperature", handle).temperature

    def _nvmlDeviceGetPowerUsage(self, handle: FakeGpu) -> int:
        return self._device("nvmlDeviceGetPowerUsage", handle).power_mw

    def _nvmlDeviceGetFanSpeed(self, handle: FakeGpu) -> int:
        return self._device("nvmlDeviceGetFanSpeed", handle).fan

    def _nvmlDeviceGetClockInfo(self, handle: FakeGpu, type: int) -> int:
        g = self._device("nvmlDeviceGetClockInfo", handle)
        clocks = {pynvml.NVML_CLOCK_SM: g.sm_clock, pynvml.NVML_CLOCK_MEM: g.mem_clock}
        if type not in clocks:
            raise nvml_error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return clocks[type]

    def _nvmlDeviceGetCurrentClocksEventReasons(self, handle: FakeGpu) -> int:
        return self._device("nvmlDeviceGetCurrentClocksEventReasons", handle).throttle_mask

    def _nvmlDeviceGetCurrentClocksThrottleReasons(self, handle: FakeGpu) -> int:
        return self._device("nvmlDeviceGetCurrentClocksThrottleReasons", handle).throttle_mask

    def _nvmlDeviceGetTemperatureThreshold(self, handle: FakeGpu, threshold: int) -> int:
        g = self._device("nvmlDeviceGetTemperatureThreshold", handle)
        known = {
            pynvml.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN: g.slowdown,
            pynvml.NVML_TEMPERATURE_THRESHOLD_SHUTDOWN: g.shutdown,
        }
        if threshold not in known:
            raise nvml_error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return known[threshold]

    def _nvmlDeviceGetEnforcedPowerLimit(self, handle: FakeGpu) -> int:
        return self._device("nvmlDeviceGetEnforcedPowerLimit", handle).power_limit_mw

    def _nvmlDeviceGetComputeRunningProcesses(self, handle: FakeGpu) -> list[Any]:
        return list(self._device("nvmlDeviceGetComputeRunningProcesses", handle).compute)

    def _nvmlDeviceGetGraphicsRunningProcesses(self, handle: FakeGpu) -> list[Any]:
        return list(self._device("nvmlDeviceGetGraphicsRunningProcesses", handle).graphics)
