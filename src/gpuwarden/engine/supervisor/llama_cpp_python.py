"""The second server kind: llama-cpp-python's OpenAI-compatible server, for machines that
have llama-cpp-python but no llama-server binary. It runs as
`python -m gpuwarden.workers.llama_cpp_serve` (llama_cpp.server's app with llama-server's
/health and /metrics added), so it is supervised exactly like llama-server."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from gpuwarden.engine.lifecycle.backend import Launch
from gpuwarden.engine.supervisor.llama_server import LlamaServerBackend

WORKER = "gpuwarden.workers.llama_cpp_serve"
# llama-cpp-python and what its [server] extra brings, as top-level modules (looked up,
# never imported: the engine does not load llama.cpp into its own process).
NEEDED = ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context",
          "pydantic_settings")


class LlamaCppPythonBackend(LlamaServerBackend):
    kind = "llama-cpp"
    program = "the Python for llama-cpp-python"
    health_path = "/health"
    metrics_path = "/metrics"

    def find_binary(self) -> Path:
        if self._binary is not None:  # a python that has llama_cpp (tests: a stand-in)
            return self._binary
        missing = [name for name in NEEDED if importlib.util.find_spec(name) is None]
        if missing:
            raise FileNotFoundError(
                f"llama-cpp-python with its server extra is not installed (no "
                f"{', '.join(missing)}): run `gpuwarden setup llama-cpp-python`, or "
                "`pip install 'llama-cpp-python[server]'`; or use backend = 'llama-server'")
        return Path(sys.executable)

    def argv(self, binary: Path, launch: Launch, port: int, api_key: str) -> list[str]:
        cfg = launch.config
        return [str(binary), "-m", WORKER, "--model", str(cfg.path),
                "--host", "127.0.0.1", "--port", str(port), "--api_key", api_key,
                "--n_gpu_layers", "-1" if launch.device == "gpu" else str(launch.gpu_layers),
                "--n_ctx", str(cfg.context_size),
                *(("--n_threads", str(cfg.threads)) if cfg.threads else ()), *cfg.args]

    def environment(self, launch: Launch) -> dict[str, str]:
        # uvicorn's access log goes to stdout: unbuffered, so a crash's log tail has it.
        return {**super().environment(launch), "PYTHONUNBUFFERED": "1"}
