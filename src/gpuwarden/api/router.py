"""The OpenAI-compatible router: ``POST /v1/chat/completions``, ``/v1/completions`` and
``/v1/embeddings`` go to the server of the model the body names (``"model"``), loaded
first when it is not (:mod:`.on_demand`); ``GET /v1/models`` lists the text models.

A streamed answer (``text/event-stream``) is relayed chunk by chunk as it comes; any
other answer once the model's server has sent it whole (about 0.4 ms less per request);
both with the server's status and content type. While a request is in flight its model is in
use: nothing evicts it, and the request counts as use of the model. Refusals are
OpenAI's shape, ``{"error": {"message", "type", "code"}}``."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import AbstractContextManager
from typing import Any

import anyio
import httpx
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.background import BackgroundTask

from gpuwarden.api.on_demand import OnDemand, Unavailable
from gpuwarden.engine.facade import Engine
from gpuwarden.engine.views import TEXT_BACKENDS

log = logging.getLogger(__name__)

PREFIX = "/v1"
ROUTES = ("/chat/completions", "/completions", "/embeddings")
MAX_BODY_BYTES = 16 * 1024 * 1024  # a long prompt; the control API's own limit is 64 KiB
# No read time-out: a long prompt may take minutes before its first token, and a server
# that hangs is found and ended by gpuwarden (the answer then ends).
TIMEOUT = httpx.Timeout(connect=10.0, read=None, write=60.0, pool=None)
FORWARDED = ("content-type", "accept")

BODY_DOC: dict[str, Any] = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": {"type": "object", "required": ["model"], "additionalProperties": True,
               "properties": {"model": {"type": "string"}}}}}}}
ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {"description": "the model server's answer, as it sends it",
          "content": {"application/json": {}, "text/event-stream": {}}},
    400: {"description": "the body is not a JSON object naming a model"},
    404: {"description": "no text model of that name"},
    413: {"description": "a body over 16 MiB"},
    502: {"description": "the model's server could not be reached"},
    503: {"description": "the model could not be loaded or made ready, and why"}}


class Refusal(Exception):
    def __init__(self, status: int, message: str, kind: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.code = status, message, kind, code

    def reply(self) -> JSONResponse:
        return JSONResponse({"error": {"message": self.message, "type": self.kind,
                                       "code": self.code}}, status_code=self.status)


def router(engine: Engine) -> APIRouter:
    api = APIRouter(prefix=PREFIX, tags=["router"])
    relay = Relay(engine)
    started = int(time.time())

    @api.get("/models")
    def models() -> dict[str, Any]:
        """The text models, OpenAI's list; ``gpuwarden`` holds each one's row (state,
        device, VRAM ...) as ``/api/v1/models`` shows it."""
        return {"object": "list", "data": [
            {"id": row.name, "object": "model", "created": started, "owned_by": "gpuwarden",
             "gpuwarden": row.to_dict()}
            for row in engine.models() if row.backend in TEXT_BACKENDS]}

    for route in ROUTES:
        api.add_api_route(route, relay.forward, methods=["POST"], response_class=Response,
                          responses=ANSWERS, openapi_extra=BODY_DOC,
                          summary=f"Forward to the named model's server ({route})")
    return api


class Relay:
    """Forwards one request to its model's server and its answer back."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._on_demand = OnDemand(engine)
        self._client: httpx.AsyncClient | None = None

    async def forward(self, request: Request) -> Response:
        try:
            body = await _body(request)
            name = _model_name(body)
            found = self._engine.config.model(name)  # not a row: those cost its pids
            if found is None or found.backend not in TEXT_BACKENDS:
                raise Refusal(404, _unknown(name, found is not None),
                              "invalid_request_error", "model_not_found")
            hold = self._hold(name)
        except Refusal as refusal:
            return refusal.reply()
        held = Held(hold)
        try:
            upstream = await self._send(request, name, body)
        except Refusal as refusal:
            held.release()
            return refusal.reply()
        except BaseException:
            held.release()
            raise
        held.upstream = upstream
        if not upstream.headers.get("content-type", "").startswith("text/event-stream"):
            return await held.whole(name)
        return StreamingResponse(
            held.chunks(name), status_code=upstream.status_code,
            headers=_answer_headers(upstream), background=BackgroundTask(held.close))

    def _hold(self, name: str) -> AbstractContextManager[None]:
        hold = self._engine.in_use(name)  # counts as use: the idle clock starts again
        try:
            hold.__enter__()
        except KeyError:  # removed from the config a moment ago
            raise Refusal(404, _unknown(name, False), "invalid_request_error",
                          "model_not_found") from None
        return hold

    async def _send(self, request: Request, name: str, body: bytes) -> httpx.Response:
        try:
            base, key = await self._on_demand.endpoint(name)
        except Unavailable as exc:
            raise Refusal(503, str(exc), "model_unavailable") from None
        headers = {k: v for k, v in request.headers.items() if k in FORWARDED}
        headers["accept-encoding"] = "identity"  # relayed as it comes, never re-encoded
        if key:
            headers["authorization"] = f"Bearer {key}"
        client = self._http()
        url = f"{base}{request.url.path}"
        if request.url.query:
            url += f"?{request.url.query}"
        outgoing = client.build_request("POST", url, content=body, headers=headers)
        try:
            return await client.send(outgoing, stream=True)
        except httpx.TransportError as exc:
            log.warning("router: %s's server at %s did not answer: %r", name, base, exc)
            raise Refusal(502, f"{name}'s server did not answer ({type(exc).__name__})",
                          "upstream_error") from None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:  # made in the server's event loop, on first use
            self._client = httpx.AsyncClient(
                timeout=TIMEOUT, limits=httpx.Limits(max_connections=None,
                                                     max_keepalive_connections=64))
        return self._client


