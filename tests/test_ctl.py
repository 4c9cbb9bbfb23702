"""`gpuwarden ctl` against a live control API (tests/api_rig.py), in-process, and once end
to end: a real `gpuwarden headless` found by a real `gpuwarden ctl` through api.json.
Also what ctl relies on in the API: the newest kept seq, and open streams ended by a
stopping server."""

from __future__ import annotations

import threading
import time

import httpx

from api_rig import live_api
from helpers import drive
from lifecycle_helpers import model


def test_latest_is_the_newest_kept_seq(tmp_path):
    with live_api(tmp_path, model("a", vram_mib=2000.0, load_time_s=1.0)) as api:
        kept = api.engine.events_since(0)
        first = kept[-1].seq if kept else 0
        assert api.client.get("/api/v1/events/latest").json() == {"seq": first}
        api.engine.load("a")
        drive(api.engine, api.clock, 3.0)
        newest = api.engine.events_since(0)[-1].seq
        assert newest > first
        assert api.client.get("/api/v1/events/latest").json() == {"seq": newest}


def test_a_stopping_server_ends_its_open_event_streams_at_once(tmp_path):
    with live_api(tmp_path, model("a")) as api:
        opened, ended = threading.Event(), threading.Event()

        def read() -> None:
            with api.client.stream("GET", "/api/v1/events",
                                   timeout=httpx.Timeout(10.0, read=60.0)) as reply:
                opened.set()
                for _ in reply.iter_lines():
                    pass
            ended.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        assert opened.wait(10)
        started = time.monotonic()
        api.server.stop()
        assert ended.wait(10)
        assert time.monotonic() - started < 2.0  # not the 5 s join, nor the 15 s keep-alive
