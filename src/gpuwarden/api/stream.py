"""``GET /api/v1/events``: the engine's events as Server-Sent Events, the same JSON as
the journal, each with its ``seq`` as the event id. Resumable: ``?since=SEQ`` (or the
``Last-Event-ID`` header a reconnecting client sends) first replays the kept events after
that one, then follows live. A comment line every 15 s keeps idle connections open.
``GET /api/v1/events/latest`` is the newest kept event's seq, so a client can replay up to
it and stop. A stopping server ends its open streams (uvicorn waits for every response)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from starlette.applications import Starlette

from gpuwarden.engine.events import Event
from gpuwarden.engine.facade import Engine

KEEPALIVE_S = 15.0


class OpenStreams:
    """The event streams being served, so a stopping server can end them; once closed,
    a stream that opens ends at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ends: set[Callable[[], None]] = set()
        self._closed = False

    def add(self, end: Callable[[], None]) -> bool:
        """Keep ``end`` (any thread) to be called on close; False: closed already."""
        with self._lock:
            if not self._closed:
                self._ends.add(end)
            return not self._closed

    def discard(self, end: Callable[[], None]) -> None:
        with self._lock:
            self._ends.discard(end)

    def close(self) -> None:
        with self._lock:
            self._closed, ends = True, list(self._ends)
        for end in ends:
            end()


def open_streams(app: Starlette) -> OpenStreams:
    """``app``'s open event streams (made on first use: make it before serving)."""
    streams = getattr(app.state, "event_streams", None)
    if not isinstance(streams, OpenStreams):
        streams = app.state.event_streams = OpenStreams()
    return streams


def frame(event: Event) -> bytes:
    data = json.dumps(event.to_dict(), separators=(",", ":"), allow_nan=False)
    return f"id: {event.seq}\nevent: {event.TYPE}\ndata: {data}\n\n".encode()


def router(engine: Engine) -> APIRouter:
    api = APIRouter(prefix="/api/v1", tags=["events"])

    @api.get("/events", response_class=StreamingResponse,
             responses={200: {"content": {"text/event-stream": {}}}})
    async def events(request: Request,
                     since: int = Query(0, ge=0, description="replay the events after this "
                                        "seq (0: every kept one), then follow")
                     ) -> StreamingResponse:
        last = request.headers.get("last-event-id", "")
        start = int(last) if last.isdigit() else since
        return StreamingResponse(_follow(engine, request, start),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache",
                                          "X-Accel-Buffering": "no"})

    @api.get("/events/latest")
    def latest() -> dict[str, int]:
        """The newest kept event's seq (0: none yet): replay ``?since=`` up to it."""
        kept = engine.events_since(0)
        return {"seq": kept[-1].seq if kept else 0}

    return api


async def _follow(engine: Engine, request: Request, since: int) -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Event | None] = asyncio.Queue()  # None: the server stops

    def listener(event: Event | None) -> None:  # any thread
        loop.call_soon_threadsafe(queue.put_nowait, event)

    def end() -> None:
        listener(None)

    streams = open_streams(request.app)
    if not streams.add(end):
        return
    engine.subscribe(listener)  # first, so nothing falls between the replay and the feed
    try:
        sent = since
        for event in engine.events_since(since):
            sent = event.seq
            yield frame(event)
        while not await request.is_disconnected():
            try:
                got = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
            except TimeoutError:
                yield b": keep-alive\n\n"
                continue
            if got is None:
                return
            if got.seq > sent:
                sent = got.seq
                yield frame(got)
    finally:
        engine.unsubscribe(listener)
        streams.discard(end)
