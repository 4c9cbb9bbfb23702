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
    ``output_mib``: weights that go to the GPU only with a full offload (output / lm head
    and what llama.cpp keeps beside it), ``host_only_mib``: weights that stay on the host
    whatever the offload (token embeddings); ``kv_per_layer_mib``: K and V cache of one
    layer at this context; ``compute_gpu_mib`` / ``compute_host_mib``: compute buffers.
    """

    source: PlanSource
    layer_weights_mib: tuple[float, ...]
    output_mib: float
    host_only_mib: float
    kv_per_layer_mib: float
    compute_gpu_mib: float
    compute_host_mib: float
    context_size: int  # after capping at the model's training context

    @property
    def layers(self) -> int:
        return len(self.layer_weights_mib)

    def gpu_mib(self, gpu_layers: int) -> float:
        """GPU buffers with the last ``gpu_layers`` layers offloaded (as -ngl does); 0
        for none. The per-process CUDA overhead is not included."""
        n = max(0, min(gpu_layers, self.layers))
        if n == 0:
            return 0.0
        on_gpu = sum(self.layer_weights_mib[self.layers - n:]) + n * self.kv_per_layer_mib
        full = self.output_mib if n == self.layers else 0.0
        return on_gpu + full + self.compute_gpu_mib

    def host_mib(self, gpu_layers: int) -> float:
        """Host buffers for that offload (what stays on the CPU)."""
        n = max(0, min(gpu_layers, self.layers))
        on_host = self.layers - n
        weights = sum(self.layer_weights_mib[: on_host]) + self.host_only_mib
        output = 0.0 if n == self.layers else self.output_mib
        # With nothing offloaded the CPU runs every op: the larger (main) compute buffer.
        compute = max(self.compute_gpu_mib, self.compute_host_mib) if n == 0 \
            else self.compute_host_mib
        return weights + output + on_host * self.kv_per_layer_mib + compute
