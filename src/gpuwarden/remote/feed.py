"""The attached window's event feed: one thread reading the remote's Server-Sent Events
(``GET /api/v1/events``), decoded into events, handed to a callback; when the stream
breaks it connects again after 1, 2, 4 ... 10 s, resuming after the last ``seq`` seen, so
nothing is lost or shown twice while the remote keeps it."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable

import httpx

from gpuwarden.engine.events import Event
from gpuwarden.remote import decode

log = logging.getLogger(__name__)
RETRY_CAP_S = 10.0


class EventFeed:
    def __init__(self, client: httpx.Client, deliver: Callable[[Event], None],
                 since: int = 0) -> None:
        self._client, self._deliver = client, deliver
        self.last_seq = since
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="remote-events", daemon=True)
        self.connected = threading.Event()  # set while a stream is open

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _run(self) -> None:
        wait = 1.0
        while not self._stop.is_set():
            try:
                self._read()
                wait = 1.0
            except (httpx.HTTPError, decode.Undecodable, ValueError) as exc:
                log.info("the event stream broke (%s); again in %.0f s", exc, wait)
            self.connected.clear()
            if self._stop.wait(wait):
                return
            wait = min(RETRY_CAP_S, wait * 2)

    def _read(self) -> None:
        timeout = httpx.Timeout(5.0, read=60.0)  # the remote sends a keep-alive every 15 s
        with self._client.stream("GET", f"/api/v1/events?since={self.last_seq}",
                                 timeout=timeout) as reply:
            reply.raise_for_status()
            self.connected.set()
            for line in reply.iter_lines():
                if self._stop.is_set():
                    return
                if not line.startswith("data: "):
                    continue
                data = json.loads(line[6:])
                try:
                    event = decode.event(data)
                except decode.Undecodable:
                    log.debug("skipped an event of another version: %s", data.get("type"))
                    self.last_seq = max(self.last_seq, int(data.get("seq", 0)))
                    continue
                if event.seq > self.last_seq:
                    self.last_seq = event.seq
                    self._deliver(event)
