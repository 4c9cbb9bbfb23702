"""Memory-estimate accuracy benchmark (not a test: run it by hand).

For generated models of several shapes (few vs many layers, narrow vs wide, grouped-query
attention or not, f32 and f16 matrices) at two context sizes, start the real llama-server
with gpuwarden's launch arguments on the CPU, read the buffers it reports ("buffer size"
lines: model, KV, compute), and compare with:

  * llama.cpp's own projection (`llama-fit-params --fit-print on`, via
    gpuwarden.engine.safety.fit_params.project), and
  * the GGUF-metadata estimate (gpuwarden.engine.safety.gguf_plan.plan_from_gguf), once
    that module exists (until then its columns read "n/a").

    python bench/estimate_accuracy.py [--llama-server PATH] [--contexts 512 4096]

Prints a Markdown table; all figures in MiB (the server's to 2 decimals, the fit tool's
in whole MiB, rounded down by the tool).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from gguf_factory import WeightType, write_tiny_llama
from gpuwarden.engine.safety.fit_params import project
from gpuwarden.engine.supervisor.locate import find_fit_params, find_llama_server
from server_buffers import server_allocation

MetadataEstimate = Callable[[Path, int], float]


def _metadata_estimate() -> MetadataEstimate | None:
    """Host MiB (all layers on the CPU) from the GGUF metadata, if gguf_plan exists."""
    try:
        from gpuwarden.engine.safety.gguf_plan import (  # type: ignore[import-not-found]
            plan_from_gguf,
        )
    except ImportError:
        return None

    def estimate(model: Path, context_size: int) -> float:
        plan = plan_from_gguf(model, context_size=context_size)
        return float(plan.host_mib(0))

    return estimate


@dataclass(frozen=True)
class Shape:
    name: str
    n_layers: int
    n_embd: int
    n_ff: int
    n_head: int
    n_head_kv: int
    weight_type: WeightType


SHAPES = (
    Shape("few narrow MHA f32", 2, 256, 768, 4, 4, "f32"),
    Shape("many narrow GQA f16", 24, 256, 768, 8, 2, "f16"),
    Shape("few wide MHA f16", 4, 1024, 2816, 16, 16, "f16"),
    Shape("mid wide GQA f32", 8, 768, 2048, 12, 4, "f32"),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llama-server", type=Path, default=None)
    parser.add_argument("--contexts", type=int, nargs="+", default=[512, 4096])
    args = parser.parse_args(argv)
    server = find_llama_server(args.llama_server)
    tool = find_fit_params(server)
    metadata = _metadata_estimate()
    print(f"llama-server: {server}\nfit tool: {tool}\nmetadata estimate: "
          f"{'gguf_plan.plan_from_gguf' if metadata else 'n/a (gguf_plan not there yet)'}\n")
    print("| model | layers | n_embd | heads (kv) | type | file MiB | ctx | server: model + KV "
          "+ compute = total | output | fit tool: model + KV + compute = total | fit - server "
          "| fit ms | metadata | metadata - server |")
    print("|" + "---|" * 14)
    with tempfile.TemporaryDirectory(prefix="gpuwarden-bench-") as tmp:
        for shape in SHAPES:
            model = write_tiny_llama(
                Path(tmp) / f"{shape.name.replace(' ', '-')}.gguf", n_layers=shape.n_layers,
                n_embd=shape.n_embd, n_ff=shape.n_ff, n_head=shape.n_head,
                n_head_kv=shape.n_head_kv, weight_type=shape.weight_type,
                context_length=max(args.contexts))
            size = model.stat().st_size / 2**20
            for ctx in args.contexts:
                real = server_allocation(server, model, ctx, Path(tmp) / "server.log")
                fit_cell = diff_cell = ms_cell = "n/a"
                if tool is not None:
                    started = time.perf_counter()
                    got = project(tool, model, context_size=ctx, gpu_layers=0)
                    ms = (time.perf_counter() - started) * 1000
                    if got is not None:
                        fit_cell = (f"{got.model_mib} + {got.context_mib} + {got.compute_mib}"
                                    f" = {got.total_mib}")
                        diff_cell = f"{got.total_mib - real.total_mib:+.2f}"
                        ms_cell = f"{ms:.0f}"
                meta_cell = meta_diff = "n/a"
                if metadata is not None:
                    try:
                        est = metadata(model, ctx)
                        meta_cell = f"{est:.2f}"
                        meta_diff = f"{est - real.total_mib:+.2f}"
                    except Exception as exc:  # noqa: BLE001 (the other module's failure: a cell)
                        meta_cell = f"error: {exc}"
                print(f"| {shape.name} | {shape.n_layers} | {shape.n_embd} | {shape.n_head} "
                      f"({shape.n_head_kv}) | {shape.weight_type} | {size:.1f} | {ctx} | "
                      f"{real.model_mib:.2f} + {real.context_mib:.2f} + {real.compute_mib:.2f}"
                      f" = {real.total_mib:.2f} | {real.output_mib:.2f} | {fit_cell} | "
                      f"{diff_cell} | {ms_cell} | {meta_cell} | {meta_diff} |", flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("LLAMA_ARG_THREADS", "2")
    raise SystemExit(main())
