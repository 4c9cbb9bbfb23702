"""The control API served beside the engine: uvicorn on a thread of its own, on a socket
bound here (a taken port is one clear problem, never a dead thread), with ``api.json`` in
the data folder saying where it listens so `gpuwarden ctl` finds it."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import socket
import threading
from pathlib import Path

import uvicorn

from gpuwarden.api.app import create_app
from gpuwarden.api.metrics import MetricsBook
from gpuwarden.api.stream import OpenStreams, open_streams
from gpuwarden.api.token import api_token, token_path
from gpuwarden.api.where import WHERE_FILE, Where, read_where
from gpuwarden.engine.atomic import atomic_write_text
from gpuwarden.engine.events import ConfigProblemFound
from gpuwarden.engine.facade import Engine
from gpuwarden.engine.lifecycle.config import ApiConfig

log = logging.getLogger(__name__)
__all__ = ["WHERE_FILE", "ApiServer", "Where", "is_loopback", "read_where"]


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket made as asyncio makes its own (protocol IPPROTO_TCP), so the
    connections it accepts get TCP_NODELAY: without it each answer on a kept-alive
    connection waited ~40 ms for the client's delayed ACK (Nagle)."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class ApiServer:
    def __init__(self, engine: Engine, settings: ApiConfig, folder: Path) -> None:
        self._engine, self._settings, self._folder = engine, settings, folder
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._metrics: MetricsBook | None = None
        self._streams: OpenStreams | None = None
        self.url: str | None = None

    def start(self) -> str | None:
        """Listen; the URL, or None when it cannot (said as a config problem)."""
        s = self._settings
        try:
            token = api_token(self._folder)
            sock = listen(s.host, s.port)
        except OSError as exc:
            self._problem(f"[api]: the control API is not running: cannot listen on "
                          f"{s.host}:{s.port} or keep its token in "
                          f"{token_path(self._folder)} ({exc.strerror or exc}); set another "
                          "[api] port, or enabled = false")
            return None
        if not is_loopback(s.host):
            log.warning("the control API listens on %s, not only on this machine: anyone who "
                        "can reach it and has the token controls the models", s.host)
        port = sock.getsockname()[1]
        self.url = f"http://{s.host}:{port}" if ":" not in s.host else f"http://[{s.host}]:{port}"
        self._metrics = MetricsBook(self._engine)
        app = create_app(self._engine, token, open_metrics=s.open_metrics,
                         metrics=self._metrics)
        self._streams = open_streams(app)  # before serving: stop ends them
        config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        name="api", daemon=True)
        self._thread.start()
        self._write_where()
        return self.url

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop serving (open event streams end at once); a second call does nothing."""
        if self._server is None or self._thread is None:
            return
        if self._streams is not None:  # uvicorn would wait for them to finish
            self._streams.close()
        self._server.should_exit = True
        self._thread.join(timeout_s)
        self._server = None
        if self._metrics is not None:
            self._metrics.close()
            self._metrics = None
        where = read_where(self._folder)
        if where is not None and where.pid == os.getpid():
            with contextlib.suppress(OSError):
                (self._folder / WHERE_FILE).unlink()

    def _write_where(self) -> None:
        try:
            atomic_write_text(self._folder / WHERE_FILE,
                              json.dumps({"url": self.url, "pid": os.getpid()}) + "\n")
        except OSError as exc:
            log.warning("cannot write %s (gpuwarden ctl will not find the API): %s",
                        self._folder / WHERE_FILE, exc)

    def _problem(self, message: str) -> None:
        log.warning("%s", message)
        self._engine.publish(ConfigProblemFound(message=message))
