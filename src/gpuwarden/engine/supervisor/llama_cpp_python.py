"""The second server kind: llama-cpp-python's OpenAI-compatible server
(`python -m llama_cpp.server`), for machines that have llama-cpp-python but no
llama-server binary. Same supervision; it has no /health, so readiness and hang checks
ask /v1/models, and it has no request counters."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from gpuwarden.engine.lifecycle.backend import Launch
from gpuwarden.engine.supervisor.llama_server import LlamaServerBackend


class LlamaCppPythonBackend(LlamaServerBackend):
    kind = "llama-cpp"
    program = "the Python for llama-cpp-python"
    health_path = "/v1/models"
    metrics_path = None

    def find_binary(self) -> Path:
        if self._binary is not None:  # a python that has llama_cpp (tests: a stand-in)
            return self._binary
        if importlib.util.find_spec("llama_cpp") is None:
            raise FileNotFoundError(
                "llama-cpp-python is not installed: `pip install 'gpuwarden[llama]'`, or use "
                "backend = 'llama-server'")
        return Path(sys.executable)

    def argv(self, binary: Path, launch: Launch, port: int, api_key: str) -> list[str]:
        cfg = launch.config
        return [str(binary), "-m", "llama_cpp.server", "--model", str(cfg.path),
                "--host", "127.0.0.1", "--port", str(port), "--api_key", api_key,
                "--n_gpu_layers", "-1" if launch.device == "gpu" else str(launch.gpu_layers),
                "--n_ctx", str(cfg.context_size),
                *(("--n_threads", str(cfg.threads)) if cfg.threads else ()), *cfg.args]
