"""The torch worker: ``python -m gpuwarden.workers.torch_serve --model PATH --port N
--api-key KEY --device cuda|cpu --dtype float32|float16|bfloat16``.

Serves on 127.0.0.1 like llama-server: ``/health`` (503 while loading, then 200 with the
device and what torch's allocator holds), ``/metrics`` (request counters in
llama-server's names), ``/v1/models``, ``/v1/completions`` and ``/v1/chat/completions``
(streamed when asked) for causal LMs, ``/v1/run`` for exported or scripted modules, and
``/gpuwarden/device`` to move the weights between GPU and CPU in place. Everything but
``/health`` needs ``Authorization: Bearer KEY``.

A CUDA out-of-memory anywhere ends the worker with "CUDA out of memory" in its log (the
engine classifies that as ``gpu_oom`` and downgrades); a model that cannot be loaded
ends it with "failed to load model: ..." (``load_error``, not retried)."""

from __future__ import annotations

import argparse
import hmac
import json
import logging
import os
import sys
import threading
import traceback
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import torch

from gpuwarden.workers import openai_api
from gpuwarden.workers.activity import RequestCounter
from gpuwarden.workers.torch_model import LoadError, TorchModel, load

log = logging.getLogger("gpuwarden.torch_worker")
EXIT_LOAD_FAILED = 2
EXIT_GPU_OOM = 3
MAX_BODY_BYTES = 16 << 20
_QUIET = ("/health", "/metrics")  # asked every second by the engine: not logged


class WorkerServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, api_key: str, alias: str) -> None:
        super().__init__(("127.0.0.1", port), Handler)
        self.api_key, self.alias = api_key, alias
        self.model: TorchModel | None = None
        self.counter = RequestCounter()


def out_of_memory(exc: BaseException) -> None:
    """The worker's end after a CUDA out-of-memory: said in the log, exit 3."""
    print(f"CUDA out of memory: {exc}", file=sys.stderr, flush=True)
    os._exit(EXIT_GPU_OOM)


