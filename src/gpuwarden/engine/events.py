"""Frozen events: everything the UI, the journal or a log may want to know.

Each event has ``ts`` (unix seconds), ``seq`` (strictly increasing per run) and a
``type`` (a dotted name such as ``gpu.lost``). Producers build events with the
defaults ``ts=0, seq=0``; the :class:`EventBus` stamps both when it publishes.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from gpuwarden.engine.clock import Clock, SystemClock

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    TYPE: ClassVar[str] = "event"
    ts: float = 0.0
    seq: int = 0

    @property
    def type(self) -> str:
        return self.TYPE

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ts": self.ts, "seq": self.seq, "type": self.TYPE}
        for f in dataclasses.fields(self):
            if f.name not in ("ts", "seq"):
                value = getattr(self, f.name)
                # JSON has no NaN or Infinity: such a reading is "not known".
                out[f.name] = None if isinstance(value, float) and not math.isfinite(value) \
                    else value
        return out

    def describe(self) -> str:
        """One line a person can read in the event log."""
        return self.TYPE


@dataclass(frozen=True, slots=True, kw_only=True)
class GpuUnavailable(Event):
    """No GPU can be read at all: no NVML library, no driver, or no device."""

    TYPE: ClassVar[str] = "gpu.unavailable"
    reason: str
    message: str

    def describe(self) -> str:
        return self.message


@dataclass(frozen=True, slots=True, kw_only=True)
class GpuLost(Event):
    """A GPU that was answering stopped answering (fell off the bus, driver gone)."""

    TYPE: ClassVar[str] = "gpu.lost"
    gpu: int
    uuid: str = ""
    message: str = ""

    def describe(self) -> str:
        return f"GPU {self.gpu} lost: {self.message}"


@dataclass(frozen=True, slots=True, kw_only=True)
class GpuRecovered(Event):
    TYPE: ClassVar[str] = "gpu.recovered"
    gpu: int
    uuid: str = ""

    def describe(self) -> str:
        return f"GPU {self.gpu} is back"


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbeError(Event):
    """A probe failed in a way the user should hear about (not a missing field)."""

    TYPE: ClassVar[str] = "probe.error"
    probe: str
    message: str

    def describe(self) -> str:
        return f"{self.probe}: {self.message}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ScenarioStep(Event):
    """A scenario (simulation timeline) step was applied."""

    TYPE: ClassVar[str] = "scenario.step"
    action: str
    detail: str = ""

    def describe(self) -> str:
        return f"{self.action} {self.detail}".rstrip()


Listener = Callable[[Event], None]


@dataclass
class EventBus:
    """Stamps events with ``ts`` and ``seq`` and hands them to every listener, in ``seq``
    order, one event at a time.

    Inside :meth:`deferred` (the lifecycle manager wraps its lock in it) events are only
    stamped and queued; they are delivered when the outermost ``deferred`` block of that
    thread ends, after the lock is released, so no listener (journal, stdout, Qt) ever
    runs while the engine's lock is held. A listener that raises is logged with its
    traceback and does not stop the others. The last ``keep`` events are kept, so a window
    opened later (or an API client resuming from a ``seq``) can have them.
    """

    clock: Clock = field(default_factory=SystemClock)
    keep: int = 1000
    _seq: int = 0
    _recent: deque[Event] = field(init=False)
    _pending: deque[Event] = field(init=False)
    _listeners: list[Listener] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _deliver: threading.Lock = field(default_factory=threading.Lock)
    _local: threading.local = field(default_factory=threading.local)

    def __post_init__(self) -> None:
        self._recent = deque(maxlen=self.keep)
        self._pending = deque()

    def since(self, seq: int) -> list[Event]:
        """The kept events with a ``seq`` above ``seq``, oldest first."""
        with self._lock:
            return [e for e in self._recent if e.seq > seq]

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        self._listeners.remove(listener)

    def publish(self, event: Event) -> Event:
        """Stamp and deliver ``event``; inside :meth:`deferred`, keep it for the end of
        the block (it is stamped then, and the unstamped event is returned)."""
        if getattr(self._local, "depth", 0):
            self._local.held.append(event)
            return event
        stamped = self._stamp([event])[0]
        self.flush()
        return stamped

    def _stamp(self, events: list[Event]) -> list[Event]:
        with self._lock:
            out = []
            for event in events:
                self._seq += 1
                stamped = dataclasses.replace(event, ts=self.clock.time(), seq=self._seq)
                self._recent.append(stamped)
                self._pending.append(stamped)
                out.append(stamped)
            return out

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """Hold what this thread publishes inside; stamp and deliver it when the
        outermost block ends (after the lock it wraps is released)."""
        depth = getattr(self._local, "depth", 0)
        if not depth:
            self._local.held = []
        self._local.depth = depth + 1
        try:
            yield
        finally:
            self._local.depth -= 1
            if not self._local.depth:
                held, self._local.held = self._local.held, []
                self._stamp(held)
                self.flush()

    def flush(self) -> None:
        """Deliver every queued event in ``seq`` order. One thread delivers at a time; a
        listener that publishes has its event delivered after the current one."""
        if getattr(self._local, "delivering", False):
            return
        with self._deliver:
            self._local.delivering = True
            try:
                while True:
                    with self._lock:
                        if not self._pending:
                            return
                        event = self._pending.popleft()
                    self._deliver_one(event)
            finally:
                self._local.delivering = False

    def _deliver_one(self, event: Event) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("event listener %r failed on %s", listener, event.TYPE)


# -- models (lifecycle manager) ---------------------------------------------------------

# Why a model was loaded, unloaded or moved to the CPU: the values events carry.
LoadReason = Literal["user", "autostart", "restart", "restore", "offload", "adopted"]
UnloadReason = Literal["user", "idle", "pressure", "swap", "shutdown", "make_room", "removed",
                       "safety", "exited"]
OffloadReason = Literal["pressure", "user", "make_room"]
# How a model's process ended when gpuwarden did not ask it to.
CrashKind = Literal["oom_killed", "gpu_oom", "crash", "hang", "startup_timeout", "load_error",
                    "launch_failed"]
PressureKind = Literal["vram", "ram", "cpu", "disk"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelLoading(Event):
    TYPE: ClassVar[str] = "model.loading"
    model: str
    placement: str
    reason: LoadReason = "user"

    def describe(self) -> str:
        return f"{self.model}: loading on {self.placement} ({self.reason})"


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelReady(Event):
    TYPE: ClassVar[str] = "model.ready"
    model: str
    placement: str
    vram_mib: float | None = None  # measured: what its processes hold (NVML by pid)
    vram_est_mib: float = 0.0  # the estimate the load was planned with
    ram_mib: float = 0.0

    def describe(self) -> str:
        held = f", {self.vram_mib:.0f} MiB VRAM" if self.vram_mib else ""
        return f"{self.model}: ready on {self.placement}{held}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelUnloaded(Event):
    TYPE: ClassVar[str] = "model.unloaded"
    model: str
    reason: UnloadReason
    freed_vram_mib: float = 0.0
    freed_ram_mib: float = 0.0

    def describe(self) -> str:
        return f"{self.model}: unloaded ({self.reason})"


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelOffloaded(Event):
    TYPE: ClassVar[str] = "model.offloaded"
    model: str
    reason: OffloadReason
    freed_vram_mib: float = 0.0

    def describe(self) -> str:
        return f"{self.model}: offloaded to CPU ({self.reason})"


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelCrashed(Event):
    TYPE: ClassVar[str] = "model.crashed"
    model: str
    kind: CrashKind
    exit_code: int | None = None
    signal: int | None = None
    log_tail: tuple[str, ...] = ()

    def describe(self) -> str:
        how = f"exit code {self.exit_code}" if self.exit_code is not None else ""
        if self.signal is not None:
            how = f"signal {self.signal}"
        return f"{self.model}: crashed ({self.kind}{', ' + how if how else ''})"


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelRefused(Event):
    """A load gpuwarden would not carry out on its own (autostart): why, for a person."""

    TYPE: ClassVar[str] = "model.refused"
    model: str
    message: str

    def describe(self) -> str:
        return f"{self.model}: not loaded: {self.message}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelWaiting(Event):
    """A load that waits for its GPU (or the host) to cool down; it starts once the
    safety verdict allows it, or is refused (``model.refused``) after a time-out."""

    TYPE: ClassVar[str] = "model.waiting"
    model: str
    reason: str

    def describe(self) -> str:
        return f"{self.model}: waiting to load: {self.reason}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelRestartScheduled(Event):
    TYPE: ClassVar[str] = "model.restart_scheduled"
    model: str
    delay_s: float
    attempt: int
    placement: str

    def describe(self) -> str:
        return (f"{self.model}: restart #{self.attempt} on {self.placement} "
                f"in {self.delay_s:g} s")


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelRestartExhausted(Event):
    TYPE: ClassVar[str] = "model.restart_exhausted"
    model: str
    attempts: int
    message: str

    def describe(self) -> str:
        return f"{self.model}: {self.message}"


@dataclass(frozen=True, slots=True, kw_only=True)
class PressureRaised(Event):
    TYPE: ClassVar[str] = "pressure.raised"
    kind: PressureKind
    gpu: int | None
    value: float
    threshold: float

    def describe(self) -> str:
        where = f" on GPU {self.gpu}" if self.gpu is not None else ""
        return f"{self.kind} pressure{where}: {self.value:.1f} (threshold {self.threshold:g})"


@dataclass(frozen=True, slots=True, kw_only=True)
class PressureCleared(Event):
    TYPE: ClassVar[str] = "pressure.cleared"
    kind: PressureKind
    gpu: int | None
    value: float
    threshold: float

    def describe(self) -> str:
        where = f" on GPU {self.gpu}" if self.gpu is not None else ""
        return f"{self.kind} pressure{where} cleared: {self.value:.1f}"


@dataclass(frozen=True, slots=True, kw_only=True)
class PressureAlert(Event):
    """A notification for the user, debounced per kind; ``throttle`` is 0 (at the clear
    level) to 1 (completely full): how hard a client should back off."""

    TYPE: ClassVar[str] = "pressure.alert"
    kind: PressureKind
    gpu: int | None
    value: float
    threshold: float
    throttle: float

    def describe(self) -> str:
        where = f" on GPU {self.gpu}" if self.gpu is not None else ""
        return (f"{self.kind} is running short{where}: {self.value:.1f} "
                f"(throttle {self.throttle:.2f})")


@dataclass(frozen=True, slots=True, kw_only=True)
class SwapEvicted(Event):
    TYPE: ClassVar[str] = "swap.evicted"
    model: str
    for_model: str

    def describe(self) -> str:
        return f"{self.model}: evicted to make room for {self.for_model}"


@dataclass(frozen=True, slots=True, kw_only=True)
class SwapRestored(Event):
    TYPE: ClassVar[str] = "swap.restored"
    model: str
    after: str

    def describe(self) -> str:
        return f"{self.model}: restored now that {self.after} is idle"


@dataclass(frozen=True, slots=True, kw_only=True)
class StorageError(Event):
    """gpuwarden could not write one of its own files (journal, hints): disk full, rights."""

    TYPE: ClassVar[str] = "storage.error"
    path: str
    message: str

    def describe(self) -> str:
        return f"cannot write {self.path}: {self.message}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfigProblemFound(Event):
    """An entry or setting of the config file that was skipped or replaced by a default."""

    TYPE: ClassVar[str] = "config.problem"
    message: str

    def describe(self) -> str:
        return self.message


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfigReloaded(Event):
    """The config file changed and was read again: what changed (``message`` says it)."""

    TYPE: ClassVar[str] = "config.reloaded"
    path: str
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    settings: tuple[str, ...] = ()
    message: str = ""

    def describe(self) -> str:
        return self.message


# -- safety (thermal / power / memory limits) -------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class SafetyVerdictChanged(Event):
    """The safety verdict of a GPU (``scope="gpu"``, ``gpu`` its index) or of the host
    (``scope="host"``, ``gpu`` None) changed kind: ``proceed``, ``reduce_intensity``,
    ``wait_cooldown`` or ``abort``. ``reading`` and ``limit`` are the deciding figures
    (None for ``proceed``); ``throttle`` is 0..1, how hard to back off."""

    TYPE: ClassVar[str] = "safety.verdict"
    scope: str
    gpu: int | None
    kind: str
    previous: str
    reason: str
    reading: float | None = None
    limit: float | None = None
    throttle: float = 0.0

    def describe(self) -> str:
        where = "host" if self.gpu is None else f"GPU {self.gpu}"
        what = self.kind.replace("_", " ")
        if self.kind == "reduce_intensity":
            what += f" (throttle {self.throttle:.2f})"
        return f"{where}: {what} (was {self.previous.replace('_', ' ')}): {self.reason}"


@dataclass(frozen=True, slots=True, kw_only=True)
class EmergencyStop(Event):
    """Every model on a GPU (or, for ``scope="host"``, every model) was stopped because a
    hard safety limit was reached."""

    TYPE: ClassVar[str] = "safety.emergency_stop"
    scope: str
    gpu: int | None
    reason: str
    models: tuple[str, ...] = ()

    def describe(self) -> str:
        where = "host" if self.gpu is None else f"GPU {self.gpu}"
        stopped = ", ".join(self.models) if self.models else "no model was running"
        return f"EMERGENCY STOP on {where}: {self.reason}; stopped: {stopped}"
