"""Read-only views the attached window needs beyond status and models: the recent
history of every series (fetched once when it attaches) and what a load would do."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from fastapi import APIRouter, HTTPException, Query

from gpuwarden.engine.facade import Engine
from gpuwarden.engine.lifecycle.core import AdminResult


def _finite(values: Any) -> list[float | None]:
    return [float(v) if math.isfinite(v) else None for v in values.tolist()]


def router(engine: Engine) -> APIRouter:
    api = APIRouter(prefix="/api/v1", tags=["views"])

    @api.get("/history")
    def history(since: float | None = Query(None, description="unix seconds; none: all kept")
                ) -> dict[str, Any]:
        """Every recorded series, oldest first (null where a reading was n/a)."""
        frame = engine.history(since=since)
        return {"t": _finite(frame.t),
                "series": {key: _finite(values) for key, values in frame.series.items()}}

    @api.get("/models/{name}/load-preview", responses={404: {"description": "no such model"},
                                                         409: {"description": "cannot load"}})
    def load_preview(name: str) -> dict[str, Any]:
        """What a load would do now: fits whole, whom a swap would unload, the layers that
        fit without moving anything."""
        if engine.model(name) is None:
            raise HTTPException(404, f"no model named {name!r}")
        found = engine.load_preview(name)
        if isinstance(found, AdminResult):
            raise HTTPException(409, found.message)
        return dataclasses.asdict(found)

    @api.get("/models/{name}/details", responses={404: {"description": "no such model"}})
    def details(name: str) -> dict[str, Any]:
        """What the panel's details show: settings and where each came from, history,
        crashes, and the end of its log (with the log's path on this machine)."""
        found = engine.details(name)
        if found is None:
            raise HTTPException(404, f"no model named {name!r}")
        out = dataclasses.asdict(found)
        out["log_path"] = str(found.log_path) if found.log_path is not None else None
        return out

    return api
