"""What this machine can do: OS, NVIDIA driver and GPUs, PyTorch, CPU and RAM.

Inspected once and cached (:class:`CapabilityCache`); a refresh inspects again. Every
source is injectable at the function boundary (``nvml``, ``torch_module``, the OS facts,
the ``/proc`` files), so tests fake them. Nothing here raises for a missing or broken
source: a field that cannot be read is ``None`` (shown as "n/a"), and when no GPU can be
read ``gpu_note`` says why in a sentence.

torch is optional. It is imported lazily, inside :func:`inspect_capabilities`, and when
it is installed its answers are preferred: whether CUDA is usable at all, and whether
bfloat16 is supported.
"""

from __future__ import annotations

import enum
import logging
import os
import platform
import sys
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import psutil
import pynvml

from gpuwarden.engine.safety.torch_info import import_torch, inspect_torch

log = logging.getLogger(__name__)

__all__ = [
    "AUTO",
    "BF16_MIN_COMPUTE_CAPABILITY",
    "Capabilities",
    "CapabilityCache",
    "GpuCapability",
    "PlatformKind",
    "inspect_capabilities",
]

BF16_MIN_COMPUTE_CAPABILITY = (8, 0)  # Ampere: native bfloat16 tensor cores
PlatformKind = Literal["linux", "wsl2", "windows", "macos", "other"]
_OSRELEASE = Path("/proc/sys/kernel/osrelease")
_CPUINFO = Path("/proc/cpuinfo")


class _Auto(enum.Enum):
    AUTO = "auto"


AUTO = _Auto.AUTO
"""Default for ``torch_module`` (import torch if installed) and the OS facts (ask
:mod:`platform`)."""


@dataclass(frozen=True, slots=True)
class GpuCapability:
    """One NVIDIA GPU as NVML (or, without NVML, torch) sees it. None: n/a."""

    index: int
    name: str | None
    uuid: str | None = None
    compute_capability: tuple[int, int] | None = None
    total_vram_bytes: int | None = None

    @property
    def bf16(self) -> bool | None:
        """Native bfloat16: compute capability 8.0 (Ampere) or newer; None: unknown."""
        if self.compute_capability is None:
            return None
        return self.compute_capability >= BF16_MIN_COMPUTE_CAPABILITY

    @property
    def label(self) -> str:
        return f"GPU {self.index} ({self.name or 'name n/a'})"

    def to_dict(self) -> dict[str, Any]:
        cc = self.compute_capability
        return {
            "index": self.index,
            "name": self.name,
            "uuid": self.uuid,
            "compute_capability": None if cc is None else f"{cc[0]}.{cc[1]}",
            "total_vram_bytes": self.total_vram_bytes,
            "bf16": self.bf16,
        }


@dataclass(frozen=True, slots=True)
class Capabilities:
    """One inspection of the machine. Every optional field is None where it could not be
    read; ``torch_version`` None means torch is not installed (or does not import)."""

    os_name: str  # platform.system(): "Linux", "Windows", "Darwin", ...
    os_release: str  # kernel / Windows release
    os_description: str  # distribution or platform.platform(): for people
    wsl2: bool
    driver_version: str | None = None
    cuda_driver_version: str | None = None  # the newest CUDA the driver supports, "12.4"
    gpus: tuple[GpuCapability, ...] = ()
    gpu_note: str | None = None  # why there are no GPUs (None when there are)
    gpu_source: Literal["nvml", "torch", "none"] = "none"
    torch_version: str | None = None
    torch_cuda_version: str | None = None  # torch.version.cuda: None for a CPU build
    torch_cuda_available: bool | None = None
    torch_bf16_supported: bool | None = None  # torch's own answer (device 0), no emulation
    torch_note: str | None = None  # why torch is missing or half-answered
    mps_available: bool | None = None  # Apple Metal (torch.backends.mps)
    cpu_model: str | None = None
    cpu_cores: int | None = None  # physical
    cpu_threads: int | None = None  # logical
    ram_total_bytes: int | None = None
    python_version: str = field(default_factory=platform.python_version)

    @property
    def platform_kind(self) -> PlatformKind:
        if self.os_name == "Windows":
            return "windows"
        if self.os_name == "Darwin":
            return "macos"
        if self.os_name == "Linux":
            return "wsl2" if self.wsl2 else "linux"
        return "other"

    @property
    def torch_installed(self) -> bool:
        return self.torch_version is not None

    @property
    def cuda_usable(self) -> bool:
        """Can a model run on an NVIDIA GPU here? With torch installed, torch decides (a
        CPU build of torch cannot use the GPU NVML sees); without, any GPU NVML lists."""
        if self.torch_installed and self.torch_cuda_available is not None:
            return self.torch_cuda_available
        return bool(self.gpus)

    @property
    def bf16_supported(self) -> bool | None:
        """Native bfloat16 on the CUDA GPU(s): torch's answer when it has one; else every
        GPU's compute capability (one older GPU makes it False); None: unknown."""
        if self.torch_bf16_supported is not None:
            return self.torch_bf16_supported
        if not self.gpus:
            return None
        answers = [g.bf16 for g in self.gpus]
        if False in answers:
            return False
        return None if None in answers else True

    @property
    def bf16_source(self) -> str | None:
        if self.torch_bf16_supported is not None:
            return "torch.cuda.is_bf16_supported()"
        return "compute capability" if self.bf16_supported is not None else None

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k != "gpus"}
        out["gpus"] = [g.to_dict() for g in self.gpus]
        out["platform"] = self.platform_kind
        out["cuda_usable"] = self.cuda_usable
        out["bf16_supported"] = self.bf16_supported
        out["bf16_source"] = self.bf16_source
        return out