class Held:
    """A forwarded request's hold on its model and its open answer; released once, when
    the answer has been relayed, the caller went away, or it failed."""

    def __init__(self, hold: AbstractContextManager[None]) -> None:
        self._hold: AbstractContextManager[None] | None = hold
        self.upstream: httpx.Response | None = None

    async def whole(self, name: str) -> Response:
        upstream = self.upstream
        assert upstream is not None
        try:
            content = await upstream.aread()
        except httpx.HTTPError as exc:
            log.warning("router: %s's answer ended early: %r", name, exc)
            return Refusal(502, f"{name}'s server stopped before its answer was complete",
                           "upstream_error").reply()
        finally:
            await self.close()
        return Response(content, status_code=upstream.status_code,
                        headers=_answer_headers(upstream))

    async def chunks(self, name: str) -> AsyncIterator[bytes]:
        assert self.upstream is not None
        try:
            async for chunk in self.upstream.aiter_raw():
                yield chunk
        except httpx.HTTPError as exc:  # the model's server went away mid-answer
            log.warning("router: %s's answer ended early: %r", name, exc)
        finally:
            await self.close()

    def release(self) -> None:
        hold, self._hold = self._hold, None
        if hold is None:
            return
        try:
            hold.__exit__(None, None, None)
        except KeyError:  # the model was removed from the config while it answered
            log.info("router: a model left the config while it answered a request")

    async def close(self) -> None:
        self.release()
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            with anyio.CancelScope(shield=True):  # also when the caller went away
                await upstream.aclose()


async def _body(request: Request) -> bytes:
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_BODY_BYTES:
        raise _too_large()
    parts: list[bytes] = []
    size = 0
    async for part in request.stream():
        size += len(part)
        if size > MAX_BODY_BYTES:
            raise _too_large()
        parts.append(part)
    return b"".join(parts)


def _model_name(body: bytes) -> str:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise Refusal(400, "the body must be JSON", "invalid_request_error") from None
    if not isinstance(data, dict):
        raise Refusal(400, "the body must be a JSON object", "invalid_request_error")
    name = data.get("model")
    if not isinstance(name, str) or not name:
        raise Refusal(400, "the body must name a model: \"model\": \"NAME\"",
                      "invalid_request_error", "model")
    return name


def _unknown(name: str, exists: bool) -> str:
    if exists:
        return f"{name} does not serve an OpenAI-compatible API (its backend is not " \
               f"{', '.join(sorted(TEXT_BACKENDS))})"
    return f"no model named {name!r}"


def _too_large() -> Refusal:
    return Refusal(413, f"the request body must be at most {MAX_BODY_BYTES // 2**20} MiB",
                   "invalid_request_error")


def _answer_headers(upstream: httpx.Response) -> dict[str, str]:
    headers = {}
    if (kind := upstream.headers.get("content-type")) is not None:
        headers["content-type"] = kind
    return headers


