"""What is wrong right now: the engine's events folded into a small set of active alerts.

An :class:`Alert` says what is wrong (its title) and, where an event says so, what the
engine did about it (its detail: "moved llama-8b to the CPU"). Conditions that end by
themselves (pressure, a safety verdict, a lost GPU, a crashed model that comes back)
clear when their event says so; records of something that happened (an emergency stop,
a config problem, a file that could not be written) stay until the user dismisses them.
Titles are built from the events' fields, never from their ``describe()`` text.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from gpuwarden.engine.events import (
    AutomationChanged,
    ConfigProblemFound,
    CrashKind,
    EmergencyStop,
    Event,
    GpuLost,
    GpuRecovered,
    ModelCrashed,
    ModelLoading,
    ModelOffloaded,
    ModelReady,
    ModelRestartExhausted,
    ModelRestartScheduled,
    ModelUnloaded,
    PressureAlert,
    PressureCleared,
    PressureKind,
    PressureRaised,
    RemoteLost,
    RemoteRecovered,
    SafetyVerdictChanged,
    StorageError,
    StorageProblem,
    StorageRecovered,
)

AlertLevel = Literal["warning", "error"]
Health = Literal["ok", "warning", "error"]

_RANK: dict[Health, int] = {"ok": 0, "warning": 1, "error": 2}

_CRASH_TEXT: dict[CrashKind, str] = {
    "oom_killed": "was killed for lack of memory",
    "gpu_oom": "ran out of GPU memory",
    "crash": "crashed",
    "hang": "stopped answering",
    "startup_timeout": "did not start in time",
    "load_error": "could not load its model file",
    "launch_failed": "could not be launched",
}

# What the engine does for each safety verdict kind (docs/safety.md).
_VERDICT_TEXT: dict[str, tuple[AlertLevel, str, str]] = {
    "reduce_intensity": ("warning", "near its limits",
                         "new model servers start with fewer parallel slots"),
    "wait_cooldown": ("warning", "cooling down", "new loads wait until it has cooled"),
    "abort": ("error", "past a hard limit",
              "its models are stopped; loads wait until it is back under its limits"),
}


@dataclass(frozen=True, slots=True)
class Alert:
    """One thing that is wrong now. ``gpu`` is the GPU it concerns (None: the host, a
    file, a model not known to be on a GPU); ``dismissable``: the user may hide it (it
    would otherwise stay until its condition clears, or forever)."""

    key: str
    level: AlertLevel
    gpu: int | None
    title: str
    detail: str
    since_ts: float
    dismissable: bool


@dataclass
class _Entry:
    alert: Alert
    order: int
    actions: dict[str, list[str]] = field(default_factory=dict)  # "moved {} to the CPU": names

    def shown(self) -> Alert:
        done = "; ".join(verb.format(", ".join(names)) for verb, names in self.actions.items())
        detail = "; ".join(part for part in (self.alert.detail, done) if part)
        return replace(self.alert, detail=detail)


def pressure_key(kind: PressureKind, gpu: int | None) -> str:
    return f"pressure:{kind}" + ("" if gpu is None else f":gpu{gpu}")


def _where(gpu: int | None) -> str:
    return "Host" if gpu is None else f"GPU {gpu}"


def worst(levels: list[Health]) -> Health:
    return max(levels, key=_RANK.__getitem__, default="ok")


class AlertBoard:
    """Folds engine events (:meth:`apply`) into the alerts that are active now.

    Which GPU a model runs on is not in the model events; :meth:`set_model_gpus` (fed
    from the engine's model rows) tells it, so a model's alert and a pressure relief can
    be put on the right GPU. Without it a relief goes to the only VRAM alert, if there is
    exactly one."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        self._order = 0
        self._model_gpu: dict[str, int] = {}
        self._on_cpu: dict[str, bool] = {}
        self._shown: tuple[Alert, ...] = ()

    # -- the API --------------------------------------------------------------------------

    def apply(self, event: Event) -> bool:
        """Fold one event in; True when the active alerts changed."""
        self._fold(event)
        shown = self._sorted()
        changed = shown != self._shown
        self._shown = shown
        return changed

    def active(self) -> tuple[Alert, ...]:
        """The active alerts: errors first, then the newest first."""
        return self._shown

    def level(self, gpu: int | None = None) -> Health:
        """The worst level of the alerts on ``gpu``, or of all alerts when None."""
        return worst([a.level for a in self._shown if gpu is None or a.gpu == gpu])

    def dismiss(self, key: str) -> bool:
        """Hide a dismissable alert; True when one was removed. The next event about
        the same thing brings it back."""
        entry = self._entries.get(key)
        if entry is None or not entry.alert.dismissable:
            return False
        del self._entries[key]
        self._shown = self._sorted()
        return True

    def set_model_gpus(self, gpus: Mapping[str, int]) -> None:
        """Which GPU each model is configured on (``ModelRow.gpu``)."""
        self._model_gpu = dict(gpus)

    # -- folding --------------------------------------------------------------------------

    def _fold(self, event: Event) -> None:
        match event:
            case PressureRaised() | PressureAlert():
                self._pressure(event.kind, event.gpu, event.value, event.threshold, event.ts)
            case PressureCleared():
                self._drop(pressure_key(event.kind, event.gpu))
            case SafetyVerdictChanged():
                self._verdict(event)
            case EmergencyStop():
                self._emergency_stop(event)
            case GpuLost():
                self._put(f"gpu-lost:{event.gpu}", "error", event.gpu, f"GPU {event.gpu} lost",
                          f"{event.message or 'not answering'}; waiting for it to come back",
                          event.ts, dismissable=False)
            case GpuRecovered():
                self._drop(f"gpu-lost:{event.gpu}")
            case RemoteLost():
                self._put("remote-lost", "error", None, "Connection lost",
                          f"{event.describe()}; what is shown is from before", event.ts,
                          dismissable=False)
            case RemoteRecovered():
                self._drop("remote-lost")
            case ModelLoading() | ModelReady():
                self._on_cpu[event.model] = event.placement == "cpu"
                self._drop(f"gave-up:{event.model}")
                if isinstance(event, ModelReady):
                    self._drop(f"crashed:{event.model}")
            case ModelCrashed():
                self._crashed(event)
            case ModelRestartScheduled():
                self._act(f"crashed:{event.model}", "{}",
                          f"restart #{event.attempt} after {event.delay_s:g} s")
            case ModelRestartExhausted():
                self._drop(f"crashed:{event.model}")
                self._put(f"gave-up:{event.model}", "error", self._gpu_of(event.model),
                          f"{event.model} gave up after {event.attempts} crashes in a row",
                          "not restarted again: load it once the cause is fixed", event.ts)
            case ModelOffloaded(reason="pressure"):
                self._relief(event.model, "moved {} to the CPU", offloaded=True)
                self._on_cpu[event.model] = True
            case ModelUnloaded(reason="pressure"):
                self._relief(event.model, "unloaded {}", offloaded=False)
            case ModelUnloaded(reason="removed"):
                self._drop(f"crashed:{event.model}")
                self._drop(f"gave-up:{event.model}")
            case ConfigProblemFound():
                self._put(f"config:{event.message}", "warning", None, "Config problem",
                          event.message, event.ts)
            case StorageError():
                self._put(f"storage:{event.path}", "error", None, f"Cannot write {event.path}",
                          event.message, event.ts)
            case StorageRecovered():
                self._drop(f"storage:{event.path}")
            case StorageProblem():
                self._put(f"storage-problem:{event.path}", "warning", None,
                          f"Problem reading {event.path}", event.message, event.ts)
            case AutomationChanged(paused=True):
                self._put("automation", "warning", None, "Automation paused",
                          "models stay as they are: no idle unloads, pressure relief or "
                          "restarts until you resume it (safety limits still act)", event.ts,
                          dismissable=False)
            case AutomationChanged(paused=False):
                self._drop("automation")
            case _:
                pass

    def _pressure(self, kind: PressureKind, gpu: int | None, value: float, threshold: float,
                  ts: float) -> None:
        key = pressure_key(kind, gpu)
        if key in self._entries:
            return  # the alert that goes with the raise: nothing new
        if kind == "disk":
            title = f"Disk space low: {value:.1f} GiB free"
            detail = f"under {threshold:g} GiB; gpuwarden frees no disk space itself"
        elif kind == "cpu":
            title = f"CPU pressure: {value:.0f} % busy"
            detail = f"averaged, over {threshold:g} %; no model is unloaded for CPU load"
        else:
            name = "VRAM" if kind == "vram" else "RAM"
            where = "" if gpu is None else f"GPU {gpu} "
            title = f"{where}{name} pressure: {value:.0f} % used"
            detail = f"over {threshold:g} %"
        self._put(key, "warning", gpu, title, detail, ts, dismissable=False)

    def _verdict(self, event: SafetyVerdictChanged) -> None:
        key = "safety:host" if event.gpu is None else f"safety:gpu{event.gpu}"
        if event.kind == "proceed":
            self._drop(key)
            return
        level, what, does = _VERDICT_TEXT.get(event.kind, ("warning", event.kind, ""))
        detail = "; ".join(part for part in (event.reason, does) if part)
        self._put(key, level, event.gpu, f"{_where(event.gpu)} {what}", detail, event.ts,
                  dismissable=False)

    def _emergency_stop(self, event: EmergencyStop) -> None:
        stopped = f"stopped {', '.join(event.models)}" if event.models \
            else "no model was running"
        where = "the host" if event.gpu is None else f"GPU {event.gpu}"
        self._put(f"estop:{'host' if event.gpu is None else f'gpu{event.gpu}'}", "error",
                  event.gpu, f"Emergency stop on {where}",
                  f"{event.reason}; {stopped}; nothing restarts by itself", event.ts)

    def _crashed(self, event: ModelCrashed) -> None:
        how = f"exit code {event.exit_code}" if event.exit_code is not None else ""
        if event.signal is not None:
            how = f"signal {event.signal}"
        key = f"crashed:{event.model}"
        self._put(key, "warning", self._gpu_of(event.model),
                  f"{event.model} {_CRASH_TEXT.get(event.kind, 'crashed')}", how, event.ts)
        self._entries[key].actions.clear()  # a restart planned before this crash is past

    def _relief(self, model: str, verb: str, *, offloaded: bool) -> None:
        """Note a pressure relief on the pressure alert it answered."""
        gpu = self._model_gpu.get(model)
        if not offloaded and self._on_cpu.get(model):
            candidates = [pressure_key("ram", None)]
        elif gpu is not None:
            candidates = [pressure_key("vram", gpu)]
        else:
            candidates = [k for k in self._entries if k.startswith("pressure:vram:")]
            if not offloaded and not candidates:
                candidates = [pressure_key("ram", None)]
        present = [k for k in candidates if k in self._entries]
        if len(present) == 1:
            self._act(present[0], verb, model)

    # -- helpers --------------------------------------------------------------------------

    def _gpu_of(self, model: str) -> int | None:
        return None if self._on_cpu.get(model) else self._model_gpu.get(model)

    def _put(self, key: str, level: AlertLevel, gpu: int | None, title: str, detail: str,
             ts: float, *, dismissable: bool = True) -> None:
        """Raise an alert, or update the one with this key (it keeps its start time and
        what was done about it)."""
        entry = self._entries.get(key)
        if entry is None:
            self._order += 1
            self._entries[key] = _Entry(
                Alert(key, level, gpu, title, detail, ts, dismissable), self._order)
        else:
            entry.alert = replace(entry.alert, level=level, gpu=gpu, title=title,
                                  detail=detail, dismissable=dismissable)

    def _act(self, key: str, verb: str, what: str) -> None:
        entry = self._entries.get(key)
        if entry is not None:
            names = entry.actions.setdefault(verb, [])
            if what not in names:
                names.append(what)

    def _drop(self, key: str) -> None:
        self._entries.pop(key, None)

    def _sorted(self) -> tuple[Alert, ...]:
        entries = sorted(self._entries.values(),
                         key=lambda e: (e.alert.level != "error", -e.alert.since_ts, -e.order))
        return tuple(e.shown() for e in entries)
