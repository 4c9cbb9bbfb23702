"""Frozen events: everything the UI, the journal or a log may want to know.

Each event has ``ts`` (unix seconds), ``seq`` (strictly increasing per run) and a
``type`` (a dotted name such as ``gpu.lost``). Producers build events with the
defaults ``ts=0, seq=0``; the :class:`EventBus` stamps both when it publishes.

For a person every event says what happened in one plain sentence with units
(:meth:`Event.describe`), how serious it is (:attr:`Event.severity`: info, warning or
error) and which model it is about (:attr:`Event.model_name`); :meth:`Event.to_dict` is
the machine form the journal and ``gpuwarden headless`` write.

``base`` holds the base class and the words, ``bus`` the EventBus, ``models`` what happens
to models, ``system`` the machine and gpuwarden itself; import them all from here.
"""

from gpuwarden.engine.events.base import Event, ModelEvent, Severity
from gpuwarden.engine.events.bus import EventBus, Listener
from gpuwarden.engine.events.models import (
    CrashKind,
    LoadReason,
    ModelCrashed,
    ModelLoading,
    ModelOffloaded,
    ModelReady,
    ModelRefused,
    ModelRestartExhausted,
    ModelRestartScheduled,
    ModelUnloaded,
    ModelWaiting,
    OffloadReason,
    SwapEvicted,
    SwapRestored,
    UnloadReason,
)
from gpuwarden.engine.events.servers import LeftoverServerStopped
from gpuwarden.engine.events.system import (
    AutomationChanged,
    ConfigProblemFound,
    ConfigReloaded,
    EmergencyStop,
    GpuLost,
    GpuRecovered,
    GpuUnavailable,
    PressureAlert,
    PressureCleared,
    PressureEvent,
    PressureKind,
    PressureRaised,
    ProbeError,
    RemoteLost,
    RemoteRecovered,
    SafetyVerdictChanged,
    ScenarioStep,
    StorageError,
    StorageProblem,
    StorageRecovered,
)

__all__ = [
    "AutomationChanged",
    "ConfigProblemFound",
    "ConfigReloaded",
    "CrashKind",
    "EmergencyStop",
    "Event",
    "EventBus",
    "GpuLost",
    "GpuRecovered",
    "GpuUnavailable",
    "LeftoverServerStopped",
    "Listener",
    "LoadReason",
    "ModelCrashed",
    "ModelEvent",
    "ModelLoading",
    "ModelOffloaded",
    "ModelReady",
    "ModelRefused",
    "ModelRestartExhausted",
    "ModelRestartScheduled",
    "ModelUnloaded",
    "ModelWaiting",
    "OffloadReason",
    "PressureAlert",
    "PressureCleared",
    "PressureEvent",
    "PressureKind",
    "PressureRaised",
    "ProbeError",
    "RemoteLost",
    "RemoteRecovered",
    "SafetyVerdictChanged",
    "ScenarioStep",
    "Severity",
    "StorageError",
    "StorageProblem",
    "StorageRecovered",
    "SwapEvicted",
    "SwapRestored",
    "UnloadReason",
]
