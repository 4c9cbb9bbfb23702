"""Per-model state: where a model is, how recently it was used, and what it holds.

States are frozen; the manager replaces them. Everything derived from a state (its
priority, its eviction rank) is a pure function of the state and ``now``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from gpuwarden.engine.events import CrashKind
from gpuwarden.engine.lifecycle.config import EvictionPolicy, ModelConfig, Placement

Device = Literal["unloaded", "loading", "gpu", "partial", "cpu", "stopping", "crashed"]
Priority = Literal["active", "warm", "idle", "evictable"]

LOADED: frozenset[str] = frozenset({"gpu", "partial", "cpu"})
ON_GPU: frozenset[str] = frozenset({"gpu", "partial"})
LIVE: frozenset[str] = frozenset({"loading", "gpu", "partial", "cpu", "stopping"})

# Used within this many seconds: active, whatever the idle timeout.
ACTIVE_WINDOW_S = 30.0
_PRIORITY_RANK: dict[str, int] = {"evictable": 0, "idle": 1, "warm": 2, "active": 3}


@dataclass(frozen=True)
class CrashRecord:
    ts: float
    kind: CrashKind
    exit_code: int | None = None
    signal: int | None = None


@dataclass(frozen=True)
class ModelState:
    config: ModelConfig
    device: Device = "unloaded"
    placement: Placement = "auto"  # what the next load asks for (after any downgrade)
    gpu_layers: int | None = None  # layers on the GPU while device == "partial"
    instance: int = 0  # generation of the live process; 0 = none yet
    loaded_at: float | None = None
    ready_since: float | None = None
    last_access: float | None = None
    access_count: int = 0
    in_use: int = 0
    serving: bool = False  # the server itself says it is working on a request
    vram_mib: float | None = None  # measured: what its processes hold (None: not known)
    vram_est_mib: float = 0.0  # the estimate this load was planned with
    ram_mib: float = 0.0
    consecutive_crashes: int = 0
    crashes: tuple[CrashRecord, ...] = ()
    restart_at: float | None = None
    gave_up: bool = False
    user_unloaded: bool = False
    eviction_override: EvictionPolicy | None = None
    priority_override: int | None = None
    displaced_by: str | None = None  # evicted by a swap: restore when that model idles
    home: Placement | None = None  # moved to the CPU by pressure: where it goes back to
    home_vram_mib: float = 0.0  # what it held there (measured): it needs as much to go back
    return_after: float | None = None  # not before this time
    return_wait_s: float = 0.0  # the wait before the last return (doubles when it flaps)
    returned_at: float | None = None  # when it last went back to the GPU
    waiting_for: str | None = None  # a load held until the GPU cools down: why

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def eviction(self) -> EvictionPolicy:
        return self.eviction_override or self.config.eviction

    @property
    def priority_hint(self) -> int:
        return self.config.priority if self.priority_override is None else self.priority_override

    @property
    def loaded(self) -> bool:
        return self.device in LOADED

    @property
    def on_gpu(self) -> bool:
        return self.device in ON_GPU

    @property
    def live(self) -> bool:
        """A process exists (or is being made or stopped): never start another."""
        return self.device in LIVE

    @property
    def held_vram_mib(self) -> float:
        """What it holds on the GPU: the measured figure, the estimate where none is known."""
        if not self.live:
            return 0.0
        if self.vram_mib is not None:
            return self.vram_mib
        return 0.0 if self.device == "cpu" else self.vram_est_mib


def initial_state(config: ModelConfig) -> ModelState:
    return ModelState(config=config, placement=config.placement)


def idle_for(state: ModelState, now: float) -> float:
    """Seconds since the model was last used or (re)loaded, whichever is later: a model
    the user just loaded is not idle because it was last used yesterday."""
    marks = [t for t in (state.last_access, state.ready_since) if t is not None]
    return 0.0 if not marks else max(0.0, now - max(marks))


def priority_of(state: ModelState, now: float) -> Priority:
    """active (serving, pinned or just used) > warm > idle > evictable (past its timeout)."""
    if state.in_use > 0 or state.serving or state.eviction == "never":
        return "active"
    idle = idle_for(state, now)
    if idle < ACTIVE_WINDOW_S:
        return "active"
    timeout = state.config.idle_timeout_s
    if idle >= timeout:
        return "evictable"
    return "warm" if idle < timeout / 2 else "idle"


def eviction_rank(state: ModelState, now: float) -> tuple[int, int, float]:
    """Sort key: the first model in ascending order is the first to go."""
    last = state.last_access if state.last_access is not None else (state.ready_since or 0.0)
    return (_PRIORITY_RANK[priority_of(state, now)], state.priority_hint, last)


def evictable_now(state: ModelState, now: float, *, allow_warm: bool = True) -> bool:
    """Whether relief may take this model at all: never active, in use or pinned."""
    if state.in_use > 0 or state.serving or state.eviction == "never" or not state.loaded:
        return False
    prio = priority_of(state, now)
    return prio != "active" and (allow_warm or prio != "warm")
