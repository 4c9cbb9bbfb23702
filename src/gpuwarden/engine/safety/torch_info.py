"""What torch, when it is installed, says about the machine: its version and CUDA
runtime, whether CUDA runs, bfloat16 without emulation, Apple MPS. Imported lazily, so
gpuwarden never needs torch; every failure is an answer of "not known"."""

from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gpuwarden.engine.safety.capabilities import GpuCapability

log = logging.getLogger(__name__)


def import_torch() -> Any | None:
    """torch, or None when it is not installed or does not import (a broken install)."""
    try:
        return importlib.import_module("torch")
    except ImportError:
        return None
    except OSError as exc:  # a CUDA library torch links against is missing or broken
        log.warning("torch is installed but does not import: %s", exc)
        return None


def _torch_call(fn: Callable[[], Any]) -> Any:
    """A torch answer, or None when torch raises (no driver, a broken CUDA init)."""
    try:
        return fn()
    except Exception:
        log.debug("torch query failed", exc_info=True)
        return None


def _torch_bf16(torch: Any) -> bool | None:
    """torch.cuda.is_bf16_supported() without emulation: with it (the default since torch
    2.3) a pre-Ampere GPU says True because bfloat16 can be emulated, slowly."""
    def ask() -> bool:
        fn = torch.cuda.is_bf16_supported
        try:
            return bool(fn(including_emulation=False))
        except TypeError:  # torch < 2.3: no emulation, no argument
            return bool(fn())

    answer = _torch_call(ask)
    return None if answer is None else bool(answer)


@dataclass
class TorchAnswers:
    version: str | None = None
    cuda_version: str | None = None
    cuda_available: bool | None = None
    bf16: bool | None = None
    mps: bool | None = None
    note: str | None = None
    gpus: list[GpuCapability] = field(default_factory=list)


def inspect_torch(torch: Any | None) -> TorchAnswers:
    from gpuwarden.engine.safety.capabilities import GpuCapability  # it imports this module

    out = TorchAnswers()
    if torch is None:
        out.note = ("torch is not installed (optional: when it is, its own answers on the "
                    "GPU and bfloat16 are used).")
        return out
    out.version = str(getattr(torch, "__version__", "unknown"))
    cuda = _torch_call(lambda: torch.version.cuda)
    out.cuda_version = None if cuda is None else str(cuda)
    available = _torch_call(torch.cuda.is_available)
    out.cuda_available = None if available is None else bool(available)
    if out.cuda_available:
        out.bf16 = _torch_bf16(torch)
        count = _torch_call(torch.cuda.device_count) or 0
        for i in range(int(count)):
            props = _torch_call(functools.partial(torch.cuda.get_device_properties, i))
            if props is None:
                out.gpus.append(GpuCapability(index=i, name=None))
                continue
            major, minor = getattr(props, "major", None), getattr(props, "minor", None)
            total = getattr(props, "total_memory", None)
            out.gpus.append(GpuCapability(
                index=i,
                name=getattr(props, "name", None),
                compute_capability=None if major is None or minor is None
                else (int(major), int(minor)),
                total_vram_bytes=None if total is None else int(total),
            ))
    elif out.cuda_available is False:
        out.note = (f"torch {out.version} cannot use CUDA: it is a CPU-only build."
                    if out.cuda_version is None else
                    f"torch {out.version} (CUDA {out.cuda_version}) finds no usable CUDA GPU.")
    mps = _torch_call(lambda: torch.backends.mps.is_available())
    out.mps = None if mps is None else bool(mps)
    return out
