"""Before a load: does the model's :class:`MemoryPlan` fit the free VRAM, and how many
layers can go to the GPU. Pure functions of the plan and the free memory per GPU.

A placement fits when the GPU's buffers for it, plus the per-process CUDA overhead (the
CUDA context and libraries every process pays), plus the safety margin, are within the
free memory. Host RAM is not checked here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from gpuwarden.engine.safety.memory import MemoryPlan, PlanSource

VerdictKind = Literal["fits", "fits-partially", "does-not-fit", "refused"]
Requested = Literal["gpu", "cpu", "auto"] | int
GpuChoice = Literal["auto"] | int

DEFAULT_MARGIN_MIB = 512.0


@dataclass(frozen=True, slots=True)
class Verdict:
    """The pre-flight's answer. ``gpu``: the GPU chosen (None: none, or the CPU);
    ``gpu_layers``: how many of ``total_layers`` go to it; ``needed_mib``: GPU memory the
    requested placement needs, CUDA overhead included (the margin is not); ``free_mib``:
    the free VRAM of that GPU (None: unknown, or no GPU); ``message``: one sentence with
    the numbers; ``lines``: "label: value" lines for display."""

    kind: VerdictKind
    gpu: int | None
    gpu_layers: int
    total_layers: int
    needed_mib: float
    free_mib: float | None
    margin_mib: float
    overhead_mib: float
    source: PlanSource
    message: str
    lines: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """The load may go ahead (whole or in part)."""
        return self.kind in ("fits", "fits-partially")

    def to_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind, "gpu": self.gpu, "gpu_layers": self.gpu_layers,
            "total_layers": self.total_layers, "needed_mib": round(self.needed_mib, 1),
            "free_mib": None if self.free_mib is None else round(self.free_mib, 1),
            "margin_mib": self.margin_mib, "overhead_mib": self.overhead_mib,
            "source": self.source, "message": self.message, "lines": list(self.lines),
        }


def refused(path: Path | str, reason: str, *, source: PlanSource = "metadata") -> Verdict:
    """The verdict for a model that cannot be priced (not a model, corrupt, absurd)."""
    reason = reason.strip().rstrip(".")
    name = str(path)
    message = reason if reason.startswith(name) else f"{name}: {reason}"
    return Verdict(
        kind="refused", gpu=None, gpu_layers=0, total_layers=0, needed_mib=0.0,
        free_mib=None, margin_mib=0.0, overhead_mib=0.0, source=source,
        message=f"Refused {message}.", lines=(),
    )


def plan_from_config_vram(vram_mib: float, layers: int, context_size: int) -> MemoryPlan:
    """The user's configured ``vram_mib`` as a plan: split evenly over the layers, nothing
    else (the figure is taken to include the KV cache and compute buffers)."""
    if layers < 1:
        raise ValueError(f"a model has at least one layer, got {layers}")
    if not vram_mib >= 0:  # also refuses NaN
        raise ValueError(f"vram_mib must be zero or more, got {vram_mib}")
    return MemoryPlan(
        source="config",
        layer_weights_mib=(vram_mib / layers,) * layers,
        output_mib=0.0,
        host_only_mib=0.0,
        kv_per_layer_mib=0.0,
        compute_gpu_mib=0.0,
        compute_host_mib=0.0,
        context_size=context_size,
        output_first=False,  # the figure is spread over the layers alone
    )


@dataclass(frozen=True, slots=True)
class _Fit:
    gpu: int
    free: float | None
    layers: int  # the most layers that fit (the target when free is unknown)


def preflight(
    plan: MemoryPlan,
    free_mib_by_gpu: Mapping[int, float | None],
    *,
    requested: Requested,
    gpu: GpuChoice,
    overhead_mib: float,
    margin_mib: float = DEFAULT_MARGIN_MIB,
) -> Verdict:
    """Price ``requested`` ("gpu": every layer or nothing, "auto": as many as fit, an
    integer: up to that many layers, "cpu": none) on ``gpu`` (an index, or "auto": the GPU
    where every layer fits, else the one that takes the most layers)."""
    total = plan.layers
    target = _target(requested, total)
    base = _Base(plan, overhead_mib, margin_mib)
    if target == 0:
        return base.verdict("fits", None, 0, 0, None, "runs on the CPU: no GPU memory "
                            "needed (host RAM is not checked)")
    if not free_mib_by_gpu:
        kind: VerdictKind = "does-not-fit" if requested == "gpu" else (
            "fits" if requested == "auto" else "fits-partially")
        return base.verdict(kind, None, 0, target, None,
                            "no GPU found: every layer would run on the CPU")
    if gpu != "auto" and gpu not in free_mib_by_gpu:
        known = ", ".join(str(i) for i in sorted(free_mib_by_gpu))
        return base.verdict("does-not-fit", gpu, 0, target, None,
                            f"there is no GPU {gpu} (GPUs: {known})")
    candidates = sorted(free_mib_by_gpu) if gpu == "auto" else [gpu]
    fits = [_fit(plan, i, free_mib_by_gpu[i], target, overhead_mib + margin_mib)
            for i in candidates]
    best = max(fits, key=lambda f: _rank(f, target))
    chosen = f"GPU {best.gpu} (chosen of {len(fits)})" if len(fits) > 1 else f"GPU {best.gpu}"
    if best.free is None:
        return base.verdict("fits", best.gpu, target, target, None,
                            f"{chosen} reports no free VRAM figure: assuming the model fits")
    if best.layers >= target:
        return base.verdict("fits", best.gpu, target, target, best.free,
                            f"fits on {chosen}")
    if best.layers == 0:
        return base.verdict("does-not-fit", best.gpu, 0, target, best.free,
                            f"not even one layer fits on {chosen}")
    if requested == "gpu":
        return base.verdict("does-not-fit", best.gpu, 0, target, best.free,
                            f"only {best.layers} of {target} layers would fit on {chosen}")
    return base.verdict("fits-partially", best.gpu, best.layers, target, best.free,
                        f"{best.layers} of {target} layers fit on {chosen}, the rest run "
                        "on the CPU")


def _target(requested: Requested, total: int) -> int:
    if requested == "cpu":
        return 0
    if requested in ("gpu", "auto"):
        return total
    if isinstance(requested, int):
        return max(0, min(requested, total))
    raise ValueError(f"unknown placement {requested!r}")


def _fit(plan: MemoryPlan, index: int, free: float | None, target: int,
         reserve: float) -> _Fit:
    """The most layers (up to ``target``) whose GPU buffers fit ``free`` less ``reserve``
    (``gpu_mib`` grows with the layers: a binary search)."""
    if free is None:
        return _Fit(index, None, target)
    room = free - reserve
    low, high = 0, target
    while low < high:
        mid = (low + high + 1) // 2
        if plan.gpu_mib(mid) <= room:
            low = mid
        else:
            high = mid - 1
    return _Fit(index, free, low)


def _rank(fit: _Fit, target: int) -> tuple[int, int, float, int]:
    """Every layer on a GPU with a known figure first, then an unknown figure (assumed to
    fit), then the most layers; ties go to the most free memory, then the lowest index."""
    full = fit.layers >= target
    known = fit.free is not None
    tier = 2 if full and known else 1 if not known else 0
    return tier, fit.layers, fit.free if fit.free is not None else 0.0, -fit.gpu


class _Base:
    """Builds the verdict's message and lines for a placement."""

    def __init__(self, plan: MemoryPlan, overhead: float, margin: float) -> None:
        self.plan, self.overhead, self.margin = plan, overhead, margin

    def verdict(self, kind: VerdictKind, gpu: int | None, layers: int, target: int,
                free: float | None, what: str) -> Verdict:
        # the figures shown: the layers placed, or those asked for when none could be
        shown = layers if layers > 0 else target
        on_gpu = shown > 0 and gpu is not None
        needed = self.plan.gpu_mib(shown) + self.overhead if on_gpu else 0.0
        lines = self._lines(shown if on_gpu else 0, gpu, free, needed)
        return Verdict(
            kind=kind, gpu=gpu, gpu_layers=layers, total_layers=self.plan.layers,
            needed_mib=needed, free_mib=free, margin_mib=self.margin,
            overhead_mib=self.overhead, source=self.plan.source,
            message=self._message(kind, what, layers, needed, free), lines=lines,
        )

    def _message(self, kind: VerdictKind, what: str, layers: int, needed: float,
                 free: float | None) -> str:
        text = what[0].upper() + what[1:]
        if needed <= 0:
            return f"{text}."
        head = f"{layers} layers need" if kind == "fits-partially" else "needs"
        need = f"{head} {_mib(needed)} (CUDA overhead included) + {_mib(self.margin)} margin"
        if free is None:
            return f"{text}: {need}; the free VRAM is unknown."
        spare = free - needed - self.margin
        tail = f"{_mib(spare)} to spare" if spare >= 0 else f"{_mib(-spare)} short"
        return f"{text}: {need}, {_mib(free)} free: {tail}."

    def _lines(self, n: int, gpu: int | None, free: float | None,
               needed: float) -> tuple[str, ...]:
        plan = self.plan
        total = plan.layers
        repeating, with_output = plan.split(n)
        weights = sum(plan.layer_weights_mib[total - repeating:]) if repeating else 0.0
        if with_output:
            weights += plan.output_mib
        where = f"{repeating} of {total} layers" + (" + output" if with_output else "")
        free_text = ("unknown" if free is None else _mib(free)) if gpu is not None else "no GPU"
        on = f" on GPU {gpu}" if gpu is not None else ""
        return (
            f"weights: {_mib(weights)} ({where}; {_mib(plan.host_only_mib)} stay on the host)",
            f"KV cache: {_mib(repeating * plan.kv_per_layer_mib)} "
            f"({plan.context_size} cells x {repeating} layers)",
            f"compute: {_mib(plan.compute_gpu_mib if n else 0.0)}",
            f"CUDA overhead: {_mib(self.overhead if n else 0.0)}",
            f"needed: {_mib(needed)}",
            f"free: {free_text}{on}",
            f"margin: {_mib(self.margin)}",
        )


def _mib(value: float) -> str:
    return f"{value:,.0f} MiB" if abs(value) >= 10 else f"{value:,.1f} MiB"
