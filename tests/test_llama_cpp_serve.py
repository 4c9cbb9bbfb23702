"""The llama-cpp-python worker's ASGI wrapper, driven with plain ASGI messages (no
llama_cpp needed): what it answers itself, and what it counts as use."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable

from gpuwarden.engine.supervisor.http import parse_metrics
from gpuwarden.workers.activity import RequestCounter
from gpuwarden.workers.llama_cpp_serve import CountedApp, Message, Scope, _QuietPolls

KEY = "secret"


def scope(method: str, path: str, key: str | None = KEY) -> Scope:
    headers = [(b"authorization", f"Bearer {key}".encode())] if key else []
    return {"type": "http", "method": method, "path": path, "headers": headers}


def start(ctype: bytes) -> Message:
    return {"type": "http.response.start", "status": 200,
            "headers": [(b"content-type", ctype)]}


def body(data: bytes, more: bool = False) -> Message:
    return {"type": "http.response.body", "body": data, "more_body": more}


class Inner:
    """llama_cpp.server's app as the wrapper sees it: sends the given messages, and can
    wait (mid-answer) until the test lets it go on."""

    def __init__(self, *messages: Message) -> None:
        self.messages = messages
        self.called: list[str] = []
        self.gate: asyncio.Event | None = None
        self.midway: asyncio.Event | None = None

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Message]],
                       send: Callable[[Message], Awaitable[None]]) -> None:
        self.called.append(scope["path"])
        for i, message in enumerate(self.messages):
            await send(message)
            if i == 1 and self.gate is not None and self.midway is not None:
                self.midway.set()
                await self.gate.wait()


async def call(app: CountedApp, s: Scope) -> list[Message]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(s, receive, send)
    return sent


def metrics(counter: RequestCounter) -> dict[str, float]:
    return parse_metrics(counter.metrics_text())


def test_health_answers_without_the_model_and_without_a_key():
    inner = Inner()
    sent = asyncio.run(call(CountedApp(inner, RequestCounter(), KEY),
                            scope("GET", "/health", key=None)))
    assert sent[0]["status"] == 200 and inner.called == []


def test_metrics_need_the_key_and_show_the_counters():
    counter = RequestCounter()
    app = CountedApp(Inner(), counter, KEY)
    assert asyncio.run(call(app, scope("GET", "/metrics", key="wrong")))[0]["status"] == 401
    sent = asyncio.run(call(app, scope("GET", "/metrics")))
    assert sent[0]["status"] == 200
    assert parse_metrics(sent[1]["body"].decode())["requests_processing"] == 0


def test_a_completion_counts_as_use_with_the_tokens_of_its_usage():
    answer = json.dumps({"choices": [], "usage": {"prompt_tokens": 5,
                                                   "completion_tokens": 3}}).encode()
    counter = RequestCounter()
    inner = Inner(start(b"application/json"), body(answer[:10], more=True), body(answer[10:]))
    sent = asyncio.run(call(CountedApp(inner, counter, KEY), scope("POST", "/v1/completions")))
    assert b"".join(m.get("body", b"") for m in sent) == answer  # passed through unchanged
    m = metrics(counter)
    assert (m["n_decode_total"], m["prompt_tokens_total"], m["tokens_predicted_total"]) == \
        (1, 5, 3)


def test_a_streamed_answer_is_in_flight_until_its_last_event_is_sent():
    events = [b'data: {"choices": [{"text": "a"}]}\n\n',
              b'data: {"choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 7}}'
              b'\n\ndata: [DONE]\n\n']
    counter = RequestCounter()
    inner = Inner(start(b"text/event-stream; charset=utf-8"), body(events[0], more=True),
                  body(events[1]))
    seen: dict[str, float] = {}

    async def scenario() -> None:
        inner.gate, inner.midway = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(call(CountedApp(inner, counter, KEY),
                                        scope("POST", "/v1/chat/completions")))
        await inner.midway.wait()
        seen.update(metrics(counter))
        inner.gate.set()
        await task

    asyncio.run(scenario())
    assert seen["requests_processing"] == 1 and seen["n_decode_total"] == 0
    m = metrics(counter)
    assert (m["requests_processing"], m["n_decode_total"]) == (0, 1)
    assert (m["prompt_tokens_total"], m["tokens_predicted_total"]) == (2, 7)


def test_an_answer_without_usage_still_counts_as_a_request():
    counter = RequestCounter()
    inner = Inner(start(b"application/json"), body(b"not json at all"))
    asyncio.run(call(CountedApp(inner, counter, KEY), scope("POST", "/v1/embeddings")))
    m = metrics(counter)
    assert (m["n_decode_total"], m["tokens_predicted_total"]) == (1, 0)


def test_listing_the_models_and_other_pages_are_not_use():
    counter = RequestCounter()
    inner = Inner(start(b"application/json"), body(b"{}"))
    app = CountedApp(inner, counter, KEY)
    for s in (scope("GET", "/v1/models"), scope("GET", "/docs"),
              scope("POST", "/extras/tokenize")):
        asyncio.run(call(app, s))
    assert inner.called == ["/v1/models", "/docs", "/extras/tokenize"]
    assert metrics(counter)["n_decode_total"] == 0


def test_the_access_log_leaves_out_gpuwardens_own_polls():
    def record(path: str) -> logging.LogRecord:
        return logging.LogRecord("uvicorn.access", logging.INFO, "", 0,
                                 '%s - "%s %s HTTP/%s" %d', ("1.2.3.4:5", "GET", path, "1.1",
                                                              200), None)

    quiet = _QuietPolls()
    assert not quiet.filter(record("/health")) and not quiet.filter(record("/metrics"))
    assert quiet.filter(record("/v1/completions"))
