"""How much VRAM a model will take, and what a placement means in layers.

A first estimate: the configured ``vram_mib``, else the model file's size plus a fifth
for the KV cache and compute buffers. It plans a load; once a model runs, what its
processes hold (measured) counts instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Literal

from gpuwarden.engine.lifecycle.config import ModelConfig, Placement
from gpuwarden.engine.lifecycle.state import ModelState
from gpuwarden.engine.telemetry.snapshot import Snapshot

DEFAULT_VRAM_MIB = 4096.0
_OVERHEAD = 1.2
_MIB = 1024.0 * 1024.0


def full_vram_mib(config: ModelConfig) -> float:
    if config.vram_mib is not None:
        return config.vram_mib
    if config.path is not None:
        try:
            return config.path.stat().st_size / _MIB * _OVERHEAD
        except OSError:
            return DEFAULT_VRAM_MIB
    return DEFAULT_VRAM_MIB


LaunchDevice = Literal["gpu", "partial", "cpu"]


def resolve(placement: Placement, config: ModelConfig,
            has_gpu: bool) -> tuple[LaunchDevice, int]:
    """(device, GPU layers) for a placement: "gpu"/"auto" -> every layer (auto falls back
    to the CPU when there is no GPU), an integer -> that many layers, "cpu" -> none."""
    if placement == "cpu" or (placement == "auto" and not has_gpu):
        return "cpu", 0
    if placement in ("gpu", "auto"):
        return "gpu", config.layers
    layers = int(placement)
    if layers <= 0:
        return "cpu", 0
    if layers >= config.layers:
        return "gpu", config.layers
    return "partial", layers


def estimate_vram_mib(config: ModelConfig, placement: Placement) -> float:
    """Expected VRAM for this placement: the GPU's share of the layers."""
    device, layers = resolve(placement, config, has_gpu=True)
    if device == "cpu":
        return 0.0
    return full_vram_mib(config) * layers / config.layers


def free_vram_mib(snap: Snapshot | None, states: Iterable[ModelState],
                  estimate: Callable[[ModelConfig, Placement], float]) -> dict[int, float | None]:
    """Free MiB per GPU: the last sample, less what loads started since then will take
    (a load may start and be ready between two samples: it is not in the sample yet)."""
    if snap is None:
        return {}
    free: dict[int, float | None] = {g.index: g.memory_free_mib for g in snap.gpus}
    for s in states:
        room = free.get(s.config.gpu)
        started_since = s.loaded_at is not None and s.loaded_at > snap.ts
        if not started_since or room is None:
            continue
        if s.device == "loading":
            free[s.config.gpu] = room - estimate(s.config, s.placement)
        elif s.on_gpu:
            free[s.config.gpu] = room - s.held_vram_mib
    return free
