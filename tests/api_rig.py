"""A live control API for tests: an engine on simulated GPUs and a fake clock (driven by
the test), served by the real ApiServer (uvicorn, a free port) and asked with httpx."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from gpuwarden.api.server import ApiServer
from gpuwarden.api.token import read_token
from gpuwarden.engine.clock import FakeClock
from gpuwarden.engine.events import Event
from gpuwarden.engine.facade import Engine
from gpuwarden.engine.lifecycle.config import ApiConfig
from test_engine_facade import engine_for


@dataclass
class LiveApi:
    engine: Engine
    clock: FakeClock
    events: list[Event]
    server: ApiServer
    url: str
    token: str
    client: httpx.Client  # carries the token
    folder: Path

    def anonymous(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10)


@contextmanager
def live_api(tmp_path: Path, *models: object, open_metrics: bool = False,
             start: bool = True) -> Iterator[LiveApi]:
    engine, clock, events = engine_for(*models, tmp_path=tmp_path, start=start)
    folder = tmp_path / "data"
    server = ApiServer(engine, ApiConfig(port=0, open_metrics=open_metrics), folder)
    url = server.start()
    assert url is not None, [e.to_dict() for e in events]
    token = read_token(folder)
    client = httpx.Client(base_url=url, timeout=10,
                          headers={"Authorization": f"Bearer {token}"})
    try:
        yield LiveApi(engine, clock, events, server, url, token, client, folder)
    finally:
        client.close()
        server.stop()
        engine.close()
