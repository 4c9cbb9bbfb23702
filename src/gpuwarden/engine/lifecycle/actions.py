"""What the policy decides and the manager carries out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from gpuwarden.engine.events import LoadReason, OffloadReason, UnloadReason
from gpuwarden.engine.lifecycle.config import Placement


@dataclass(frozen=True)
class Load:
    model: str
    placement: Placement
    reason: LoadReason = "user"


@dataclass(frozen=True)
class Unload:
    model: str
    reason: UnloadReason
    for_model: str | None = None  # set for a swap: who the room is for


@dataclass(frozen=True)
class Offload:
    """Move a model off the GPU onto the CPU (stop, then start on the CPU)."""

    model: str
    reason: OffloadReason


@dataclass(frozen=True)
class Return:
    """Move a model that pressure pushed onto the CPU back to where it belongs."""

    model: str
    placement: Placement


Action = Load | Unload | Offload | Return

# Why a running process is being stopped: an unload, or one of the manager's own moves.
StopReason = UnloadReason | Literal["restart", "startup_timeout", "relocate"]


@dataclass(frozen=True)
class Stopping:
    """A stop in progress and what follows once the process has exited cleanly."""

    reason: StopReason
    then: Load | None = None  # relocate: start this next
    offload: OffloadReason | None = None  # relocate to the CPU: announce model.offloaded


@dataclass(frozen=True)
class Refusal:
    """A request the manager will not carry out, with a sentence for the user."""

    model: str
    message: str
