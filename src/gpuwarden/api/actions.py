"""The model actions over HTTP, answering as the panel's commands do: done (200) or
refused and why (409), ``{"ok": ..., "message": ...}``; an unknown model is a 404."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from gpuwarden.engine.facade import Engine
from gpuwarden.engine.lifecycle.core import AdminResult

PREFIX = "/api/v1"


class Result(BaseModel):
    ok: bool
    message: str


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoadBody(_Body):
    how: Literal["auto", "swap", "partial"] = Field(
        default="auto", description="auto: as the pre-flight allows; swap: unload what is in the "
                            "way and load it whole; partial: as many layers as fit")


class PolicyBody(_Body):
    eviction: Literal["idle", "pressure", "never"] | None = Field(
        ..., description="null: back to the config's")


class PriorityBody(_Body):
    priority: int | None = Field(..., ge=-1000, le=1000, description="null: the config's")


class StopBody(_Body):
    gpu: int | None = Field(default=None, ge=0, le=63, description="null: every GPU")


class PauseBody(_Body):
    paused: bool


REFUSED: dict[int | str, dict[str, Any]] = {
    409: {"model": Result, "description": "refused, and why"},
    404: {"description": "no such model"}}


def router(engine: Engine) -> APIRouter:
    api = APIRouter(prefix=PREFIX, tags=["actions"])

    def answer(name: str, do: Callable[[], AdminResult]) -> Result:
        if name and engine.model(name) is None:
            raise HTTPException(404, f"no model named {name!r}")
        result = do()
        if not result.ok:
            raise HTTPException(409, result.message)
        return Result(ok=True, message=result.message)

    @api.post("/models/{name}/load", responses=REFUSED)
    def load(name: str, body: LoadBody | None = None) -> Result:
        """Load it (the pre-flight and the safety verdict decide as for the panel)."""
        return answer(name, lambda: engine.load(name, (body or LoadBody()).how))

    @api.post("/models/{name}/unload", responses=REFUSED)
    def unload(name: str) -> Result:
        return answer(name, lambda: engine.unload(name))

    @api.post("/models/{name}/offload", responses=REFUSED)
    def offload(name: str) -> Result:
        """Move it to the CPU (it stays there until told otherwise)."""
        return answer(name, lambda: engine.offload(name))

    @api.post("/models/{name}/restart", responses=REFUSED)
    def restart(name: str) -> Result:
        return answer(name, lambda: engine.restart(name))

    @api.put("/models/{name}/policy", responses=REFUSED)
    def policy(name: str, body: PolicyBody) -> Result:
        """Its eviction policy, for this run."""
        return answer(name, lambda: engine.set_policy(name, body.eviction))

    @api.put("/models/{name}/priority", responses=REFUSED)
    def priority(name: str, body: PriorityBody) -> Result:
        """Its priority, for this run."""
        return answer(name, lambda: engine.set_priority(name, body.priority))

    @api.post("/emergency-stop", responses=REFUSED)
    def emergency_stop(body: StopBody | None = None) -> Result:
        """Stop every model on one GPU (or all) at once, as the safety limits do."""
        return answer("", lambda: engine.emergency_stop((body or StopBody()).gpu))

    @api.put("/automation", responses=REFUSED)
    def automation(body: PauseBody) -> Result:
        """Pause or resume what the engine does on its own (idle unloads, pressure relief,
        restarts); the safety limits act as always."""
        return answer("", lambda: engine.pause_automation(body.paused))

    return api
