"""Capabilities (engine/safety/capabilities.py) and the dtype policy (engine/safety/dtype.py).

NVML is faked at its function boundary (tests/fake_nvml.py, extended here with the system
and compute-capability calls); torch is faked, absent, or the real CPU build.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock

import pynvml
import pytest

from fake_nvml import GIB, FakeGpu, FakeNvml, nvml_error
from gpuwarden.engine.safety.capabilities import (
    AUTO,
    Capabilities,
    CapabilityCache,
    GpuCapability,
    inspect_capabilities,
)
from gpuwarden.engine.safety.dtype import DtypeChoice, normalise_dtype, select_safe_dtype

# -- a fake NVML that also answers the capability calls ---------------------------------------


@dataclass
class CapGpu(FakeGpu):
    compute_capability: tuple[int, int] = (8, 6)


class CapNvml(FakeNvml):
    """FakeNvml plus the system calls and nvmlDeviceGetCudaComputeCapability, autospec'd
    from the real pynvml like the rest. ``system_unsupported``: system calls that raise
    NOT_SUPPORTED; ``missing``: functions this "old pynvml" lacks."""

    EXTRA = (
        "nvmlSystemGetDriverVersion",
        "nvmlSystemGetCudaDriverVersion",
        "nvmlSystemGetCudaDriverVersion_v2",
        "nvmlDeviceGetCudaComputeCapability",
    )

    def __init__(self, gpus: Any = (), *, driver: str | bytes = "550.54.15",
                 cuda: int = 12040, system_unsupported: tuple[str, ...] = (),
                 missing: tuple[str, ...] = (), **kwargs: Any) -> None:
        super().__init__(gpus, **kwargs)
        self.driver = driver
        self.cuda = cuda
        self.system_unsupported = set(system_unsupported)
        for name in self.EXTRA:
            if name in missing:
                continue
            impl = getattr(self, "_" + name)
            setattr(self, name, mock.create_autospec(getattr(pynvml, name), side_effect=impl))

    def _system(self, fn: str) -> None:
        self._check()
        if fn in self.system_unsupported:
            raise nvml_error(pynvml.NVML_ERROR_NOT_SUPPORTED)

    def _nvmlSystemGetDriverVersion(self) -> str | bytes:
        self._system("nvmlSystemGetDriverVersion")
        return self.driver

    def _nvmlSystemGetCudaDriverVersion(self) -> int:
        self._system("nvmlSystemGetCudaDriverVersion")
        return self.cuda

    def _nvmlSystemGetCudaDriverVersion_v2(self) -> int:
        self._system("nvmlSystemGetCudaDriverVersion_v2")
        return self.cuda

    def _nvmlDeviceGetCudaComputeCapability(self, handle: CapGpu) -> tuple[int, int]:
        return self._device("nvmlDeviceGetCudaComputeCapability", handle).compute_capability


def two_gpus() -> list[CapGpu]:
    return [
        CapGpu(name="NVIDIA GeForce RTX 3090", uuid="GPU-aaaa", memory_total=24 * GIB,
               compute_capability=(8, 6)),
        CapGpu(name=b"Tesla T4", uuid="GPU-bbbb", memory_total=16 * GIB,
               compute_capability=(7, 5)),
    ]


def inspect(nvml: Any, torch_module: Any = None, **kw: Any) -> Capabilities:
    kw.setdefault("os_name", "Linux")
    kw.setdefault("os_release", "6.8.0")
    kw.setdefault("osrelease_path", Path("/nonexistent/osrelease"))
    return inspect_capabilities(nvml, torch_module, **kw)


# -- fake torch ------------------------------------------------------------------------------


def fake_torch(*, cuda: bool = True, cuda_version: str | None = "12.4", bf16: bool = True,
               old_signature: bool = False, mps: bool = False,
               devices: tuple[tuple[str, int, int, int], ...] = ()) -> Any:
    """A module-shaped torch: only the attributes capabilities.py reads."""
    def is_bf16_supported(including_emulation: bool = True) -> bool:
        return True if including_emulation else bf16  # emulation says yes on any GPU

    def old_is_bf16_supported() -> bool:
        return bf16

    def props(i: int) -> Any:
        name, major, minor, total = devices[i]
        return SimpleNamespace(name=name, major=major, minor=minor, total_memory=total)

    return SimpleNamespace(
        __version__="2.5.1",
        version=SimpleNamespace(cuda=cuda_version),
        cuda=SimpleNamespace(
            is_available=lambda: cuda,
            is_bf16_supported=old_is_bf16_supported if old_signature else is_bf16_supported,
            device_count=lambda: len(devices),
            get_device_properties=props,
        ),
        backends=SimpleNamespace(mps=SimpleNamespace(is_available=lambda: mps)),
    )


# -- NVML ------------------------------------------------------------------------------------


def test_two_gpus_cc_86_and_75() -> None:
    nv = CapNvml(two_gpus())
    caps = inspect(nv)
    assert caps.driver_version == "550.54.15"
    assert caps.cuda_driver_version == "12.4"
    assert caps.gpu_source == "nvml" and caps.gpu_note is None
    a, b = caps.gpus
    assert (a.index, a.name, a.uuid) == (0, "NVIDIA GeForce RTX 3090", "GPU-aaaa")
    assert a.compute_capability == (8, 6) and a.bf16 is True
    assert a.total_vram_bytes == 24 * GIB
    assert (b.name, b.compute_capability, b.bf16) == ("Tesla T4", (7, 5), False)
    assert caps.cuda_usable is True
    assert caps.bf16_supported is False  # one older GPU: a model may land on it
    assert caps.bf16_source == "compute capability"
    # NVML is opened once and closed again
    assert nv.nvmlInit.call_count == 1 and nv.nvmlShutdown.call_count == 1
    assert not nv.initialised
    assert nv.nvmlSystemGetCudaDriverVersion_v2.call_count == 1
    assert nv.nvmlSystemGetCudaDriverVersion.call_count == 0


def test_to_dict_is_json_and_says_na_as_null() -> None:
    gpus = two_gpus()
    gpus[1].unsupported = {"nvmlDeviceGetCudaComputeCapability"}
    d = inspect(CapNvml(gpus)).to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["gpus"][0]["compute_capability"] == "8.6" and d["gpus"][0]["bf16"] is True
    assert d["gpus"][1]["compute_capability"] is None and d["gpus"][1]["bf16"] is None
    assert d["platform"] == "linux" and d["bf16_supported"] is None


def test_not_supported_fields_are_none() -> None:
    gpu = CapGpu(unsupported={"nvmlDeviceGetCudaComputeCapability", "nvmlDeviceGetMemoryInfo",
                              "nvmlDeviceGetName", "nvmlDeviceGetUUID"})
    nv = CapNvml([gpu], system_unsupported=("nvmlSystemGetDriverVersion",
                                            "nvmlSystemGetCudaDriverVersion_v2",
                                            "nvmlSystemGetCudaDriverVersion"))
    caps = inspect(nv)
    assert caps.driver_version is None and caps.cuda_driver_version is None
    (g,) = caps.gpus
    assert g == GpuCapability(index=0, name=None, uuid=None, compute_capability=None,
                              total_vram_bytes=None)
    assert g.bf16 is None and caps.bf16_supported is None
    assert caps.cuda_usable  # a GPU is there, only its details are n/a


def test_old_pynvml_without_v2_falls_back_and_bytes_are_decoded() -> None:
    nv = CapNvml([CapGpu(name=b"Old GPU")], driver=b"470.1", cuda=11040,
                 missing=("nvmlSystemGetCudaDriverVersion_v2",))
    caps = inspect(nv)
    assert caps.driver_version == "470.1" and caps.cuda_driver_version == "11.4"
    assert caps.gpus[0].name == "Old GPU"


def test_pynvml_without_compute_capability_call() -> None:
    caps = inspect(CapNvml([CapGpu()], missing=("nvmlDeviceGetCudaComputeCapability",)))
    assert caps.gpus[0].compute_capability is None


def test_a_lost_gpu_is_listed_with_its_fields_na() -> None:
    gpus = two_gpus()
    gpus[0].lost = True
    caps = inspect(CapNvml(gpus))
    assert caps.gpus[0] == GpuCapability(index=0, name=None)
    assert caps.gpus[1].name == "Tesla T4"


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"library_present": False}, "No NVIDIA driver found"),
    ({"driver_loaded": False}, "installed but not loaded"),
])
def test_no_driver_means_no_gpus_and_a_sentence(kwargs: dict[str, bool], words: str) -> None:
    nv = CapNvml(two_gpus(), **kwargs)
    caps = inspect(nv)
    assert caps.gpus == () and caps.gpu_source == "none"
    assert caps.gpu_note is not None and words in caps.gpu_note
    assert caps.gpu_note.endswith(".")
    assert caps.driver_version is None and caps.cuda_driver_version is None
    assert caps.cuda_usable is False and caps.bf16_supported is None
    assert nv.nvmlShutdown.call_count == 0  # never opened


def test_other_init_error_and_count_error_are_sentences() -> None:
    nv = CapNvml(two_gpus())
    nv.nvmlInit.side_effect = nvml_error(pynvml.NVML_ERROR_NO_PERMISSION)
    caps = inspect(nv)
    assert caps.gpus == () and caps.gpu_note is not None
    assert caps.gpu_note.startswith("NVML could not start")

    nv = CapNvml(two_gpus())
    nv.nvmlDeviceGetCount.side_effect = nvml_error(pynvml.NVML_ERROR_UNKNOWN)
    caps = inspect(nv)
    assert caps.gpus == () and caps.gpu_note is not None and "list" in caps.gpu_note
    assert caps.driver_version == "550.54.15"
    assert nv.nvmlShutdown.call_count == 1


def test_driver_with_no_gpu() -> None:
    caps = inspect(CapNvml([]))
    assert caps.gpus == () and caps.gpu_note == "The NVIDIA driver is running but reports no GPU."


def test_real_pynvml_never_raises() -> None:
    caps = inspect_capabilities(torch_module=None)  # whatever this machine has
    assert caps.gpus or caps.gpu_note
    assert json.dumps(caps.to_dict())


# -- OS, CPU ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("release", "wsl2"), [
    ("5.15.153.1-microsoft-standard-WSL2\n", True),
    ("6.8.0-45-generic\n", False),
])
def test_wsl2_from_the_kernel_release(tmp_path: Path, release: str, wsl2: bool) -> None:
    f = tmp_path / "osrelease"
    f.write_text(release)
    caps = inspect(CapNvml([]), osrelease_path=f)
    assert caps.wsl2 is wsl2
    assert caps.platform_kind == ("wsl2" if wsl2 else "linux")


def test_windows_and_macos_kinds(tmp_path: Path) -> None:
    f = tmp_path / "osrelease"
    f.write_text("microsoft")  # only read on Linux
    win = inspect(CapNvml([]), os_name="Windows", os_release="11", osrelease_path=f)
    assert not win.wsl2 and win.platform_kind == "windows"
    assert win.os_description == "Windows 11"
    mac = inspect(CapNvml([]), os_name="Darwin", os_release="23.0")
    assert mac.platform_kind == "macos"


def test_cpu_model_cores_and_ram(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\n"
                       "model name\t: Intel(R) Core(TM) i9-13900K\n\nprocessor\t: 1\n")
    caps = inspect(CapNvml([]), cpuinfo_path=cpuinfo)
    assert caps.cpu_model == "Intel(R) Core(TM) i9-13900K"
    assert caps.cpu_threads is not None and caps.cpu_threads >= 1
    assert caps.ram_total_bytes is not None and caps.ram_total_bytes > 0


def test_cpu_model_without_proc_cpuinfo_falls_back_to_platform(tmp_path: Path) -> None:
    caps = inspect(CapNvml([]), cpuinfo_path=tmp_path / "missing")
    assert caps.cpu_model == (platform.processor() or platform.machine() or None)


# -- torch -----------------------------------------------------------------------------------


def test_without_torch() -> None:
    caps = inspect(CapNvml(two_gpus()), torch_module=None)
    assert not caps.torch_installed
    assert caps.torch_version is None and caps.torch_cuda_available is None
    assert caps.mps_available is None
    assert caps.torch_note is not None and "not installed" in caps.torch_note
    assert caps.cuda_usable  # NVML's GPUs decide


def test_torch_not_importable_is_no_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    caps = inspect(CapNvml([]), torch_module=AUTO)
    assert caps.torch_version is None and caps.torch_note is not None


def test_importing_capabilities_does_not_import_torch() -> None:
    code = ("import sys, gpuwarden.engine.safety.capabilities, gpuwarden.engine.safety.dtype;"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_torch_answers_are_preferred_and_emulation_is_not_support() -> None:
    # NVML says the GPU is pre-Ampere; torch (asked without emulation) agrees
    caps = inspect(CapNvml([CapGpu(compute_capability=(7, 5))]),
                   fake_torch(bf16=False))
    assert caps.torch_bf16_supported is False
    assert caps.bf16_source == "torch.cuda.is_bf16_supported()"
    # torch's answer wins over the compute capability NVML reported
    caps = inspect(CapNvml([CapGpu(compute_capability=(7, 5))]), fake_torch(bf16=True))
    assert caps.bf16_supported is True
    assert (caps.torch_version, caps.torch_cuda_version, caps.torch_cuda_available) == (
        "2.5.1", "12.4", True)


def test_old_torch_without_the_emulation_argument() -> None:
    caps = inspect(CapNvml([CapGpu()]), fake_torch(bf16=True, old_signature=True))
    assert caps.torch_bf16_supported is True


def test_cpu_build_of_torch_cannot_use_the_gpu_nvml_sees() -> None:
    caps = inspect(CapNvml(two_gpus()), fake_torch(cuda=False, cuda_version=None))
    assert len(caps.gpus) == 2
    assert caps.cuda_usable is False
    assert caps.torch_bf16_supported is None
    assert caps.torch_note is not None and "CPU-only build" in caps.torch_note


def test_torch_lists_the_gpus_when_nvml_cannot() -> None:
    torch = fake_torch(devices=(("NVIDIA A10", 8, 6, 24 * GIB),))
    caps = inspect(CapNvml(library_present=False), torch)
    assert caps.gpu_source == "torch" and caps.gpu_note is None
    assert caps.gpus == (GpuCapability(index=0, name="NVIDIA A10", compute_capability=(8, 6),
                                       total_vram_bytes=24 * GIB),)


def test_a_torch_that_raises_is_na() -> None:
    torch = fake_torch()

    def broken() -> bool:
        raise RuntimeError("CUDA driver initialization failed")

    torch.cuda.is_available = broken
    torch.backends.mps.is_available = broken
    caps = inspect(CapNvml([CapGpu()]), torch)
    assert caps.torch_cuda_available is None and caps.mps_available is None
    assert caps.cuda_usable  # unknown to torch: NVML's GPU decides


def test_real_torch_cpu_answers() -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this test is about a machine where torch has no CUDA")
    caps = inspect(CapNvml(two_gpus()), torch_module=AUTO)
    assert caps.torch_version == torch.__version__
    assert caps.torch_cuda_version == torch.version.cuda
    assert caps.torch_cuda_available is False
    assert caps.mps_available == torch.backends.mps.is_available()
    assert caps.cuda_usable is False


# -- cache -----------------------------------------------------------------------------------


def test_cache_inspects_once_and_refreshes_on_demand() -> None:
    nv = CapNvml([CapGpu()])
    cache = CapabilityCache(lambda: inspect(nv))
    assert cache.cached is None
    first = cache.get()
    assert cache.get() is first and nv.nvmlInit.call_count == 1
    nv.gpus.append(CapGpu(name="second"))
    assert len(cache.get().gpus) == 1
    fresh = cache.refresh()
    assert len(fresh.gpus) == 2 and cache.get() is fresh and cache.cached is fresh
    assert nv.nvmlInit.call_count == 2


def test_cache_concurrent_first_get_inspects_once() -> None:
    calls = []
    gate = threading.Event()

    def slow() -> Capabilities:
        calls.append(1)
        gate.wait(1)
        return inspect(CapNvml([]))

    cache = CapabilityCache(slow)
    got: list[Capabilities] = []
    threads = [threading.Thread(target=lambda: got.append(cache.get())) for _ in range(4)]
    for t in threads:
        t.start()
    gate.set()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len({id(c) for c in got}) == 1


# -- dtype policy ----------------------------------------------------------------------------


def machine(kind: str, cc: tuple[int, int] | None = (8, 6), **kw: Any) -> Capabilities:
    """Fake capabilities: "cpu", "linux", "wsl2", "windows", "mps"."""
    os_name = {"windows": "Windows", "mps": "Darwin"}.get(kind, "Linux")
    gpus = () if kind in ("cpu", "mps") else (GpuCapability(0, "GPU", compute_capability=cc),)
    return Capabilities(os_name=os_name, os_release="x", os_description="x",
                        wsl2=kind == "wsl2", gpus=gpus, mps_available=kind == "mps", **kw)


TABLE = [
    # machine,              requested,   chosen,      words in the reason
    ("cpu", None,           "bfloat16",  "float32",   "there is no GPU"),
    ("cpu", None,           "float16",   "float32",   "on the CPU"),
    ("cpu", None,           "float32",   "float32",   "as requested"),
    ("windows", (8, 6),     "bfloat16",  "float16",   "native Windows"),
    ("windows", (8, 6),     "float16",   "float16",   "as requested"),
    ("windows", (8, 6),     "float32",   "float32",   "as requested"),
    ("linux", (8, 6),       "bfloat16",  "bfloat16",  "compute capability 8.6"),
    ("wsl2", (9, 0),        "bfloat16",  "bfloat16",  "on WSL2"),
    ("linux", (7, 5),       "bfloat16",  "float16",   "GPU 0 (GPU) has compute capability 7.5"),
    ("wsl2", (6, 1),        "bfloat16",  "float16",   "needs compute capability 8.0"),
    ("linux", (7, 5),       "float16",   "float16",   "as requested"),
    ("linux", None,         "bfloat16",  "float16",   "could not be read"),
    ("mps", None,           "bfloat16",  "float16",   "Apple MPS"),
    ("mps", None,           "float16",   "float16",   "Apple MPS"),
    ("mps", None,           "float32",   "float32",   "as requested"),
]


@pytest.mark.parametrize(("kind", "cc", "requested", "chosen", "words"), TABLE)
def test_dtype_table(kind: str, cc: tuple[int, int] | None, requested: str, chosen: str,
                     words: str) -> None:
    choice = select_safe_dtype(requested, machine(kind, cc))
    assert choice.dtype == chosen
    assert choice.requested == requested
    assert words in choice.reason
    assert choice.reason.endswith(".")
    assert choice.changed == (chosen != requested)
    if choice.changed:
        assert f"{requested} became {chosen}" in choice.reason


def test_dtype_from_a_full_nvml_inspection() -> None:
    caps = inspect(CapNvml(two_gpus()))  # 8.6 and 7.5: the T4 decides
    choice = select_safe_dtype("bf16", caps)
    assert choice == DtypeChoice("float16", choice.reason, "bfloat16")
    assert "GPU 1 (Tesla T4) has compute capability 7.5" in choice.reason


def test_dtype_prefers_torchs_answer() -> None:
    caps = replace(machine("linux", (7, 5)), torch_version="2.5.1", torch_cuda_version="12.4",
                   torch_cuda_available=True, torch_bf16_supported=True)
    choice = select_safe_dtype("bfloat16", caps)
    assert choice.dtype == "bfloat16" and "torch.cuda.is_bf16_supported()" in choice.reason
    caps = replace(caps, torch_bf16_supported=False)
    choice = select_safe_dtype("bfloat16", caps)
    assert choice.dtype == "float16" and "torch.cuda.is_bf16_supported()" in choice.reason


def test_dtype_cpu_only_torch_with_an_nvidia_gpu_says_why() -> None:
    caps = inspect(CapNvml(two_gpus()), fake_torch(cuda=False, cuda_version=None))
    choice = select_safe_dtype("bfloat16", caps)
    assert choice.dtype == "float32"
    assert "torch 2.5.1 is a CPU-only build, so it cannot use the NVIDIA GPU" in choice.reason


@pytest.mark.parametrize("source", ["fake-no-torch", "real-torch"])
@pytest.mark.parametrize(("requested", "chosen"), [
    ("bfloat16", "float32"), ("float16", "float32"), ("float32", "float32")])
def test_dtype_on_a_machine_without_gpu(source: str, requested: str, chosen: str) -> None:
    """The same answers with no torch and with the real (CPU) torch of this venv."""
    if source == "real-torch":
        torch = pytest.importorskip("torch")
        if torch.cuda.is_available() or torch.backends.mps.is_available():
            pytest.skip("this machine has an accelerator torch can use")
        caps = inspect(CapNvml(library_present=False), torch_module=AUTO)
        assert caps.torch_installed
    else:
        caps = inspect(CapNvml(library_present=False), torch_module=None)
        assert not caps.torch_installed
    choice = select_safe_dtype(requested, caps)
    assert choice.dtype == chosen


@pytest.mark.parametrize(("text", "name"), [
    ("bf16", "bfloat16"), ("BFloat16", "bfloat16"), ("torch.bfloat16", "bfloat16"),
    ("fp16", "float16"), ("half", "float16"), (" float32 ", "float32"), ("fp32", "float32")])
def test_dtype_aliases(text: str, name: str) -> None:
    assert normalise_dtype(text) == name


def test_unknown_dtype_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown dtype 'int8'"):
        select_safe_dtype("int8", machine("linux"))
