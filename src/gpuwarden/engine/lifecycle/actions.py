"""What the policy decides and the manager carries out."""

from __future__ import annotations

from dataclasses import dataclass

from gpuwarden.engine.lifecycle.config import Placement


@dataclass(frozen=True)
class Load:
    model: str
    placement: Placement
    reason: str = "user"  # user | autostart | restart | restore | swap


@dataclass(frozen=True)
class Unload:
    model: str
    reason: str  # user | idle | pressure | swap | safety | shutdown
    for_model: str | None = None  # set for a swap: who the room is for


@dataclass(frozen=True)
class Offload:
    model: str
    reason: str  # pressure | user


Action = Load | Unload | Offload


@dataclass(frozen=True)
class Refusal:
    """A request the manager will not carry out, with a sentence for the user."""

    model: str
    message: str
