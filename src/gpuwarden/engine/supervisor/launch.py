"""How a llama.cpp server is launched: its command line, the GPU it may see, its free
port, its log file's name, and reading a recorded command line back."""

from __future__ import annotations

import hashlib
import re
import secrets
import socket
from pathlib import Path

from gpuwarden.engine.lifecycle.backend import Launch
from gpuwarden.engine.lifecycle.safety_guard import parallel_slots, sets_parallel


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch_key() -> str:
    """A fresh API key for one launch. Hex: a key that began with "-" (urlsafe base64 has
    one in 64) was read as an option by the servers' argument parsers, and the launch
    failed with "--api-key: expected one argument"."""
    return secrets.token_hex(24)


def server_argv(binary: Path, launch: Launch, port: int, api_key: str) -> list[str]:
    cfg = launch.config
    assert cfg.path is not None
    return [str(binary), "--model", str(cfg.path), "--host", "127.0.0.1", "--port", str(port),
            "--api-key", api_key, "--n-gpu-layers", ngl_arg(launch),
            "--ctx-size", str(cfg.context_size), "--metrics", "--no-webui", "--alias", cfg.name,
            *(("--threads", str(cfg.threads)) if cfg.threads else ()), *cfg.args,
            *throttled_args(launch)]


def gpu_environment(launch: Launch) -> dict[str, str]:
    """Which GPU the server may use: only its own (by UUID, so CUDA's numbering cannot
    differ from NVML's), and none on the CPU (no CUDA context, no VRAM held)."""
    if launch.device == "cpu":
        return {"CUDA_VISIBLE_DEVICES": ""}
    if launch.gpu_uuid:
        return {"CUDA_VISIBLE_DEVICES": launch.gpu_uuid, "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    return {}


def throttled_args(launch: Launch) -> tuple[str, ...]:
    """Fewer parallel slots while the safety verdict asks to reduce intensity (after the
    config's own arguments, so it wins)."""
    slots = parallel_slots(launch.config.args, launch.throttle)
    if slots is None:
        return ()
    if sets_parallel(launch.config.args):
        return ("--parallel", str(slots))
    # llama-server's own (auto) slots share one KV cache; keep it shared, so no request
    # loses context to the throttle
    return ("--parallel", str(slots), "--kv-unified")


def log_file_name(name: str) -> str:
    """The model's name made safe for a file name (at most 64 characters of it), and a
    short hash of the exact name, so no two models share a log."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")[:64] or "model"
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{safe}-{digest}.log"


def ngl_arg(launch: Launch) -> str:
    """``--n-gpu-layers``: ``all`` on the full GPU (whatever the file's real layer count:
    a number equal to it would leave the first layer on the CPU, as llama.cpp offloads
    the output layer first), else the planned number."""
    return "all" if launch.device == "gpu" else str(launch.gpu_layers)


ALL_LAYERS = 1_000_000  # what ``--n-gpu-layers all`` reads back as


def gpu_layers_of(cmdline: tuple[str, ...]) -> int:
    """The --n-gpu-layers a recorded server was started with (0 if absent; ``all``: every
    layer)."""
    for flag in ("--n-gpu-layers", "-ngl", "--gpu-layers"):
        if flag in cmdline[:-1]:
            value = cmdline[cmdline.index(flag) + 1]
            if value == "all":
                return ALL_LAYERS
            return int(value) if value.isdigit() else 0
    return 0
