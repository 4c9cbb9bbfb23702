"""What happens to the machine and to gpuwarden itself: GPUs, probes, resource pressure,
safety verdicts and emergency stops, its own files and its config."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Literal

from gpuwarden.engine.events.base import Event, Severity, capital, figure, gpu_or_host

PressureKind = Literal["vram", "ram", "cpu", "disk"]


@dataclass(frozen=True, slots=True, kw_only=True)
class GpuUnavailable(Event):
    """No GPU can be read at all: no NVML library, no driver, or no device."""

    TYPE: ClassVar[str] = "gpu.unavailable"
    SEVERITY: ClassVar[Severity] = "warning"
    reason: str
    message: str

    def describe(self) -> str:
        return self.message


@dataclass(frozen=True, slots=True, kw_only=True)
class GpuLost(Event):
    """A GPU that was answering stopped answering (fell off the bus, driver gone)."""

    TYPE: ClassVar[str] = "gpu.lost"
    SEVERITY: ClassVar[Severity] = "error"
    gpu: int
    uuid: str = ""
    message: str = ""

    def describe(self) -> str:
        detail = f": {self.message}" if self.message else ""
        return f"GPU {self.gpu} was lost (it stopped answering){detail}"


@dataclass(frozen=True, slots=True, kw_only=True)
class GpuRecovered(Event):
    TYPE: ClassVar[str] = "gpu.recovered"
    gpu: int
    uuid: str = ""

    def describe(self) -> str:
        return f"GPU {self.gpu} is answering again"


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoteLost(Event):
    """The window is attached to a gpuwarden elsewhere and cannot reach it (what it shows
    is from before; it keeps trying)."""

    TYPE: ClassVar[str] = "remote.lost"
    SEVERITY: ClassVar[Severity] = "error"
    url: str
    message: str = ""

    def describe(self) -> str:
        detail = f" ({self.message})" if self.message else ""
        return f"Lost the connection to {self.url}{detail}; trying again"


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoteRecovered(Event):
    TYPE: ClassVar[str] = "remote.recovered"
    url: str

    def describe(self) -> str:
        return f"Connected to {self.url} again"


_PROBE_WORDS: Mapping[str, str] = {"gpu": "the GPUs", "host": "the host (CPU, RAM, disks)"}


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbeError(Event):
    """A probe failed in a way the user should hear about (not a missing field)."""

    TYPE: ClassVar[str] = "probe.error"
    SEVERITY: ClassVar[Severity] = "warning"
    probe: str
    message: str

    def describe(self) -> str:
        return f"Could not read {_PROBE_WORDS.get(self.probe, self.probe)}: {self.message}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ScenarioStep(Event):
    """A scenario (simulation timeline) step was applied."""

    TYPE: ClassVar[str] = "scenario.step"
    action: str
    detail: str = ""

    def describe(self) -> str:
        detail = f": {self.detail}" if self.detail else ""
        return f"Simulation step {self.action.replace('_', ' ')}{detail}"


@dataclass(frozen=True, slots=True, kw_only=True)
class StorageError(Event):
    """gpuwarden could not write one of its own files (journal, hints): disk full, rights."""

    TYPE: ClassVar[str] = "storage.error"
    SEVERITY: ClassVar[Severity] = "error"
    path: str
    message: str

    def describe(self) -> str:
        return f"Could not save {self.path}: {self.message}"


@dataclass(frozen=True, slots=True, kw_only=True)
class StorageRecovered(Event):
    """A file gpuwarden could not write (a ``storage.error``) can be written again;
    ``missed`` counts what was lost meanwhile (the journal: events not recorded)."""

    TYPE: ClassVar[str] = "storage.recovered"
    path: str
    message: str = ""
    missed: int = 0

    def describe(self) -> str:
        detail = f": {self.message}" if self.message else ""
        return f"{self.path} can be written again{detail}"


@dataclass(frozen=True, slots=True, kw_only=True)
class StorageProblem(Event):
    """One of gpuwarden's own data files (hints, server records, learned overhead) could
    not be read, or had entries that were dropped; ``message`` says what was kept."""

    TYPE: ClassVar[str] = "storage.problem"
    SEVERITY: ClassVar[Severity] = "warning"
    path: str
    message: str

    def describe(self) -> str:
        return capital(self.message)


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfigProblemFound(Event):
    """An entry or setting of the config file that was skipped or replaced by a default."""

    TYPE: ClassVar[str] = "config.problem"
    SEVERITY: ClassVar[Severity] = "warning"
    message: str

    def describe(self) -> str:
        return f"Config file problem: {self.message}"


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
        return capital(self.message) if self.message else f"Config file {self.path} read again"


# -- pressure ---------------------------------------------------------------------------

_PRESSURE_SUBJECT: Mapping[PressureKind, str] = {
    "vram": "VRAM", "ram": "RAM", "cpu": "CPU", "disk": "Disk space"}
_PRESSURE_READING: Mapping[PressureKind, str] = {
    "vram": "% full", "ram": "% used", "cpu": "% busy on average", "disk": "GiB free"}


@dataclass(frozen=True, slots=True, kw_only=True)
class PressureEvent(Event):
    """A pressure reading: ``value`` is percent used for vram, ram and cpu (cpu averaged
    over seconds), free GiB on the fullest disk for disk; ``threshold`` the level in the
    same unit that was crossed."""

    kind: PressureKind
    gpu: int | None
    value: float
    threshold: float

    def subject(self) -> str:
        """``VRAM on GPU 0``, ``RAM``, ``Disk space``."""
        where = f" on GPU {self.gpu}" if self.gpu is not None else ""
        return f"{_PRESSURE_SUBJECT[self.kind]}{where}"

    def reading(self) -> str:
        """``95 % full``, ``3.2 GiB free``."""
        return f"{figure(self.value, self.threshold)} {_PRESSURE_READING[self.kind]}"

    def level(self) -> str:
        """The threshold with its unit: ``90 %``, ``5 GiB free``."""
        unit = "GiB free" if self.kind == "disk" else "%"
        return f"{figure(self.threshold)} {unit}"


@dataclass(frozen=True, slots=True, kw_only=True)
class PressureRaised(PressureEvent):
    TYPE: ClassVar[str] = "pressure.raised"
    SEVERITY: ClassVar[Severity] = "warning"

    def describe(self) -> str:
        return f"{self.subject()} is under pressure: {self.reading()} (limit {self.level()})"


@dataclass(frozen=True, slots=True, kw_only=True)
class PressureCleared(PressureEvent):
    """``threshold`` is the clear level: under it (disk: at or over it) the pressure
    is over."""

    TYPE: ClassVar[str] = "pressure.cleared"

    def describe(self) -> str:
        side = "at least" if self.kind == "disk" else "under"
        return (f"{self.subject()} is no longer under pressure: {self.reading()} "
                f"({side} {self.level()})")


@dataclass(frozen=True, slots=True, kw_only=True)
class PressureAlert(PressureEvent):
    """A notification for the user, debounced per kind; ``throttle`` is 0 (at the clear
    level) to 1 (completely full): how hard a client should back off. An error once the
    resource is exhausted (throttle 1), else a warning."""

    TYPE: ClassVar[str] = "pressure.alert"
    throttle: float

    @property
    def severity(self) -> Severity:
        return "error" if self.throttle >= 1.0 else "warning"

    def describe(self) -> str:
        cut = min(1.0, max(0.0, self.throttle))
        if cut >= 1.0:
            advice = "clients should stop sending work"
        elif round(cut * 100) == 0:
            advice = "clients need not back off yet"
        else:
            advice = f"clients should cut their load by {cut * 100:.0f} %"
        return (f"{self.subject()} is running short: {self.reading()} "
                f"(alert at {self.level()}); {advice}")


# -- safety (thermal / power / memory limits) -------------------------------------------

_VERDICT_WORDS: Mapping[str, str] = {
    "proceed": "within its limits", "reduce_intensity": "running with less parallel work",
    "wait_cooldown": "waiting to cool down", "abort": "over a hard limit"}
_VERDICT_SEVERITY: Mapping[str, Severity] = {
    "proceed": "info", "reduce_intensity": "warning", "wait_cooldown": "warning",
    "abort": "error"}


@dataclass(frozen=True, slots=True, kw_only=True)
class SafetyVerdictChanged(Event):
    """The safety verdict of a GPU (``scope="gpu"``, ``gpu`` its index) or of the host
    (``scope="host"``, ``gpu`` None) changed kind: ``proceed``, ``reduce_intensity``,
    ``wait_cooldown`` or ``abort``. ``reading`` and ``limit`` are the deciding figures
    (None for ``proceed``); ``throttle`` is 0..1, how hard to back off: models started
    there from now on run with that share fewer parallel slots."""

    TYPE: ClassVar[str] = "safety.verdict"
    scope: str
    gpu: int | None
    kind: str
    previous: str
    reason: str
    reading: float | None = None
    limit: float | None = None
    throttle: float = 0.0

    @property
    def severity(self) -> Severity:
        return _VERDICT_SEVERITY.get(self.kind, "warning")

    def describe(self) -> str:
        there = "on the CPU" if self.gpu is None else f"on GPU {self.gpu}"
        if self.kind == "proceed":
            before = _VERDICT_WORDS.get(self.previous, self.previous.replace("_", " "))
            return f"Safe again: {self.reason} (before: {before})"
        if self.kind == "reduce_intensity":
            return (f"Models started {there} now serve fewer requests at once (cut by "
                    f"{self.throttle * 100:.0f} %): {self.reason}")
        if self.kind == "wait_cooldown":
            held = "until the host cools down" if self.gpu is None else \
                f"{there} until it cools down"
            return f"No model loads {held}: {self.reason}"
        if self.kind == "abort":
            every = "Every model" if self.gpu is None else f"Every model {there}"
            return f"{every} is stopped: {self.reason}"
        return f"{capital(gpu_or_host(self.gpu))}: {self.kind.replace('_', ' ')}: {self.reason}"


@dataclass(frozen=True, slots=True, kw_only=True)
class EmergencyStop(Event):
    """Every model on a GPU (or, for ``scope="host"``, every model) was stopped because a
    hard safety limit was reached."""

    TYPE: ClassVar[str] = "safety.emergency_stop"
    SEVERITY: ClassVar[Severity] = "error"
    scope: str
    gpu: int | None
    reason: str
    models: tuple[str, ...] = ()

    def describe(self) -> str:
        where = gpu_or_host(self.gpu)
        if not self.models:
            return f"Emergency stop on {where}: {self.reason}. No model was running there"
        return (f"Emergency stop on {where}: {self.reason}. Stopped {', '.join(self.models)}; "
                "nothing restarts by itself, load them again when it is safe")


@dataclass(frozen=True, slots=True, kw_only=True)
class AutomationChanged(Event):
    """The user paused (``paused`` true) or resumed gpuwarden's own decisions: idle
    unloads, pressure relief, restores after a swap, returns to the GPU and restarts after
    a crash. Safety limits act whatever this says."""

    TYPE: ClassVar[str] = "automation.changed"
    paused: bool

    @property
    def severity(self) -> Severity:
        return "warning" if self.paused else "info"

    def describe(self) -> str:
        if self.paused:
            return ("Automation paused: gpuwarden will not unload, move, bring back or "
                    "restart models by itself until it is resumed (safety limits still act)")
        return "Automation resumed: gpuwarden manages the models again"

