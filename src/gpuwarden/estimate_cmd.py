"""`gpuwarden estimate MODEL.gguf`: will this model fit, before it is loaded.

Prices the model from its GGUF metadata (see ``gpuwarden.engine.safety.gguf_plan``),
reads the free VRAM of every GPU, and prints the pre-flight's verdict with its figures.
Exit status: 0 when it fits (whole or in part), 1 when it does not, 2 for bad input (a
missing or broken model file, a bad option): one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from gpuwarden.engine.runtime import (
    SimulateSpec,
    TelemetryOptions,
    parse_simulate,
    take_snapshot,
)
from gpuwarden.engine.safety.gguf_plan import (
    MAX_CONTEXT,
    GgufFacts,
    ModelRefused,
    cache_type_bytes,
    plan_from_facts,
    plan_from_gguf,
    read_gguf,
)
from gpuwarden.engine.safety.memory import MemoryPlan, PlanSource
from gpuwarden.engine.safety.preflight import (
    DEFAULT_MARGIN_MIB,
    GpuChoice,
    Verdict,
    preflight,
    refused,
)
from gpuwarden.engine.telemetry.scenario import ScenarioError

PROG = "gpuwarden estimate"
DEFAULT_CONTEXT = 4096  # a model's context_size when its config sets none
DEFAULT_OVERHEAD_MIB = 400.0  # the CUDA context and libraries of one llama-server
MAX_MIB = float(1 << 30)
EXIT_FITS, EXIT_DOES_NOT_FIT, EXIT_USAGE = 0, 1, 2
SOURCE_NAMES: Mapping[PlanSource, str] = {
    "metadata": "GGUF metadata",
    "llama.cpp": "llama.cpp's own projection",
    "config": "the configured vram_mib",
}


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(message)


def _context(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: '{text[:40]}'") from None
    if not 1 <= value <= MAX_CONTEXT:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_CONTEXT}, got {value}")
    return value


def _gpu(text: str) -> GpuChoice:
    if text == "auto":
        return "auto"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a GPU index or 'auto', not '{text[:40]}'") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"a GPU index is 0 or more, got {value}")
    return value


def _mib(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of MiB: '{text[:40]}'") from None
    if not (math.isfinite(value) and 0 <= value <= MAX_MIB):
        raise argparse.ArgumentTypeError(f"must be between 0 and {MAX_MIB:.0f} MiB")
    return value


def _simulate(text: str) -> SimulateSpec:
    try:
        return parse_simulate(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="Will this model fit in the free VRAM? Prices a GGUF "
                "model from its metadata before it is loaded.")
    p.add_argument("model", type=Path, metavar="MODEL.gguf")
    p.add_argument("--ctx", type=_context, default=DEFAULT_CONTEXT, metavar="N",
                   help=f"context size in tokens (default {DEFAULT_CONTEXT})")
    p.add_argument("--gpu", type=_gpu, default="auto", metavar="I|auto",
                   help="the GPU to place it on (default auto: the one it fits best)")
    p.add_argument("--simulate", nargs="?", const=SimulateSpec(), type=_simulate,
                   metavar="N|SCENARIO", help="simulated GPU(s) instead of NVML")
    p.add_argument("--overhead-mib", type=_mib, default=DEFAULT_OVERHEAD_MIB, metavar="X",
                   help=f"per-process CUDA overhead (default {DEFAULT_OVERHEAD_MIB:.0f})")
    p.add_argument("--margin-mib", type=_mib, default=DEFAULT_MARGIN_MIB, metavar="X",
                   help=f"free VRAM to keep spare (default {DEFAULT_MARGIN_MIB:.0f})")
    p.add_argument("--json", action="store_true", help="print the verdict as JSON")
    return p


def make_plan(path: Path, context_size: int, *, parallel: int = 1,
              cache_type_k: str = "f16", cache_type_v: str = "f16",
              facts: GgufFacts | None = None) -> MemoryPlan:
    """The best plan available for this model file (``facts``: the file's metadata when
    already read, to read it once). Raises ModelRefused (a ValueError)."""
    if facts is None:
        return plan_from_gguf(path, context_size, parallel=parallel,
                              cache_type_k=cache_type_k, cache_type_v=cache_type_v)
    return plan_from_facts(facts, context_size, parallel=parallel,
                           k_bytes=cache_type_bytes(cache_type_k),
                           v_bytes=cache_type_bytes(cache_type_v))


def free_vram(simulate: SimulateSpec | None) -> dict[int, float | None]:
    """Free MiB per available GPU (None where the GPU gives no figure)."""
    snap = take_snapshot(TelemetryOptions(simulate=simulate))
    return {g.index: g.memory_free_mib for g in snap.gpus if g.available}


@dataclass(frozen=True)
class Estimate:
    verdict: Verdict
    notes: tuple[str, ...]


def estimate(args: argparse.Namespace) -> Estimate:
    """Raises ModelRefused, ScenarioError."""
    path: Path = args.model
    facts = read_gguf(path)  # refuses a broken file before any GPU is asked
    plan = make_plan(path, args.ctx, facts=facts)
    notes: list[str] = []
    if args.ctx > facts.training_context:
        notes.append(f"note: --ctx {args.ctx} is more than the model's training context "
                     f"({facts.training_context}); llama-server still allocates it all")
    free = free_vram(args.simulate)
    if not free:
        notes.append("note: no GPU found: the model would run entirely on the CPU")
    verdict = preflight(plan, free, requested="auto", gpu=args.gpu,
                        overhead_mib=args.overhead_mib, margin_mib=args.margin_mib)
    return Estimate(verdict, tuple(notes))


def render(path: Path, result: Estimate) -> str:
    v = result.verdict
    out = [f"{path}: {v.kind}", v.message]
    out += [f"  {line}" for line in v.lines]
    out.append(f"  figures from: {SOURCE_NAMES.get(v.source, v.source)}")
    out += list(result.notes)
    return "\n".join(out)


def main(argv: list[str]) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else EXIT_FITS
    try:
        result = estimate(args)
    except ModelRefused as exc:
        verdict = refused(args.model, str(exc))
        if args.json:
            print(json.dumps(verdict.to_dict(), indent=2))
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (ScenarioError, ValueError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        print(json.dumps({"model": str(args.model), **result.verdict.to_dict(),
                          "notes": list(result.notes)}, indent=2))
    else:
        print(render(args.model, result))
    return EXIT_FITS if result.verdict.ok else EXIT_DOES_NOT_FIT
