"""`gpuwarden estimate MODEL.gguf`: will this model fit, before it is loaded.

Prices the model with llama.cpp's own projection when its fit tool (``llama-fit-params``,
built beside llama-server) is there, else from its GGUF metadata (see
``gpuwarden.engine.safety.gguf_plan``; ``--source`` picks one), reads the free VRAM of
every GPU, and prints the pre-flight's verdict with its figures and where they came from.
Exit status: 0 when it fits (whole or in part), 1 when it does not, 2 for bad input (a
missing or broken model file, a bad option): one line on stderr, never a traceback. The
pricing itself is ``gpuwarden.engine.safety.estimate``, shared with the window's Add model
dialog; this module finds the fit tool and the free VRAM and prints.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import NoReturn

from gpuwarden.cli import simulate_arg
from gpuwarden.engine.runtime import (
    SimulateSpec,
    TelemetryOptions,
    take_snapshot,
)
from gpuwarden.engine.safety import estimate as file_estimate
from gpuwarden.engine.safety.estimate import (
    SOURCE_CHOICES,
    Estimate,
    SourceChoice,
    estimate_file,
    free_vram_of,
)
from gpuwarden.engine.safety.gguf_plan import MAX_CONTEXT, GgufFacts, ModelRefused, read_gguf
from gpuwarden.engine.safety.memory import MemoryPlan, PlanSource
from gpuwarden.engine.safety.overhead import DEFAULT_OVERHEAD_MIB
from gpuwarden.engine.safety.preflight import DEFAULT_MARGIN_MIB, GpuChoice, refused
from gpuwarden.engine.supervisor.locate import find_fit_tool
from gpuwarden.engine.telemetry.scenario import ScenarioError

PROG = "gpuwarden estimate"
DEFAULT_CONTEXT = 4096  # a model's context_size when its config sets none
MAX_MIB = float(1 << 30)
EXIT_FITS, EXIT_DOES_NOT_FIT, EXIT_USAGE = 0, 1, 2
SOURCE_NAMES: Mapping[PlanSource, str] = {
    "metadata": "GGUF metadata",
    "llama.cpp": "llama.cpp (llama-fit-params)",
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


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="Will this model fit in the free VRAM? Prices a GGUF "
                "model from its metadata before it is loaded.")
    p.add_argument("model", type=Path, metavar="MODEL.gguf")
    p.add_argument("--ctx", type=_context, default=DEFAULT_CONTEXT, metavar="N",
                   help=f"context size in tokens (default {DEFAULT_CONTEXT})")
    p.add_argument("--gpu", type=_gpu, default="auto", metavar="I|auto",
                   help="the GPU to place it on (default auto: the one it fits best)")
    p.add_argument("--simulate", nargs="?", const=SimulateSpec(), type=simulate_arg,
                   metavar="N|SCENARIO", help="simulated GPU(s) instead of NVML")
    p.add_argument("--overhead-mib", type=_mib, default=None, metavar="X",
                   help="per-process CUDA overhead (default: what gpuwarden learned on that "
                        f"GPU, else {DEFAULT_OVERHEAD_MIB:.0f})")
    p.add_argument("--margin-mib", type=_mib, default=DEFAULT_MARGIN_MIB, metavar="X",
                   help=f"free VRAM to keep spare (default {DEFAULT_MARGIN_MIB:.0f})")
    p.add_argument("--source", choices=SOURCE_CHOICES, default="auto",
                   help="where the figures come from: llama.cpp's fit tool "
                        "(llama-fit-params), the GGUF metadata, or auto (default: llama.cpp "
                        "when its fit tool is there and answers, else the metadata)")
    p.add_argument("--json", action="store_true", help="print the verdict as JSON")
    return p


def make_plan(path: Path, context_size: int, *, parallel: int = 1,
              cache_type_k: str = "f16", cache_type_v: str = "f16",
              facts: GgufFacts | None = None, source: SourceChoice = "auto") -> MemoryPlan:
    """:func:`gpuwarden.engine.safety.estimate.make_plan` with the fit tool found as
    ``gpuwarden estimate`` finds it."""
    return file_estimate.make_plan(path, context_size, parallel=parallel,
                                   cache_type_k=cache_type_k, cache_type_v=cache_type_v,
                                   facts=facts, source=source, fit_tool=find_fit_tool)


def free_vram(simulate: SimulateSpec | None) -> dict[int, float | None]:
    """Free MiB per available GPU (None where the GPU gives no figure)."""
    return free_vram_of(take_snapshot(TelemetryOptions(simulate=simulate)))


def estimate(args: argparse.Namespace) -> Estimate:
    """Raises ModelRefused, ScenarioError."""
    path: Path = args.model
    facts = read_gguf(path)  # refuses a broken file before any GPU is asked
    return estimate_file(path, args.ctx, free_vram(args.simulate), gpu=args.gpu,
                         overhead_mib=args.overhead_mib, margin_mib=args.margin_mib,
                         source=args.source, fit_tool=find_fit_tool, facts=facts)


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
