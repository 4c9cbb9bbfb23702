"""Which floating-point type a PyTorch model may safely load in, on this machine.

The policy, first match wins (float32 is always honoured: it is never the unsafe choice):

* no usable accelerator (CPU only)          -> float32
* Apple MPS                                 -> float16 for bfloat16
* native Windows with a CUDA GPU            -> float16 for bfloat16
* Linux or WSL2, bfloat16-capable GPU       -> the requested dtype
* an older GPU, or support unknown          -> float16 for bfloat16

Every downgrade carries one sentence saying why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from gpuwarden.engine.safety.capabilities import BF16_MIN_COMPUTE_CAPABILITY, Capabilities

__all__ = ["DTYPES", "DtypeChoice", "DtypeName", "normalise_dtype", "select_safe_dtype"]

DtypeName = Literal["float32", "float16", "bfloat16"]
DTYPES: tuple[DtypeName, ...] = ("bfloat16", "float16", "float32")

_ALIASES: dict[str, DtypeName] = {
    "float32": "float32", "fp32": "float32", "f32": "float32", "float": "float32",
    "torch.float32": "float32",
    "float16": "float16", "fp16": "float16", "f16": "float16", "half": "float16",
    "torch.float16": "float16",
    "bfloat16": "bfloat16", "bf16": "bfloat16", "torch.bfloat16": "bfloat16",
}
_CC = f"{BF16_MIN_COMPUTE_CAPABILITY[0]}.{BF16_MIN_COMPUTE_CAPABILITY[1]}"


@dataclass(frozen=True, slots=True)
class DtypeChoice:
    """The dtype to use and the sentence that says why (also when nothing changed)."""

    dtype: DtypeName
    reason: str
    requested: DtypeName

    @property
    def changed(self) -> bool:
        return self.dtype != self.requested

    def to_dict(self) -> dict[str, object]:
        return {"requested": self.requested, "dtype": self.dtype, "reason": self.reason,
                "changed": self.changed}


def normalise_dtype(requested: str) -> DtypeName:
    """"bf16", "torch.bfloat16", "BFloat16" -> "bfloat16"; ValueError for anything else."""
    key = requested.strip().lower()
    if key not in _ALIASES:
        raise ValueError(f"unknown dtype {requested!r}: expected one of "
                         f"{', '.join(DTYPES)} (or bf16, fp16, fp32)")
    return _ALIASES[key]


def select_safe_dtype(requested: str, caps: Capabilities) -> DtypeChoice:
    """The dtype ``requested`` becomes on the machine ``caps`` describes, and why."""
    want = normalise_dtype(requested)

    def choice(dtype: DtypeName, reason: str) -> DtypeChoice:
        return DtypeChoice(dtype, reason, want)

    if want == "float32":
        return choice("float32", "float32 as requested: it runs everywhere.")

    mps = bool(caps.mps_available) and not caps.cuda_usable
    if not caps.cuda_usable and not mps:
        return choice("float32", f"{want} became float32: {_why_cpu_only(caps)}, and on "
                                 "the CPU half precision is slow or unsupported.")
    if mps:
        if want == "bfloat16":
            return choice("float16", "bfloat16 became float16: on Apple MPS bfloat16 is "
                                     "missing before macOS 14 and slow where present.")
        return choice("float16", "float16 as requested: Apple MPS supports it.")
    if want == "float16":
        return choice("float16", "float16 as requested: every CUDA GPU supports it.")

    # bfloat16 on a CUDA GPU
    if caps.platform_kind == "windows":
        return choice("float16", "bfloat16 became float16: on native Windows bfloat16 "
                                 "kernels are incomplete in many builds (no Triton or "
                                 "FlashAttention); float16 is the safe choice there.")
    supported = caps.bf16_supported
    if supported is True:
        where = "WSL2" if caps.platform_kind == "wsl2" else caps.os_name
        return choice("bfloat16", f"bfloat16 as requested: the GPU supports it natively "
                                  f"({_bf16_evidence(caps)}) on {where}.")
    if supported is False:
        return choice("float16", f"bfloat16 became float16: {_older_gpu(caps)}; bfloat16 "
                                 f"needs compute capability {_CC} (Ampere) or newer, and "
                                 "older GPUs only emulate it, slowly.")
    return choice("float16", "bfloat16 became float16: whether the GPU supports bfloat16 "
                             "could not be read (compute capability n/a), so the type every "
                             "CUDA GPU supports is used.")


def _why_cpu_only(caps: Capabilities) -> str:
    if caps.torch_installed and caps.torch_cuda_available is False and caps.gpus:
        if caps.torch_cuda_version is None:
            return (f"torch {caps.torch_version} is a CPU-only build, so it cannot use the "
                    "NVIDIA GPU")
        return f"torch {caps.torch_version} cannot use the NVIDIA GPU (CUDA unavailable)"
    if caps.torch_installed and caps.torch_cuda_available is False:
        return "there is no GPU torch can use"
    return "there is no GPU"


def _bf16_evidence(caps: Capabilities) -> str:
    if caps.torch_bf16_supported is not None:
        return "torch.cuda.is_bf16_supported() says so"
    ccs = sorted({g.compute_capability for g in caps.gpus if g.compute_capability})
    listed = ", ".join(f"{cc[0]}.{cc[1]}" for cc in ccs)
    return f"compute capability {listed}"


def _older_gpu(caps: Capabilities) -> str:
    if caps.torch_bf16_supported is False:
        return "torch.cuda.is_bf16_supported() says the GPU lacks native bfloat16"
    old = [g for g in caps.gpus if g.bf16 is False]
    if not old:  # pragma: no cover - bf16_supported False implies one of the above
        return "the GPU lacks native bfloat16"
    g = old[0]
    cc = g.compute_capability or (0, 0)
    more = f" (and {len(old) - 1} more)" if len(old) > 1 else ""
    return f"{g.label} has compute capability {cc[0]}.{cc[1]}{more}"
