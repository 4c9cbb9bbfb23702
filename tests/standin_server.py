"""A stand-in for llama-server (and for `python -m gpuwarden.workers.llama_cpp_serve`,
llama-cpp-python's server with llama-server's /health and /metrics) that imitates the
exotic exits the real binary cannot be made to show on a CPU-only machine.

It reads its behaviour from the "model" file, a JSON object:
  oom_above_layers: N   print CUDA's out-of-memory lines and exit 1 when -ngl > N
  ignore_sigterm: true  only SIGKILL ends it
  never_ready: true     /health answers 503 forever
Everything else is served like llama-server: /health, /metrics, /v1/models.
"""

from __future__ import annotations

import json
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

STANDIN = Path(__file__).resolve()  # run it: python STANDIN --model SPEC --port N


def write_executable(folder: Path) -> Path:
    """An executable named llama-server that runs this stand-in, for a backend's binary."""
    exe = folder / "llama-server"
    me = str(Path(__file__).resolve())
    exe.write_text(f"#!{sys.executable}\nimport runpy, sys\nsys.argv[0] = {me!r}\n"
                   f"runpy.run_path({me!r}, run_name='__main__')\n")
    exe.chmod(0o755)
    return exe


def arg(argv: list[str], *names: str, default: str | None = None) -> str | None:
    for name in names:
        if name in argv[:-1]:
            return argv[argv.index(name) + 1]
    return default


def main(argv: list[str]) -> int:
    spec = json.loads(Path(arg(argv, "--model") or "").read_text())
    given = arg(argv, "--n-gpu-layers", "--n_gpu_layers", default="0") or "0"
    layers = 10**6 if given in ("all", "-1") else int(given)  # all: every layer
    if layers > spec.get("oom_above_layers", 10**9):
        print(f"ggml_backend_cuda_buffer_type_alloc_buffer: allocating {layers * 100} MiB on "
              "device 0: cudaMalloc failed: out of memory", file=sys.stderr)
        print("llama_model_load: error loading model: unable to allocate CUDA0 buffer",
              file=sys.stderr)
        print("srv  llama_server: exiting due to model loading error", file=sys.stderr)
        return 1
    if spec.get("ignore_sigterm"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    ready = not spec.get("never_ready")
    served = [0]  # completions answered: the counter llama-server's /metrics shows

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path in ("/health", "/v1/models"):
                self._reply(200 if ready else 503, b'{"status": "ok"}')
            elif self.path == "/metrics":
                self._reply(200, (f"llamacpp:tokens_predicted_total {served[0]}\n"
                                  "llamacpp:requests_processing 0\n").encode())
            else:
                self._reply(404, b"{}")

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path == "/completion":
                served[0] += 1
                self._reply(200, b'{"content": ""}')
            else:
                self._reply(404, b"{}")

        def _reply(self, code: int, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            return None

    port = int(arg(argv, "--port") or 0)
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(f"stand-in listening on 127.0.0.1:{port} with {layers} GPU layers", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