# -- OS, CPU, RAM ---------------------------------------------------------------------------


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def _is_wsl2(os_name: str, osrelease: str | None) -> bool:
    """WSL2's kernel release names Microsoft ("5.15.x-microsoft-standard-WSL2")."""
    return os_name == "Linux" and osrelease is not None and "microsoft" in osrelease.lower()


def _os_description(os_name: str, release: str) -> str:
    if os_name == "Linux":
        try:
            pretty = platform.freedesktop_os_release().get("PRETTY_NAME")
        except OSError:
            pretty = None
        if pretty:
            return f"{pretty} (kernel {release})"
    if os_name == "Darwin":
        mac = platform.mac_ver()[0]
        if mac:
            return f"macOS {mac}"
    return platform.platform()


def _cpu_model(cpuinfo: str | None) -> str | None:
    for line in (cpuinfo or "").splitlines():
        key, sep, value = line.partition(":")
        if sep and value.strip() and key.strip().lower() in ("model name", "hardware",
                                                              "cpu model"):
            return value.strip()
    return platform.processor() or platform.machine() or None


def _cores(logical: bool) -> int | None:
    try:
        n = psutil.cpu_count(logical=logical)
    except (OSError, RuntimeError):
        return None
    return int(n) if n else None


def _ram() -> int | None:
    try:
        return int(psutil.virtual_memory().total)
    except (OSError, RuntimeError):
        return None


# -- NVML ----------------------------------------------------------------------------------


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _cuda_version(code: int) -> str:
    """NVML's 12040 -> "12.4"."""
    return f"{code // 1000}.{(code % 1000) // 10}"


def _library_file() -> str:
    return "nvml.dll" if sys.platform.startswith("win") else "libnvidia-ml.so"


class _NvmlAnswers:
    def __init__(self) -> None:
        self.driver: str | None = None
        self.cuda: str | None = None
        self.gpus: list[GpuCapability] = []
        self.note: str | None = None


def _inspect_nvml(nv: Any) -> _NvmlAnswers:
    out = _NvmlAnswers()
    try:
        nv.nvmlInit()
    except nv.NVMLError_LibraryNotFound:
        out.note = (f"No NVIDIA driver found: the NVML library ({_library_file()}) is not "
                    "installed, so no NVIDIA GPU can be used.")
        return out
    except nv.NVMLError_DriverNotLoaded:
        out.note = ("The NVIDIA driver is installed but not loaded (a reboot after installing "
                    "or updating it usually fixes this), so no GPU can be used.")
        return out
    except nv.NVMLError as exc:
        out.note = f"NVML could not start ({exc}), so no NVIDIA GPU can be read."
        return out
    try:
        _read_nvml(nv, out)
    finally:
        try:
            nv.nvmlShutdown()
        except nv.NVMLError as exc:
            log.debug("nvmlShutdown failed: %s", exc)
    return out


def _ask(nv: Any, fn_name: str, *args: Any) -> Any:
    """One NVML call; None when the function is missing from this pynvml or NVML says no."""
    fn = getattr(nv, fn_name, None)
    if fn is None:
        return None
    try:
        return fn(*args)
    except nv.NVMLError as exc:
        log.debug("%s failed: %s", fn_name, exc)
        return None


