"""The ``torch`` backend: PyTorch models (a Transformers causal-LM folder, a
``torch.export`` or TorchScript file) served by gpuwarden's own worker process,
``python -m gpuwarden.workers.torch_serve``, supervised like llama-server: readiness and
hangs on /health, use on /metrics (the same counter names), crash classification from
its log ("CUDA out of memory" -> gpu_oom, "failed to load model" -> load_error).

It moves in place: offloading to the CPU and coming back ask the running worker to move
its weights (``POST /gpuwarden/device``) instead of restarting it, so its port, key and
clients stay. A worker started on the CPU cannot see a GPU (CUDA_VISIBLE_DEVICES is
empty), so its way to the GPU is a restart. The dtype it asks for is made safe by the
worker itself (``select_safe_dtype``, where its GPU is seen); on the CPU it is float32.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
import threading
from pathlib import Path

from gpuwarden.engine.lifecycle.backend import (
    ActivityCallback,
    ExitCallback,
    Footprint,
    Launch,
    ReadyCallback,
)
from gpuwarden.engine.supervisor import http
from gpuwarden.engine.supervisor.launch import gpu_environment
from gpuwarden.engine.supervisor.llama_server import LlamaServerBackend, _rss_mib, _Server

log = logging.getLogger(__name__)
WORKER_MODULE = "gpuwarden.workers.torch_serve"
MOVE_TIMEOUT_S = 600.0  # a big model's weights over PCIe: minutes at worst


class TorchBackend(LlamaServerBackend):
    kind = "torch"
    program = "the torch worker"

    def find_binary(self) -> Path:
        """The Python that runs the worker: gpuwarden's own (tests: a given one)."""
        if self._binary is not None:
            return self._binary
        if importlib.util.find_spec("torch") is None:
            raise FileNotFoundError("torch is not installed: `pip install 'gpuwarden[torch]'`")
        return Path(sys.executable)

    def _resolve(self, launch: Launch) -> Path:
        path = launch.config.path
        if path is None or not path.exists():
            raise FileNotFoundError(f"the model {path} does not exist")
        return self.find_binary()

    def argv(self, binary: Path, launch: Launch, port: int, api_key: str) -> list[str]:
        cfg = launch.config
        return [str(binary), "-m", WORKER_MODULE, "--model", str(cfg.path),
                "--port", str(port), "--api-key", api_key,
                "--device", "cpu" if launch.device == "cpu" else "cuda",
                "--dtype", cfg.dtype, "--alias", cfg.name,
                *(("--threads", str(cfg.threads)) if cfg.threads else ()), *cfg.args]

    def environment(self, launch: Launch) -> dict[str, str]:
        return gpu_environment(launch)

    def ready_vram_mib(self, server: _Server) -> float:
        """What torch's allocator holds, as the worker's /health says (the lifecycle then
        measures the process by pid through NVML)."""
        reply = http.get(server.port, "/health", timeout_s=2.0, api_key=server.api_key)
        return _vram_of(reply.body) if server.launch.device != "cpu" else 0.0

    # -- moving in place --------------------------------------------------------------------

    def can_move(self, model: str, device: str, gpu_uuid: str | None) -> bool:
        with self._lock:
            server = self._servers.get(model)
        if server is None or server.proc is None or not server.proc.alive or not server.ready:
            return False
        if device == "cpu":
            return True
        started = server.first_launch or server.launch
        return started.device != "cpu" and started.gpu_uuid == gpu_uuid

    def move(self, launch: Launch, on_ready: ReadyCallback, on_exit: ExitCallback,
             on_activity: ActivityCallback | None = None) -> None:
        name = launch.config.name
        with self._lock:
            server = self._servers.get(name)
            if server is not None:
                server.first_launch = server.first_launch or server.launch
                server.launch, server.ready = launch, False
                server.on_ready, server.on_exit = on_ready, on_exit
                server.on_activity = on_activity
        if server is None or server.proc is None:
            return  # it ended meanwhile: its exit is reported as that of the new instance
        threading.Thread(target=self._move, args=(server, launch), name=f"move-{name}",
                         daemon=True).start()

    def _move(self, server: _Server, launch: Launch) -> None:
        device = "cpu" if launch.device == "cpu" else "cuda"
        reply = http.post(server.port, "/gpuwarden/device", {"device": device},
                          timeout_s=MOVE_TIMEOUT_S, api_key=server.api_key)
        proc = server.proc
        assert proc is not None
        if server.launch is not launch or not proc.alive:
            return  # moved again, or it died (its exit is reported)
        if reply.status != 200:
            log.warning("%s: the worker did not move to the %s (%s): restarting it",
                        launch.config.name, device, reply.body or reply.error)
            server.hung = True  # reported as a hang (not as a SIGKILL's oom_killed): restarted
            proc.kill()
            return
        vram = _vram_of(reply.body) if device == "cuda" else 0.0
        server.ready = True
        server.on_ready(launch.instance, Footprint(vram_mib=vram, ram_mib=_rss_mib(proc.pid),
                                                   on_gpu=device == "cuda"))


def _vram_of(body: str) -> float:
    try:
        value = json.loads(body).get("vram_mib")
    except (ValueError, AttributeError):
        return 0.0
    return float(value) if isinstance(value, int | float) else 0.0
