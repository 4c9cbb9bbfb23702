"""What a real llama-server allocates, read from its own log: for checking estimates
against it (tests and bench/estimate_accuracy.py)."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

from gpuwarden.engine.safety.fit_params import Allocated, allocated


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_allocation(binary: Path, model: Path, context_size: int, log_path: Path,
                      args: tuple[str, ...] = (), timeout_s: float = 120.0) -> Allocated:
    """Start llama-server as gpuwarden launches it on the CPU (-ngl 0), read its buffers,
    stop it. ``-lv 4``: at its default verbosity llama-server does not log the "buffer
    size" lines. RuntimeError (with the log's end) when it logs none."""
    argv = [str(binary), "--model", str(model), "--host", "127.0.0.1", "--port",
            str(free_port()), "--api-key", "k", "--n-gpu-layers", "0", "--ctx-size",
            str(context_size), "--metrics", "--no-webui", "--alias", "tiny", *args, "-lv", "4"]
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline and proc.poll() is None:
                if "listening on http" in log_path.read_text(errors="replace"):
                    break
                time.sleep(0.05)
        finally:
            proc.terminate()
            proc.wait(10)
    text = log_path.read_text(errors="replace")
    got = allocated(text)
    if got is None:
        raise RuntimeError(f"no buffer sizes in {log_path}: {text[-2000:]}")
    return got
