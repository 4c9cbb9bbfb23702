"""The real llama-cpp-python server (gpuwarden's worker around it) for tests: whether it
is installed, a model config for it, and requests as any client would send them."""

from __future__ import annotations

import http.client
import importlib.util
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpuwarden.engine.lifecycle.config import ModelConfig
from gpuwarden.engine.supervisor.llama_cpp_python import NEEDED

THE = 260  # the token "▁the" in tests/gguf_factory.py's vocabulary


def require_llama_cpp() -> None:
    """Skip when llama-cpp-python with its server extra is not installed; in CI (where
    `make test` installs it) that is a failure."""
    missing = [name for name in NEEDED if importlib.util.find_spec(name) is None]
    if missing:
        message = (f"llama-cpp-python[server] is not installed (no {', '.join(missing)}): "
                   "run `gpuwarden setup llama-cpp-python` (make test does)")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def llama_cpp(name: str, path: Path, **kw: object) -> ModelConfig:
    """A llama-cpp model on the CPU with one thread (the machine is shared)."""
    base: dict[str, object] = {"backend": "llama-cpp", "path": path, "placement": "cpu",
                               "context_size": 256, "threads": 1}
    base.update(kw)
    return ModelConfig(name=name, **base)  # type: ignore[arg-type]


def post(port: int, key: str, path: str, body: dict[str, object]) -> http.client.HTTPResponse:
    """POST ``body`` as JSON with the API key; the response is left open for reading."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("POST", path, json.dumps(body),
                 {"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    return conn.getresponse()


def complete(port: int, key: str, tokens: int = 2) -> dict[str, object]:
    response = post(port, key, "/v1/completions", {"prompt": "hello", "max_tokens": tokens})
    assert response.status == 200, response.read()
    return json.loads(response.read())  # type: ignore[no-any-return]


class StreamedCompletion:
    """A streamed completion on a socket of its own, so the test decides when the server
    has the whole request (``hold_last_byte``) and how fast the answer is read
    (``small_window``: a client that reads nothing holds the server back once the
    answer outgrows the socket buffers; ``logprobs`` makes each event a few KiB)."""

    def __init__(self, port: int, key: str, tokens: int, *, logprobs: int | None = None,
                 small_window: bool = False) -> None:
        body: dict[str, object] = {"prompt": "hello", "max_tokens": tokens, "stream": True,
                                   "logit_bias": {str(THE): 100.0}}
        if logprobs is not None:
            body["logprobs"] = logprobs
        self._body = json.dumps(body).encode()
        self._head = (f"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
                      f"Content-Length: {len(self._body)}\r\n\r\n").encode()
        self.sock = socket.socket()
        if small_window:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.settimeout(60)
        self.sock.connect(("127.0.0.1", port))
        self._response: http.client.HTTPResponse | None = None

    def send(self, *, hold_last_byte: bool = False) -> None:
        self.sock.sendall(self._head + (self._body[:-1] if hold_last_byte else self._body))

    def send_last_byte(self) -> None:
        self.sock.sendall(self._body[-1:])

    def events(self) -> Iterator[bytes]:
        """Each event's data, read as it comes (``[DONE]`` last)."""
        if self._response is None:
            self._response = http.client.HTTPResponse(self.sock)
            self._response.begin()
            assert self._response.status == 200, self._response.read()
        for line in self._response:
            if line.startswith(b"data: "):
                yield line[len(b"data: "):].strip()

    def read_faster(self) -> None:
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)

    def close(self) -> None:
        if self._response is not None:
            self._response.close()
        self.sock.close()
