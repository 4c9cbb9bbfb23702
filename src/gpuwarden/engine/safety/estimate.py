"""Will this model file fit, before it is loaded: the pre-flight for one GGUF file.

The one place behind ``gpuwarden estimate`` and the window's Add model dialog. The file
is read first (a broken file is refused before anything else), priced by llama.cpp's
own projection when its fit tool is there and answers, else from the GGUF metadata, and
the plan is checked against the free VRAM given (see :mod:`.preflight`). Pure of any
front end: the caller says where the fit tool is and how much VRAM is free.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from gpuwarden.engine.clock import SystemClock
from gpuwarden.engine.paths import data_dir
from gpuwarden.engine.safety import fit_params
from gpuwarden.engine.safety.gguf_plan import (
    MAX_CONTEXT,
    GgufFacts,
    cache_type_bytes,
    plan_from_facts,
    read_gguf,
)
from gpuwarden.engine.safety.memory import MemoryPlan
from gpuwarden.engine.safety.overhead import OverheadBook
from gpuwarden.engine.safety.preflight import (
    DEFAULT_MARGIN_MIB,
    GpuChoice,
    Requested,
    Verdict,
    preflight,
)
from gpuwarden.engine.telemetry.snapshot import Snapshot, fmt_mib

SourceChoice = Literal["auto", "llama.cpp", "metadata"]
SOURCE_CHOICES: tuple[str, ...] = get_args(SourceChoice)
FitToolLocator = Callable[[], Path | None]  # where llama.cpp's fit tool is (None: not built)
OVERHEAD_FILE = "gpu-overhead.json"


class FitToolUnavailable(ValueError):
    """``source="llama.cpp"`` and llama.cpp's fit tool is missing or gave no answer."""


@dataclass(frozen=True)
class Estimate:
    verdict: Verdict
    notes: tuple[str, ...]


def _cache_args(cache_type_k: str, cache_type_v: str) -> list[str]:
    args: list[str] = []
    if cache_type_k.strip().lower() != "f16":
        args += ["--cache-type-k", cache_type_k]
    if cache_type_v.strip().lower() != "f16":
        args += ["--cache-type-v", cache_type_v]
    return args


def llama_cpp_plan(facts: GgufFacts, context_size: int, tool: Path, *, parallel: int = 1,
                   cache_type_k: str = "f16", cache_type_v: str = "f16") -> MemoryPlan | None:
    """llama.cpp's projection of a full offload of this (already read) model, as a plan
    that prices any ``-ngl``; None when the fit tool gives no answer."""
    projection = fit_params.project(
        tool, facts.path, context_size=context_size, gpu_layers=facts.layers,
        parallel=parallel, extra_args=_cache_args(cache_type_k, cache_type_v))
    if projection is None:
        return None
    total = facts.tensor_bytes
    shares = [b / total for b in facts.layer_bytes] if total > 0 else None
    return fit_params.to_plan(projection, facts.layers, layer_weights_share=shares)


def make_plan(path: Path, context_size: int, *, parallel: int = 1,
              cache_type_k: str = "f16", cache_type_v: str = "f16",
              facts: GgufFacts | None = None, source: SourceChoice = "auto",
              fit_tool: FitToolLocator | None = None) -> MemoryPlan:
    """The best plan available for this model file (``facts``: the file's metadata when
    already read, to read it once): llama.cpp's own projection where ``fit_tool`` finds
    its tool and it answers (``source`` "auto" or "llama.cpp"), else the metadata plan
    (``source`` "auto" or "metadata"). The file is always read first, so a broken file is
    refused the same way whichever source prices it. Raises ModelRefused (a ValueError),
    and FitToolUnavailable (a ValueError) for ``source="llama.cpp"`` without an answer."""
    if facts is None:
        facts = read_gguf(path)
    k_bytes, v_bytes = cache_type_bytes(cache_type_k), cache_type_bytes(cache_type_v)
    if source != "metadata":
        tool = fit_tool() if fit_tool is not None else None
        plan = None if tool is None else llama_cpp_plan(
            facts, context_size, tool, parallel=parallel, cache_type_k=cache_type_k,
            cache_type_v=cache_type_v)
        if plan is not None:
            return plan
        if source == "llama.cpp":
            raise FitToolUnavailable(
                "no projection from llama.cpp: its fit tool (llama-fit-params, built "
                "beside llama-server by `gpuwarden setup llama-server`) is missing or "
                "failed; try --source metadata")
    if not 1 <= context_size <= MAX_CONTEXT:
        raise ValueError(f"context size must be between 1 and {MAX_CONTEXT}, got {context_size}")
    if not 1 <= parallel <= 256:
        raise ValueError(f"parallel slots must be between 1 and 256, got {parallel}")
    return plan_from_facts(facts, context_size, parallel=parallel,
                           k_bytes=k_bytes, v_bytes=v_bytes)