def _read_nvml(nv: Any, out: _NvmlAnswers) -> None:
    driver = _ask(nv, "nvmlSystemGetDriverVersion")
    out.driver = None if driver is None else _text(driver)
    cuda = _ask(nv, "nvmlSystemGetCudaDriverVersion_v2")
    if cuda is None:
        cuda = _ask(nv, "nvmlSystemGetCudaDriverVersion")
    out.cuda = None if cuda is None else _cuda_version(int(cuda))
    count = _ask(nv, "nvmlDeviceGetCount")
    if count is None:
        out.note = "The NVIDIA driver is loaded but could not list its GPUs."
        return
    if int(count) == 0:
        out.note = "The NVIDIA driver is running but reports no GPU."
        return
    for index in range(int(count)):
        handle = _ask(nv, "nvmlDeviceGetHandleByIndex", index)
        if handle is None:
            out.gpus.append(GpuCapability(index=index, name=None))
            continue
        name = _ask(nv, "nvmlDeviceGetName", handle)
        uuid = _ask(nv, "nvmlDeviceGetUUID", handle)
        cc = _ask(nv, "nvmlDeviceGetCudaComputeCapability", handle)
        memory = _ask(nv, "nvmlDeviceGetMemoryInfo", handle)
        total = getattr(memory, "total", None) if memory is not None else None
        out.gpus.append(GpuCapability(
            index=index,
            name=None if name is None else _text(name),
            uuid=None if uuid is None else _text(uuid),
            compute_capability=None if cc is None else (int(cc[0]), int(cc[1])),
            total_vram_bytes=None if total is None else int(total),
        ))


# -- the inspection ----------------------------------------------------------------------------


def inspect_capabilities(
    nvml: Any | None = None,
    torch_module: Any = AUTO,
    *,
    os_name: str | _Auto = AUTO,
    os_release: str | _Auto = AUTO,
    osrelease_path: Path = _OSRELEASE,
    cpuinfo_path: Path = _CPUINFO,
) -> Capabilities:
    """Inspect the machine now. ``nvml``: the pynvml module or a fake (None: the real
    pynvml); ``torch_module``: torch or a fake, None for "torch is not installed", AUTO to
    import it if installed. Never raises for a missing source."""
    name = platform.system() if os_name is AUTO else os_name
    release = platform.release() if os_release is AUTO else os_release
    description = (_os_description(name, release) if os_name is AUTO
                   else f"{name} {release}".strip())
    wsl2 = _is_wsl2(name, _read(osrelease_path) if name == "Linux" else None)

    nv = _inspect_nvml(nvml if nvml is not None else pynvml)
    torch = import_torch() if torch_module is AUTO else torch_module
    tc = inspect_torch(torch)

    gpus: tuple[GpuCapability, ...] = tuple(nv.gpus)
    source: Literal["nvml", "torch", "none"] = "nvml" if gpus else "none"
    note = nv.note
    if not gpus and tc.gpus:  # NVML unreadable but torch runs CUDA: trust torch's list
        gpus, source = tuple(tc.gpus), "torch"
        note = None
    elif not gpus and note is None:
        note = "No NVIDIA GPU found."

    cpuinfo = _read(cpuinfo_path) if name == "Linux" else None
    return Capabilities(
        os_name=name,
        os_release=release,
        os_description=description,
        wsl2=wsl2,
        driver_version=nv.driver,
        cuda_driver_version=nv.cuda,
        gpus=gpus,
        gpu_note=note,
        gpu_source=source,
        torch_version=tc.version,
        torch_cuda_version=tc.cuda_version,
        torch_cuda_available=tc.cuda_available,
        torch_bf16_supported=tc.bf16,
        torch_note=tc.note,
        mps_available=tc.mps,
        cpu_model=_cpu_model(cpuinfo),
        cpu_cores=_cores(logical=False),
        cpu_threads=_cores(logical=True) or os.cpu_count(),
        ram_total_bytes=_ram(),
    )


class CapabilityCache:
    """Inspect once, on the first :meth:`get`; :meth:`refresh` inspects again (after a
    driver update, a GPU plugged in). Thread-safe: concurrent callers share one run."""

    def __init__(self, inspect: Callable[[], Capabilities] = inspect_capabilities) -> None:
        self._inspect = inspect
        self._lock = threading.Lock()
        self._value: Capabilities | None = None

    def get(self) -> Capabilities:
        with self._lock:
            if self._value is None:
                self._value = self._inspect()
            return self._value

    def refresh(self) -> Capabilities:
        with self._lock:
            self._value = self._inspect()
            return self._value

    @property
    def cached(self) -> Capabilities | None:
        """The last inspection without inspecting (None: never inspected)."""
        return self._value
