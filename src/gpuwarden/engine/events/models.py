"""What happens to models: loads, readiness, unloads, moves, crashes, restarts, swaps."""

from __future__ import annotations

import signal as signals
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Literal

from gpuwarden.engine.events.base import ModelEvent, Severity, seconds_text, size_text, where_text

# Why a model was loaded, unloaded or moved to the CPU: the values events carry.
LoadReason = Literal["user", "autostart", "restart", "restore", "offload", "adopted"]
UnloadReason = Literal["user", "idle", "pressure", "swap", "shutdown", "make_room", "removed",
                       "safety", "exited"]
OffloadReason = Literal["pressure", "user", "make_room"]
# How a model's process ended when gpuwarden did not ask it to.
CrashKind = Literal["oom_killed", "gpu_oom", "crash", "hang", "startup_timeout", "load_error",
                    "launch_failed"]

_LOAD_WHY: Mapping[LoadReason, str] = {
    "user": " (you asked)",
    "autostart": " (autostart)",
    "restart": " (restarting)",
    "restore": " (back, now that there is room)",
    "offload": " (moved off the GPU)",
    "adopted": "",
}
_UNLOAD_WHY: Mapping[UnloadReason, str] = {
    "user": "because you asked",
    "idle": "because it was idle",
    "pressure": "to relieve memory pressure",
    "swap": "to make room for another model",
    "shutdown": "because gpuwarden is shutting down",
    "make_room": "to make room on the GPU, as asked",
    "removed": "because it was removed from the config file",
    "safety": "by the emergency stop (a hard safety limit was reached)",
    "exited": "because its process ended",
}
_OFFLOAD_WHY: Mapping[OffloadReason, str] = {
    "pressure": "to relieve VRAM pressure",
    "user": "because you asked",
    "make_room": "to make room on the GPU, as asked",
}
_CRASH_WORDS: Mapping[CrashKind, str] = {
    "oom_killed": "was killed, most likely by the OOM killer because RAM ran out",
    "gpu_oom": "ran out of GPU memory",
    "crash": "crashed",
    "hang": "stopped answering (hang) and was killed",
    "startup_timeout": "did not get ready in time and was stopped",
    "load_error": "could not load its model file",
    "launch_failed": "could not be started",
}
LOG_LINE_CHARS = 200  # of a crash's last log line, in its sentence


def _freed(vram_mib: float, ram_mib: float = 0.0) -> str:
    parts = [f"{size_text(mib)} {what}" for mib, what in ((vram_mib, "VRAM"), (ram_mib, "RAM"))
             if mib > 0]
    return f", freeing {' and '.join(parts)}" if parts else ""