def free_vram_of(snapshot: Snapshot | None) -> dict[int, float | None]:
    """Free MiB per available GPU in ``snapshot`` (None where a GPU gives no figure)."""
    if snapshot is None:
        return {}
    return {g.index: g.memory_free_mib for g in snapshot.gpus if g.available}


def learned_overhead_mib(gpu: GpuChoice) -> float:
    """The per-process CUDA overhead the engine learned on that GPU (GPU 0 for "auto"),
    else the default."""
    book = OverheadBook(data_dir() / OVERHEAD_FILE, SystemClock())
    book.load()
    return book.get(gpu if isinstance(gpu, int) else 0)[0]


def estimate_file(path: Path, context_size: int, free_mib_by_gpu: Mapping[int, float | None],
                  *, gpu: GpuChoice = "auto", requested: Requested = "auto",
                  overhead_mib: float | None = None, margin_mib: float = DEFAULT_MARGIN_MIB,
                  source: SourceChoice = "auto", fit_tool: FitToolLocator | None = None,
                  facts: GgufFacts | None = None) -> Estimate:
    """The pre-flight's verdict for loading the model in ``path`` with ``context_size``
    on ``gpu`` (``requested``: the placement), with notes for a person. ``overhead_mib``
    None: what the engine learned on that GPU. Raises ModelRefused for a file that is no
    usable GGUF, FitToolUnavailable, and ValueError for an impossible context."""
    if facts is None:
        facts = read_gguf(path)  # refuses a broken file before anything else
    plan = make_plan(path, context_size, facts=facts, source=source, fit_tool=fit_tool)
    notes: list[str] = []
    if context_size > facts.training_context:
        notes.append(f"note: a context of {context_size} is more than the model's training context "
                     f"({facts.training_context}); llama-server still allocates it all")
    if not free_mib_by_gpu:
        notes.append("note: no GPU found: the model would run entirely on the CPU")
    overhead = learned_overhead_mib(gpu) if overhead_mib is None else overhead_mib
    verdict = preflight(plan, free_mib_by_gpu, requested=requested, gpu=gpu,
                        overhead_mib=overhead, margin_mib=margin_mib)
    return Estimate(verdict, tuple(notes))


def headline(verdict: Verdict) -> str:
    """The verdict in one short line for a person: "Fits on GPU 0 (5.2 GiB of 22.1 GiB
    free)", "Fits 18 of 32 layers on GPU 0; the rest runs on the CPU", "Does not fit on
    GPU 0: ...", or the refusal itself."""
    v = verdict
    if v.kind == "refused" or v.gpu is None or (v.kind != "does-not-fit" and v.gpu_layers == 0):
        return v.message.rstrip(".")
    if v.kind == "fits-partially":
        return (f"Fits {v.gpu_layers} of {v.total_layers} layers on GPU {v.gpu}; "
                "the rest runs on the CPU")
    if v.free_mib is None:
        known = "its free VRAM is unknown" if v.kind == "fits" else "there is no such GPU"
        return f"{'Fits' if v.kind == 'fits' else 'Does not fit'} on GPU {v.gpu} ({known})"
    if v.kind == "fits":
        return f"Fits on GPU {v.gpu} ({fmt_mib(v.needed_mib)} of {fmt_mib(v.free_mib)} free)"
    return (f"Does not fit on GPU {v.gpu}: needs {fmt_mib(v.needed_mib + v.margin_mib)} "
            f"with the margin, {fmt_mib(v.free_mib)} free")
