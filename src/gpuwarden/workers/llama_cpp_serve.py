"""llama-cpp-python's OpenAI-compatible server, with the health and request counters
gpuwarden reads from llama-server:

    python -m gpuwarden.workers.llama_cpp_serve <the arguments of python -m llama_cpp.server>

The arguments are parsed by llama_cpp.server's own parser and its app is built as
``python -m llama_cpp.server`` builds it (which loads the model), then served by uvicorn
wrapped in :class:`CountedApp`: ``GET /health`` (200: the port opens only once the model
is loaded, and it never waits for the model's lock, so a long generation is not a hang),
``GET /metrics`` (:class:`RequestCounter` in llama-server's names), and every ``POST
/v1/...`` counted as a request in flight until its answer, a streamed one included, has
been sent. ``--config_file`` is not supported.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, NoReturn

from gpuwarden.workers.activity import RequestCounter

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]

JSON_BODY_LIMIT = 1 << 20  # a bigger answer is not parsed for its usage (requests still count)
QUIET_PATHS = ("/health", "/metrics")  # polled every few seconds: not in the access log


class Usage:
    """The tokens an answer reports in OpenAI's ``usage`` object: read from a JSON body
    (up to JSON_BODY_LIMIT) or from the streamed event that carries it; 0 when absent."""

    def __init__(self) -> None:
        self.prompt = 0
        self.completion = 0
        self._kind = ""  # "json", "stream" or "" (not looked at)
        self._body = bytearray()

    def feed(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = dict(message.get("headers") or [])
            ctype = bytes(headers.get(b"content-type", b""))
            self._kind = ("json" if ctype.startswith(b"application/json") else
                          "stream" if ctype.startswith(b"text/event-stream") else "")
            return
        chunk = bytes(message.get("body", b""))
        if self._kind == "json":
            if len(self._body) + len(chunk) > JSON_BODY_LIMIT:
                self._kind, self._body = "", bytearray()
            else:
                self._body += chunk
                if not message.get("more_body", False):
                    self._take(bytes(self._body))
        elif self._kind == "stream" and b'"usage"' in chunk:
            for line in chunk.splitlines():
                if line.startswith(b"data:"):
                    self._take(line[len(b"data:"):])

    def _take(self, text: bytes) -> None:
        try:
            usage = json.loads(text).get("usage")
        except (ValueError, AttributeError):  # not JSON, or not an object
            return
        if isinstance(usage, dict):
            self.prompt = _count(usage.get("prompt_tokens"))
            self.completion = _count(usage.get("completion_tokens"))


def _count(value: object) -> int:
    return value if isinstance(value, int) and value >= 0 else 0


class CountedApp:
    """An ASGI app around llama_cpp.server's: answers /health and /metrics itself and
    counts each ``POST /v1/...`` (a GET such as /v1/models is not use of the model)."""

    def __init__(self, app: AsgiApp, counter: RequestCounter, api_key: str | None) -> None:
        self.app = app
        self.counter = counter
        self._auth = f"Bearer {api_key}".encode() if api_key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, method = scope["path"], scope["method"]
        if path == "/health" and method == "GET":
            await _reply(send, 200, b'{"status":"ok"}', b"application/json")
        elif path == "/metrics" and method == "GET":
            if self._auth is not None and self._auth not in _headers(scope, b"authorization"):
                await _reply(send, 401, b'{"error":"invalid api key"}', b"application/json")
            else:
                await _reply(send, 200, self.counter.metrics_text().encode(),
                             b"text/plain; version=0.0.4")
        elif path.startswith("/v1/") and method == "POST":
            await self._counted(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _counted(self, scope: Scope, receive: Receive, send: Send) -> None:
        usage = Usage()

        async def sending(message: Message) -> None:
            usage.feed(message)
            await send(message)

        with self.counter.request():
            await self.app(scope, receive, sending)
        self.counter.tokens(usage.prompt, usage.completion)


def _headers(scope: Scope, name: bytes) -> list[bytes]:
    return [bytes(v) for k, v in scope.get("headers") or [] if bytes(k).lower() == name]


async def _reply(send: Send, status: int, body: bytes, content_type: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class _QuietPolls(logging.Filter):
    """Leaves gpuwarden's own /health and /metrics polls out of uvicorn's access log."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        return not (len(args) > 2 and str(args[2]) in QUIET_PATHS)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # "invalid argument": what gpuwarden's crash classification calls a load error
        # (no restart), as it does for llama-server's own argument errors.
        self.exit(2, f"{self.prog}: invalid argument: {message}\n")


def main(argv: list[str] | None = None) -> int:
    """Parse llama_cpp.server's arguments, load the model, serve until stopped."""
    cli = importlib.import_module("llama_cpp.server.cli")
    settings = importlib.import_module("llama_cpp.server.settings")
    parser = _Parser(prog="llama_cpp_serve", description=__doc__.splitlines()[0])
    cli.add_args_from_model(parser, settings.Settings)
    args = parser.parse_args(argv)
    try:
        server = cli.parse_model_from_args(settings.ServerSettings, args)
        model = cli.parse_model_from_args(settings.ModelSettings, args)
    except ValueError as exc:  # pydantic's ValidationError is one
        parser.error(str(exc))
    create_app = importlib.import_module("llama_cpp.server.app").create_app
    try:
        app = create_app(server_settings=server, model_settings=[model])
    except ValueError as exc:  # llama_cpp's "Failed to load model from file: ..."
        print(f"llama_cpp_serve: {exc}", file=sys.stderr, flush=True)
        return 1
    uvicorn = importlib.import_module("uvicorn")
    logging.getLogger("uvicorn.access").addFilter(_QuietPolls())
    uvicorn.run(CountedApp(app, RequestCounter(), server.api_key),
                host=os.getenv("HOST", server.host), port=int(os.getenv("PORT", server.port)),
                ssl_keyfile=server.ssl_keyfile, ssl_certfile=server.ssl_certfile)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