def _signal_name(number: int) -> str:
    try:
        return f"signal {number}, {signals.Signals(number).name}"
    except ValueError:
        return f"signal {number}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelLoading(ModelEvent):
    TYPE: ClassVar[str] = "model.loading"
    placement: str
    reason: LoadReason = "user"
    gpu: int | None = None  # the GPU it loads on (None: not said, or none)

    def describe(self) -> str:
        where = where_text(self.placement, self.gpu)
        if self.reason == "adopted":
            return f"{self.model} was already running {where}; gpuwarden takes it over"
        return f"{self.model} is loading {where}{_LOAD_WHY[self.reason]}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelReady(ModelEvent):
    TYPE: ClassVar[str] = "model.ready"
    placement: str
    vram_mib: float | None = None  # measured: what its processes hold (NVML by pid)
    vram_est_mib: float = 0.0  # the estimate the load was planned with
    ram_mib: float = 0.0
    gpu: int | None = None  # the GPU it runs on (None: not said, or none)

    def describe(self) -> str:
        text = f"{self.model} is ready {where_text(self.placement, self.gpu)}"
        planned = size_text(self.vram_est_mib) if self.vram_est_mib > 0 else None
        if self.vram_mib:
            text += f", holds {size_text(self.vram_mib)} VRAM"
            text += f" (planned {planned})" if planned else ""
        elif planned:
            text += f", planned for {planned} VRAM (not measured)"
        return text + (f", uses {size_text(self.ram_mib)} RAM" if self.ram_mib > 0 else "")


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelUnloaded(ModelEvent):
    TYPE: ClassVar[str] = "model.unloaded"
    reason: UnloadReason
    freed_vram_mib: float = 0.0
    freed_ram_mib: float = 0.0

    @property
    def severity(self) -> Severity:
        return "warning" if self.reason == "safety" else "info"

    def describe(self) -> str:
        return (f"{self.model} was unloaded {_UNLOAD_WHY[self.reason]}"
                f"{_freed(self.freed_vram_mib, self.freed_ram_mib)}")


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelOffloaded(ModelEvent):
    TYPE: ClassVar[str] = "model.offloaded"
    reason: OffloadReason
    freed_vram_mib: float = 0.0

    def describe(self) -> str:
        back = "; it goes back to the GPU when there is room" if self.reason == "pressure" \
            else ""
        return (f"{self.model} moved to the CPU {_OFFLOAD_WHY[self.reason]}"
                f"{_freed(self.freed_vram_mib)}{back}")


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelCrashed(ModelEvent):
    TYPE: ClassVar[str] = "model.crashed"
    SEVERITY: ClassVar[Severity] = "error"
    kind: CrashKind
    exit_code: int | None = None
    signal: int | None = None
    log_tail: tuple[str, ...] = ()

    def describe(self) -> str:
        text = f"{self.model} {_CRASH_WORDS[self.kind]}"
        if self.signal is not None:
            text += f" ({_signal_name(self.signal)})"
        elif self.exit_code is not None:
            text += f" (exit code {self.exit_code})"
        last = next((line.strip() for line in reversed(self.log_tail) if line.strip()), "")
        if last and self.kind == "launch_failed":  # gpuwarden's own words: why, what to do
            text += f": {last}"
        elif last:
            text += f"; its last log line: {last[:LOG_LINE_CHARS]}"
        return text


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelRefused(ModelEvent):
    """A load gpuwarden would not carry out on its own (autostart): why, for a person."""

    TYPE: ClassVar[str] = "model.refused"
    SEVERITY: ClassVar[Severity] = "warning"
    message: str

    def describe(self) -> str:
        if self.message.startswith("not loaded"):
            return f"{self.model} was {self.message}"
        return f"{self.model} was not loaded: {self.message}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelWaiting(ModelEvent):
    """A load that waits for its GPU (or the host) to cool down; it starts once the
    safety verdict allows it, or is refused (``model.refused``) after a time-out."""

    TYPE: ClassVar[str] = "model.waiting"
    SEVERITY: ClassVar[Severity] = "warning"
    reason: str

    def describe(self) -> str:
        return f"{self.model} waits to load until it is safe: {self.reason}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelRestartScheduled(ModelEvent):
    TYPE: ClassVar[str] = "model.restart_scheduled"
    delay_s: float
    attempt: int
    placement: str

    def describe(self) -> str:
        return (f"{self.model} restarts in {seconds_text(self.delay_s)} "
                f"{where_text(self.placement)} (attempt {self.attempt})")


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelRestartExhausted(ModelEvent):
    TYPE: ClassVar[str] = "model.restart_exhausted"
    SEVERITY: ClassVar[Severity] = "error"
    attempts: int
    message: str

    def describe(self) -> str:
        return f"{self.model} is not restarted any more: {self.message}"


@dataclass(frozen=True, slots=True, kw_only=True)
class SwapEvicted(ModelEvent):
    TYPE: ClassVar[str] = "swap.evicted"
    for_model: str

    def describe(self) -> str:
        return (f"{self.model} makes way for {self.for_model}; it loads again once "
                f"{self.for_model} is idle")


@dataclass(frozen=True, slots=True, kw_only=True)
class SwapRestored(ModelEvent):
    TYPE: ClassVar[str] = "swap.restored"
    after: str

    def describe(self) -> str:
        return f"{self.model} loads again: {self.after} no longer needs its room"
