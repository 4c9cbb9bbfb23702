"""How a model is actually started and stopped: the interface every backend implements.

The lifecycle manager never knows whether a model is a llama-server process, an
in-process llama-cpp model or a simulation: it calls these methods and hears back
through the callbacks, from any thread.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from gpuwarden.engine.lifecycle.config import ModelConfig
from gpuwarden.engine.lifecycle.crash import DeathReport


@dataclass(frozen=True)
class Launch:
    """What to start: the model, where, and which generation this process is."""

    config: ModelConfig
    device: str  # "gpu" | "partial" | "cpu"
    gpu_layers: int  # 0 on the CPU, config.layers on the full GPU
    instance: int
    throttle: float = 0.0  # 0..1 from the safety verdict: start with less parallel work
    gpu_uuid: str | None = None  # the GPU it runs on (None: not known, or on the CPU)


@dataclass(frozen=True)
class Footprint:
    vram_mib: float
    ram_mib: float
    on_gpu: bool | None = None  # None: on the GPU when it holds VRAM (the simulation)


ReadyCallback = Callable[[int, Footprint], None]  # (instance, what it holds)
ExitCallback = Callable[[DeathReport], None]
# (instance, used since the last report, serving a request now): real use seen by the
# server itself, from any client.
ActivityCallback = Callable[[int, bool, bool], None]


class Backend(Protocol):
    kind: str
    can_offload: bool

    def start(self, launch: Launch, on_ready: ReadyCallback, on_exit: ExitCallback,
              on_activity: ActivityCallback | None = None) -> None:
        """Begin loading. Exactly one of on_ready / on_exit follows, then on_exit once the
        process ends (expected=True after :meth:`stop`)."""
        ...

    def stop(self, model: str, instance: int) -> None:
        """Ask the process to end; on_exit(expected=True) follows."""
        ...

    def poll(self, now: float) -> None:
        """Advance time-driven work (the simulated backend); real backends do nothing."""
        ...

    def next_due(self) -> float | None:
        """When (wall clock) :meth:`poll` next has work; None: never (real backends)."""
        ...

    def pids(self, model: str) -> tuple[int, ...]:
        """The processes that run ``model`` now (for measured VRAM); () when none."""
        ...


@runtime_checkable
class MovesInPlace(Protocol):
    """A backend whose running process can move its model between GPU and CPU without a
    restart (the torch worker). The lifecycle asks :meth:`can_move` first and otherwise
    stops and starts the model as for any backend."""

    def can_move(self, model: str, device: str, gpu_uuid: str | None) -> bool:
        """Whether ``model``'s running process can go to ``device`` ("gpu", "partial",
        "cpu") on the GPU ``gpu_uuid`` in place now."""
        ...

    def move(self, launch: Launch, on_ready: ReadyCallback, on_exit: ExitCallback,
             on_activity: ActivityCallback | None = None) -> None:
        """Move the running process to ``launch``'s device; it becomes ``launch.instance``.
        Exactly one of on_ready (moved) / on_exit (it died trying) follows."""
        ...
