"""``GET /api/v1/events``: the engine's events as Server-Sent Events, the same JSON as
the journal, each with its ``seq`` as the event id. Resumable: ``?since=SEQ`` (or the
``Last-Event-ID`` header a reconnecting client sends) first replays the kept events after
that one, then follows live. A comment line every 15 s keeps idle connections open."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from gpuwarden.engine.events import Event
from gpuwarden.engine.facade import Engine

KEEPALIVE_S = 15.0


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

    return api


async def _follow(engine: Engine, request: Request, since: int) -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Event] = asyncio.Queue()

    def listener(event: Event) -> None:  # any thread
        loop.call_soon_threadsafe(queue.put_nowait, event)

    engine.subscribe(listener)  # first, so nothing falls between the replay and the feed
    try:
        sent = since
        for event in engine.events_since(since):
            sent = event.seq
            yield frame(event)
        while not await request.is_disconnected():
            try:
                event = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
            except TimeoutError:
                yield b": keep-alive\n\n"
                continue
            if event.seq > sent:
                sent = event.seq
                yield frame(event)
    finally:
        engine.unsubscribe(listener)
