"""The pre-flight's side of the lifecycle: what a model's launch will hold, priced from
llama.cpp's own projection (when its fit tool is built), else the GGUF metadata, else the
configured ``vram_mib``; plus the learned per-GPU CUDA overhead and the safety margin.

Every load the manager plans (a button, autostart, a swap, a restore, a return to the
GPU) is priced here; a model file that is not a usable GGUF is refused before anything
starts."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from gpuwarden.engine.lifecycle.config import ModelConfig, Placement
from gpuwarden.engine.lifecycle.estimate import DEFAULT_VRAM_MIB, estimate_vram_mib, resolve
from gpuwarden.engine.safety import fit_params, torch_size
from gpuwarden.engine.safety.gguf_plan import (
    ModelRefused,
    cache_type_bytes,
    plan_from_facts,
    read_gguf,
)
from gpuwarden.engine.safety.memory import MemoryPlan
from gpuwarden.engine.safety.overhead import OverheadBook
from gpuwarden.engine.safety.preflight import plan_from_config_vram

TORCH_OVERHEAD = 1.2

log = logging.getLogger(__name__)

FitTool = Callable[[], Path | None]
_GGUF_BACKENDS = frozenset({"llama-server", "llama-cpp"})


def _guessed_vram_mib(cfg: ModelConfig) -> float:
    """Without ``vram_mib``: a torch model's weights in its dtype plus a fifth for
    activations and the allocator's slack; anything else DEFAULT_VRAM_MIB."""
    if cfg.backend == "torch" and cfg.path is not None:
        weights = torch_size.weights_mib(cfg.path, cfg.dtype)
        if weights is not None:
            return weights * TORCH_OVERHEAD
    return DEFAULT_VRAM_MIB


class Planner:
    """Plans are cached per model settings and file (size, mtime)."""

    def __init__(self, overhead: OverheadBook, *, fit_tool: FitTool | None = None) -> None:
        self.overhead = overhead
        self._fit_tool = fit_tool
        self._cache: dict[tuple[object, ...], MemoryPlan] = {}
        self._lock = threading.Lock()

    def plan(self, cfg: ModelConfig) -> MemoryPlan:
        """The model's memory plan; raises ModelRefused for a file that is no usable GGUF."""
        if cfg.vram_mib is not None or cfg.backend not in _GGUF_BACKENDS or cfg.path is None:
            vram = cfg.vram_mib if cfg.vram_mib is not None else _guessed_vram_mib(cfg)
            return plan_from_config_vram(vram, cfg.layers, cfg.context_size)
        key = _key(cfg, cfg.path)
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None:
            return cached
        plan = self._plan_file(cfg, cfg.path)
        with self._lock:
            self._cache[key] = plan
        return plan

    def _plan_file(self, cfg: ModelConfig, path: Path) -> MemoryPlan:
        facts = read_gguf(path)  # refuses a bad file before anything else
        tool = self._fit_tool() if self._fit_tool is not None else None
        if tool is not None:
            projection = fit_params.project(tool, path, context_size=cfg.context_size,
                                            gpu_layers=facts.layers + 1,  # + the output
                                            extra_args=cfg.args)
            if projection is not None:
                total = facts.tensor_bytes or 1
                shares = [b / total for b in facts.layer_bytes]
                return fit_params.to_plan(projection, facts.layers, shares)
        parallel, k_type, v_type = _launch_options(cfg.args)
        return plan_from_facts(facts, cfg.context_size, parallel=parallel,
                               k_bytes=cache_type_bytes(k_type),
                               v_bytes=cache_type_bytes(v_type))

    def warm(self, configs: Sequence[ModelConfig]) -> None:
        """Price every model now (from the driver's thread, outside the manager's lock),
        so a load never waits for llama.cpp's fit tool while holding it."""
        for cfg in configs:
            self.problem(cfg)

    def problem(self, cfg: ModelConfig) -> str | None:
        """Why this model cannot be loaded at all (its file), or None."""
        try:
            self.plan(cfg)
        except ModelRefused as exc:
            return str(exc)
        except ValueError as exc:  # an impossible context or cache type in the config
            return f"{cfg.name}: {exc}"
        return None

    def estimate(self, cfg: ModelConfig, placement: Placement) -> float:
        """VRAM the launch will hold on its GPU (buffers + CUDA overhead); 0 on the CPU.
        Never raises: a file it cannot read is priced at its size (the load refuses it)."""
        device, layers = resolve(placement, cfg, has_gpu=True)
        if device == "cpu":
            return 0.0
        try:
            buffers = self.plan(cfg).gpu_mib(layers)
        except ValueError:
            return estimate_vram_mib(cfg, placement)
        return buffers + self.overhead_mib(cfg)

    def overhead_mib(self, cfg: ModelConfig) -> float:
        """The CUDA overhead a launch of this model adds on its GPU (a real server process
        only: the simulated backend has none)."""
        return self.overhead.get(cfg.gpu)[0] if cfg.backend in _GGUF_BACKENDS else 0.0

    def max_layers(self, cfg: ModelConfig, free_mib: float, margin_mib: float) -> int:
        """The most GPU layers that fit in ``free_mib`` keeping ``margin_mib`` free (0:
        none)."""
        try:
            plan = self.plan(cfg)
        except ValueError:
            return 0
        room = free_mib - margin_mib - self.overhead_mib(cfg)
        best = 0
        for n in range(1, min(plan.layers, cfg.layers) + 1):
            if plan.gpu_mib(n) > room:
                break
            best = n
        return best

    def learn(self, cfg: ModelConfig, gpu_layers: int, measured_mib: float) -> None:
        """A model is ready and measured: what it holds beyond its buffers is the GPU's
        CUDA overhead."""
        try:
            buffers = self.plan(cfg).gpu_mib(gpu_layers)
        except ValueError:
            return
        if cfg.vram_mib is None and cfg.backend in _GGUF_BACKENDS:
            self.overhead.learn(cfg.gpu, measured_mib - buffers)


def _key(cfg: ModelConfig, path: Path) -> tuple[object, ...]:
    try:
        st = path.stat()
        stamp: tuple[int, int] = (st.st_size, st.st_mtime_ns)
    except OSError:
        stamp = (-1, -1)
    return (str(path), stamp, cfg.context_size, cfg.args)


def _launch_options(args: Sequence[str]) -> tuple[int, str, str]:
    """(parallel slots, K cache type, V cache type) the launch arguments ask for."""
    found = {"parallel": "1", "k": "f16", "v": "f16"}
    names = {"--parallel": "parallel", "-np": "parallel", "--cache-type-k": "k",
             "-ctk": "k", "--cache-type-v": "v", "-ctv": "v"}
    for i, arg in enumerate(args[:-1]):
        if arg in names:
            found[names[arg]] = args[i + 1]
    parallel = int(found["parallel"]) if found["parallel"].isdigit() else 1
    return max(1, parallel), found["k"], found["v"]
