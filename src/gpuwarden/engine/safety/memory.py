"""What a model will hold before it is loaded: one shape for every source of figures
(llama.cpp's own projection, the GGUF metadata, the user's configured ``vram_mib``).

Pure data: the pre-flight turns a :class:`MemoryPlan` and the free memory into a verdict.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

PlanSource = Literal["llama.cpp", "metadata", "config"]


@dataclass(frozen=True, slots=True)
class MemoryPlan:
    """Buffers of one launch (model file, context size, parallel slots, cache types), in
    MiB, split so any number of GPU layers can be priced.

    ``layer_weights_mib``: the weights of each repeating layer (block), in order;
    ``output_mib``: the output layer's weights (output / lm head and its norm), which
    llama.cpp offloads first (``-ngl 1`` is the output alone); ``output_first`` False: a
    plan whose layers count alone, as a simulated model's do; ``host_only_mib``: weights
    that stay on the host whatever the offload (token embeddings); ``kv_per_layer_mib``:
    K and V cache of one layer at this context; ``compute_gpu_mib`` /
    ``compute_host_mib``: compute buffers.
    """


    source: PlanSource
    layer_weights_mib: tuple[float, ...]
    output_mib: float
    host_only_mib: float
    kv_per_layer_mib: float
    compute_gpu_mib: float
    compute_host_mib: float
    context_size: int  # after capping at the model's training context
    output_first: bool = True

    @property
    def layers(self) -> int:
        return len(self.layer_weights_mib)

    def split(self, gpu_layers: int) -> tuple[int, bool]:
        """(repeating layers on the GPU, output on the GPU) for ``-ngl gpu_layers``, as
        llama.cpp counts: the output layer goes first, then the last layers; ``layers`` or
        more is everything."""
        if gpu_layers <= 0:
            return 0, False
        if gpu_layers >= self.layers:
            return self.layers, True
        if not self.output_first:
            return gpu_layers, False
        return gpu_layers - 1, True

    def gpu_mib(self, gpu_layers: int) -> float:
        """GPU buffers for ``-ngl gpu_layers`` (0: none; ``layers`` or more: every layer
        and the output). The per-process CUDA overhead is not included."""
        n, output = self.split(gpu_layers)
        if n == 0 and not output:
            return 0.0
        on_gpu = sum(self.layer_weights_mib[self.layers - n:]) + n * self.kv_per_layer_mib
        return on_gpu + (self.output_mib if output else 0.0) + self.compute_gpu_mib

    def host_mib(self, gpu_layers: int) -> float:
        """Host buffers for that offload (what stays on the CPU)."""
        n, output = self.split(gpu_layers)
        on_host = self.layers - n
        weights = sum(self.layer_weights_mib[:on_host]) + self.host_only_mib
        stays = 0.0 if output else self.output_mib
        # With nothing offloaded the CPU runs every op: the larger (main) compute buffer.
        compute = self.compute_host_mib if n or output else \
            max(self.compute_gpu_mib, self.compute_host_mib)
        return weights + stays + on_host * self.kv_per_layer_mib + compute