class Handler(BaseHTTPRequestHandler):
    server: WorkerServer
    protocol_version = "HTTP/1.1"
    _replied = False

    def log_message(self, format: str, *args: Any) -> None:
        if self.path not in _QUIET:
            super().log_message(format, *args)

    # -- routing ---------------------------------------------------------------------------

    def do_GET(self) -> None:
        if self.path == "/health":
            self._health()
        elif self._authorised():
            routes: dict[str, Callable[[], None]] = {"/metrics": self._metrics,
                                                     "/v1/models": self._models}
            routes.get(self.path, self._not_found)()

    def do_POST(self) -> None:
        self._replied = False
        if not self._authorised():
            return
        length = self.headers.get("Content-Length") or "0"
        if not length.isdigit() or int(length) > MAX_BODY_BYTES:
            self.close_connection = True
            self._json(413, openai_api.error_body(
                f"the request body must be at most {MAX_BODY_BYTES >> 20} MiB"))
            return
        body = self.rfile.read(int(length))
        model = self.server.model
        if model is None:
            self._json(503, openai_api.error_body("loading model", "unavailable_error"))
            return
        try:
            self._answer(model, body)
        except openai_api.BadRequest as exc:
            self._json(400, openai_api.error_body(str(exc)))
        except torch.cuda.OutOfMemoryError as exc:
            out_of_memory(exc)
        except Exception as exc:  # a model's failure: the client's 500, logged with its trace
            log.exception("%s failed", self.path)
            if not self._replied:
                self._json(500, openai_api.error_body(f"the model failed: {exc}",
                                                      "server_error"))

    def _answer(self, model: TorchModel, body: bytes) -> None:
        if self.path in ("/v1/completions", "/v1/chat/completions"):
            chat = self.path == "/v1/chat/completions"
            with self.server.counter.request():
                self._text(model, openai_api.parse_text_request(body, chat=chat))
        elif self.path == "/v1/run":
            with self.server.counter.request():
                self._run(model, body)
        elif self.path == "/gpuwarden/device":
            self._move(model, body)
        else:
            self._not_found()

    def send_response(self, code: int, message: str | None = None) -> None:
        self._replied = True  # a failure after this cannot be a reply of its own
        super().send_response(code, message)

    # -- endpoints -------------------------------------------------------------------------

    def _health(self) -> None:
        model = self.server.model
        if model is None:
            self._json(503, {"status": "loading model"})
            return
        self._json(200, {"status": "ok", "device": model.device, "kind": model.kind,
                         "vram_mib": round(model.vram_reserved_mib(), 1),
                         **({"dtype": model.dtype.dtype, "dtype_reason": model.dtype.reason}
                            if model.dtype is not None else {})})

    def _metrics(self) -> None:
        text = self.server.counter.metrics_text()
        model = self.server.model
        if model is not None:
            text += f"gpuwarden:torch_cuda_reserved_mib {model.vram_reserved_mib():.1f}\n"
        self._send(200, text.encode(), "text/plain; version=0.0.4")

    def _models(self) -> None:
        self._json(200, {"object": "list", "data": [
            {"id": self.server.alias, "object": "model", "owned_by": "gpuwarden"}]})

    def _text(self, model: TorchModel, request: openai_api.TextRequest) -> None:
        if not model.is_text:
            raise openai_api.BadRequest(
                f"this model is a {model.kind} module, not a causal LM with a tokenizer: "
                "it has no text endpoints (use /v1/run)")
        reply = openai_api.Reply(request, self.server.alias)
        with model.lock:
            ids = model.prompt_ids(request.prompt, request.messages)
            try:
                generation = model.generate(ids, request.max_tokens, request.temperature)
            except ValueError as exc:
                raise openai_api.BadRequest(str(exc)) from None
            if request.stream:
                self._stream(reply, generation)
            else:
                text = generation.text()
                self._json(200, reply.whole(text, generation.finish,
                                            generation.prompt_tokens, len(generation.tokens)))
        self.server.counter.tokens(generation.prompt_tokens, len(generation.tokens))

    def _stream(self, reply: openai_api.Reply, generation: Any) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        try:
            for piece in generation:
                self.wfile.write(reply.chunk(piece))
                self.wfile.flush()
            self.wfile.write(reply.chunk("", generation.finish) + openai_api.sse("[DONE]"))
        except (BrokenPipeError, ConnectionResetError):
            log.info("the client went away during a streamed answer")

    def _run(self, model: TorchModel, body: bytes) -> None:
        try:
            inputs = json.loads(body or b"{}").get("inputs")
        except (ValueError, AttributeError):
            inputs = None
        if not isinstance(inputs, list):
            raise openai_api.BadRequest("'inputs' must be an array (one entry per argument)")
        try:
            outputs = model.run(inputs)
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - a module's own checks raise anything
            raise openai_api.BadRequest(f"the module refused these inputs: {exc}") from None
        self._json(200, {"outputs": outputs})

    def _move(self, model: TorchModel, body: bytes) -> None:
        try:
            device = json.loads(body or b"{}").get("device")
        except (ValueError, AttributeError):
            device = None
        if device not in ("cuda", "cpu"):
            raise openai_api.BadRequest("'device' must be \"cuda\" or \"cpu\"")
        if device == "cuda" and not torch.cuda.is_available():
            self._json(409, openai_api.error_body("no CUDA device is visible to this worker",
                                                  "unavailable_error"))
            return
        model.move(device)
        self._json(200, {"device": model.device, "vram_mib": round(model.vram_reserved_mib(), 1)})

    # -- plumbing --------------------------------------------------------------------------

    def _authorised(self) -> bool:
        given = self.headers.get("Authorization", "")
        if hmac.compare_digest(given.encode(), f"Bearer {self.server.api_key}".encode()):
            return True
        self._json(401, openai_api.error_body("invalid API key", "authentication_error"))
        return False

    def _not_found(self) -> None:
        self._json(404, openai_api.error_body(f"no such endpoint: {self.path}", "not_found"))

    def _json(self, status: int, body: dict[str, Any]) -> None:
        self._send(status, json.dumps(body).encode(), "application/json")

    def _send(self, status: int, data: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _load_into(server: WorkerServer, path: Path, device: str, dtype: str) -> None:
    """Load, then serve it; a load that fails ends the worker with the reason."""
    try:
        model = load(path, device, dtype)
    except torch.cuda.OutOfMemoryError as exc:
        out_of_memory(exc)
    except Exception as exc:  # noqa: BLE001 - whatever a loader raises ends the worker, said
        print(f"failed to load model: {exc}", file=sys.stderr, flush=True)
        if not isinstance(exc, LoadError):
            traceback.print_exc()
        os._exit(EXIT_LOAD_FAILED)
    server.model = model
    said = f"{model.dtype.dtype}: {model.dtype.reason}" if model.dtype else "its own dtype"
    print(f"model loaded on {device} ({said}) listening on 127.0.0.1:"
          f"{server.server_address[1]}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gpuwarden.workers.torch_serve",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cpu")
    parser.add_argument("--dtype", choices=("float32", "float16", "bfloat16"),
                        default="float32")
    parser.add_argument("--alias", default="model")
    parser.add_argument("--threads", type=int)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        server = WorkerServer(args.port, args.api_key, args.alias)
    except OSError as exc:
        print(f"couldn't bind 127.0.0.1:{args.port}: {exc}", file=sys.stderr, flush=True)
        return 1
    threading.Thread(target=_load_into, args=(server, args.model, args.device, args.dtype),
                     name="load", daemon=True).start()
    server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
