"""The control API's ASGI app (FastAPI): who may ask (a bearer token), what bad input
gets (a 4xx with a JSON error, never a 500), and the read-only routes: probes, status,
models. The model actions are in :mod:`.actions`, the event stream in :mod:`.stream`,
the Prometheus text in :mod:`.metrics`."""

from __future__ import annotations

import dataclasses
import hmac
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from gpuwarden import __version__
from gpuwarden.api import actions, router, stream, views
from gpuwarden.api.metrics import MetricsBook
from gpuwarden.engine.facade import Engine

MAX_BODY_BYTES = 64 * 1024  # every request body this API takes is a few bytes of JSON
PREFIX = "/api/v1"


def error(status: int, message: str, kind: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind}}, status_code=status)


def create_app(engine: Engine, token: str, *, open_metrics: bool = False,
               metrics: MetricsBook | None = None) -> FastAPI:
    """The API over ``engine``; ``open_metrics``: /metrics and the probes need no token."""
    app = FastAPI(title="gpuwarden control API", version=__version__,
                  openapi_url=f"{PREFIX}/openapi.json", docs_url=None, redoc_url=None)
    expected = f"Bearer {token}".encode()

    def check(request: Request) -> None:
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            raise HTTPException(401, "unauthorized")

    # async: FastAPI runs a plain def dependency on a worker thread, a hop per request
    async def authorised(request: Request) -> None:
        check(request)

    async def probe_guard(request: Request) -> None:
        if not open_metrics:
            check(request)

    _errors(app)
    app.add_middleware(BodyLimit)
    book = metrics or MetricsBook(engine)
    guarded = [Depends(authorised)]

    @app.get("/livez", dependencies=[Depends(probe_guard)], tags=["probes"])
    def livez() -> dict[str, str]:
        """Alive: the API answers."""
        return {"status": "alive"}

    @app.get("/readyz", dependencies=[Depends(probe_guard)], tags=["probes"],
             responses={503: {"description": "not started, or no usable config yet"}})
    def readyz() -> JSONResponse:
        """Ready: the engine runs on a config file it could read."""
        ready = engine.ready
        return JSONResponse({"status": "ready" if ready else "not ready"},
                            status_code=200 if ready else 503)

    @app.get("/metrics", dependencies=[Depends(probe_guard)], tags=["probes"],
             response_class=Response)
    def prometheus() -> Response:
        """GPUs, host, models and event counters in Prometheus' text format."""
        body, content_type = book.render()
        return Response(body, media_type=content_type)

    @app.get(f"{PREFIX}/status", dependencies=guarded, tags=["status"])
    def status() -> dict[str, Any]:
        """The last sample (GPUs, host) and the safety verdicts."""
        snap = engine.snapshot()
        return {"version": __version__, "ready": engine.ready,
                "automation_paused": engine.automation_paused,
                "snapshot": snap.to_dict() if snap is not None else None,
                "verdicts": {k: dataclasses.asdict(v) for k, v in engine.verdicts().items()}}

    @app.get(f"{PREFIX}/models", dependencies=guarded, tags=["models"])
    def models() -> list[dict[str, Any]]:
        """Every configured model, as the panel's table shows it."""
        return [row.to_dict() for row in engine.models()]

    @app.get(f"{PREFIX}/models/{{name}}", dependencies=guarded, tags=["models"],
             responses={404: {"description": "no such model"}})
    def model(name: str) -> dict[str, Any]:
        row = engine.model(name)
        if row is None:
            raise HTTPException(404, f"no model named {name!r}")
        return row.to_dict()

    app.include_router(actions.router(engine), dependencies=guarded)
    app.include_router(stream.router(engine), dependencies=guarded)
    app.include_router(views.router(engine), dependencies=guarded)
    app.include_router(router.router(engine), dependencies=guarded)  # /v1: OpenAI's API
    return app


def _errors(app: FastAPI) -> None:
    """Every refusal as ``{"error": {"message", "type"}}``; a 401 says nothing more."""

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kinds = {401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
                 409: "refused", 413: "too_large"}
        kind = kinds.get(exc.status_code, "invalid_request")
        message = "unauthorized" if exc.status_code == 401 else str(exc.detail)
        return error(exc.status_code, message, kind)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        message = f"{where}: {first.get('msg', 'invalid')}" if where else \
            str(first.get("msg", "invalid request"))
        return error(422, message, "invalid_request")


class BodyLimit:
    """A request body over MAX_BODY_BYTES (by its Content-Length) is a 413 before any of it
    is read; the router's prompts have a limit of their own. Plain ASGI: Starlette's
    ``BaseHTTPMiddleware`` cost 0.2-0.4 ms on every request, the router's included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope["path"].startswith(f"{router.PREFIX}/"):
            length = Headers(scope=scope).get("content-length")
            if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
                reply = error(413, f"the request body must be at most {MAX_BODY_BYTES} bytes",
                              "too_large")
                await reply(scope, receive, send)
                return
        await self.app(scope, receive, send)
