"""The lifecycle manager's state and the small helpers every part of it uses.

The manager is split by responsibility: :mod:`core` carries out actions (starts, stops,
moves, due restarts), :mod:`reports` handles what the backends report (ready, used,
exited), :mod:`guarding` applies the safety limits and the pre-flight of restarts, and
:mod:`manager` answers requests. Everything runs inside :meth:`CoreState._locked`: the
lock is held and the events published meanwhile are delivered once it is released.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace

from gpuwarden.engine.clock import Clock
from gpuwarden.engine.events import EventBus
from gpuwarden.engine.lifecycle import policy
from gpuwarden.engine.lifecycle.actions import Load, Stopping
from gpuwarden.engine.lifecycle.backend import (
    ActivityCallback,
    Backend,
    ExitCallback,
    Launch,
    ReadyCallback,
)
from gpuwarden.engine.lifecycle.config import Config, ModelConfig
from gpuwarden.engine.lifecycle.estimate import estimate_vram_mib, free_vram_mib
from gpuwarden.engine.lifecycle.hint_keeper import HintKeeper
from gpuwarden.engine.lifecycle.hints import HintStore
from gpuwarden.engine.lifecycle.planning import Planner
from gpuwarden.engine.lifecycle.pressure_monitor import PressureMonitor
from gpuwarden.engine.lifecycle.safety_guard import Held
from gpuwarden.engine.lifecycle.state import ModelState, initial_state
from gpuwarden.engine.safety.verdict import SafetyMonitor
from gpuwarden.engine.telemetry.snapshot import Snapshot

MAX_CRASH_HISTORY = 20
RETURN_WAIT_CAP_S = 3600.0
FLAP_WINDOW_S = 300.0  # moved off again this soon after going back: wait twice as long
Attach = Callable[[Launch, ReadyCallback, ExitCallback, ActivityCallback], None]
Measure = Callable[[Collection[int]], float | None]  # VRAM the pids hold now, or unknown


@dataclass(frozen=True)
class AdminResult:
    """The answer to a user's command: done, or refused and why."""

    ok: bool
    message: str


class CoreState:
    def __init__(
        self,
        config: Config,
        backends: Mapping[str, Backend],
        *,
        bus: EventBus,
        clock: Clock,
        estimate: policy.Estimate = estimate_vram_mib,
        hints: HintStore | None = None,
        measure: Measure | None = None,
        planner: Planner | None = None,
    ) -> None:
        self._cfg = config
        self._backends = dict(backends)
        self._bus = bus
        self._clock = clock
        self._planner = planner
        self._estimate = planner.estimate if planner is not None else estimate
        self._measure = measure
        self._lock = threading.RLock()
        self._states: dict[str, ModelState] = {m.name: initial_state(m) for m in config.models}
        self._next_instance = 0
        self._stopping: dict[str, Stopping] = {}  # why each stopping model is stopping
        self._waiting: dict[str, tuple[Load, tuple[str, ...]]] = {}  # load after a swap
        self._next_config: dict[str, ModelConfig] = {}  # changed settings for the next load
        self._dropping: set[str] = set()  # removed from the config: forget once stopped
        self._snapshot: Snapshot | None = None
        self._wake: Callable[[], None] = _nothing
        self.pressure = PressureMonitor(config.pressure, bus)
        self.safety = SafetyMonitor()
        self._held: dict[str, Held] = {}  # loads waiting for a GPU to cool down
        self.paused = False  # the user paused automation: no decision of gpuwarden's own
        self._hints = HintKeeper(hints, bus, clock)
        self._states = self._hints.restore(self._states)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the lock; what is published meanwhile is delivered after it is released."""
        with self._bus.deferred(), self._lock:
            yield

    def set_waker(self, wake: Callable[[], None]) -> None:
        """``wake`` is called (from any thread) when a deadline appears that may be earlier
        than the driver's next step: a restart was scheduled."""
        self._wake = wake

    def _touch(self, name: str) -> ModelState:
        """The model was just used: its idle clock starts again (and the hints know)."""
        s = self._states[name]
        now = self._clock.time()
        s = replace(s, last_access=now, access_count=s.access_count + 1)
        self._put(s)
        self._hints.remember(name, last_access_ts=now, access_count=s.access_count)
        return s

    def _put(self, state: ModelState) -> None:
        self._states[state.name] = state

    def _unknown(self, name: str) -> AdminResult | None:
        if name in self._states and name not in self._dropping:
            return None
        return AdminResult(False, f"no model named {name!r} in the configuration")

    def _can_offload(self, s: ModelState) -> bool:
        backend = self._backends.get(s.config.backend)
        return backend is not None and backend.can_offload

    def _has_gpu(self, index: int) -> bool:
        snap = self._snapshot
        return snap is None or snap.gpu(index) is not None

    def _free_vram(self, loads_allowed: bool = False) -> dict[int, float | None]:
        """Free MiB per GPU (None: not known). ``loads_allowed``: None too for a GPU whose
        safety verdict holds new loads (too hot), so nothing is planned onto it."""
        free = free_vram_mib(self._snapshot, self._states.values(), self._estimate)
        if loads_allowed:
            for verdict in self.safety.verdicts().values():
                if verdict.gpu is not None and not verdict.allows_loads:
                    free[verdict.gpu] = None
        return free

    # -- carried out in core.py (declared here so every part can ask for them) ----------

    def _start(self, load: Load) -> None:
        raise NotImplementedError

    def _stop(self, name: str, stop: Stopping) -> None:
        raise NotImplementedError

    def _due(self, name: str, now: float) -> None:
        raise NotImplementedError


def _nothing() -> None:
    return None


def describe(device: str, layers: int) -> str:
    return f"partial ({layers} layers on GPU)" if device == "partial" else device
