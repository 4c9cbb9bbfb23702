"""gpuwarden: keep local models healthy on your own NVIDIA GPUs."""

__version__ = "0.1.0"
