"""The control API's JSON back into the engine's immutable types: a snapshot, a model
row, an event (by its type), a history frame, a load preview. A field the API added that
this version does not know is left out; a value the API could not give stays None."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping
from typing import Any, TypeVar

import numpy as np

from gpuwarden.engine.details import CrashEntry, HistoryEntry, ModelDetails, Setting
from gpuwarden.engine.events import Event
from gpuwarden.engine.lifecycle.policy import LoadPreview
from gpuwarden.engine.telemetry.snapshot import (
    DiskSample,
    GpuProcess,
    GpuSample,
    HistoryFrame,
    HostSample,
    Snapshot,
)
from gpuwarden.engine.views import ModelRow

T = TypeVar("T")


class Undecodable(ValueError):
    """The API answered something this version cannot read (another version's shape)."""


def _known(cls: type[T], data: Mapping[str, Any]) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return {k: v for k, v in data.items() if k in names}


def _tuples(value: Any) -> Any:
    """JSON arrays back into the tuples the frozen types hold."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def _build(cls: type[T], data: Mapping[str, Any], **nested: Any) -> T:
    try:
        fields = {k: _tuples(v) for k, v in _known(cls, data).items()}
        return cls(**(fields | nested))
    except TypeError as exc:
        raise Undecodable(f"not a {cls.__name__}: {exc}") from None


def gpu(data: Mapping[str, Any]) -> GpuSample:
    processes = data.get("processes")
    return _build(GpuSample, data, processes=None if processes is None else tuple(
        _build(GpuProcess, p) for p in processes))


def snapshot(data: Mapping[str, Any]) -> Snapshot:
    host = data.get("host") or {}
    return _build(Snapshot, data, gpus=tuple(gpu(g) for g in data.get("gpus", ())),
                  host=_build(HostSample, host, disks=tuple(
                      _build(DiskSample, d) for d in host.get("disks", ()))))


def row(data: Mapping[str, Any]) -> ModelRow:
    return _build(ModelRow, data)


def preview(data: Mapping[str, Any]) -> LoadPreview:
    return _build(LoadPreview, data)


def frame(data: Mapping[str, Any]) -> HistoryFrame:
    """``{"t": [...], "series": {key: [...]}}``, null for n/a (NaN again)."""
    def array(values: Any) -> np.ndarray[Any, np.dtype[np.float64]]:
        return np.array([math.nan if v is None else float(v) for v in values or ()],
                        dtype=np.float64)

    t = array(data.get("t"))
    series = {str(k): array(v) for k, v in (data.get("series") or {}).items()}
    if any(len(v) != len(t) for v in series.values()):
        raise Undecodable("a history series is not as long as its time axis")
    return HistoryFrame(t, series)


def _event_types(cls: type[Event] = Event) -> Iterator[type[Event]]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _event_types(sub)


_EVENTS: dict[str, type[Event]] = {}


def event(data: Mapping[str, Any]) -> Event:
    """The event of ``data["type"]``; Undecodable for a type this version does not have."""
    if not _EVENTS:
        _EVENTS.update({cls.TYPE: cls for cls in _event_types()})
    cls = _EVENTS.get(str(data.get("type")))
    if cls is None:
        raise Undecodable(f"an event of a type this version does not know: {data.get('type')}")
    return _build(cls, data)


def details(data: Mapping[str, Any], where: str) -> ModelDetails:
    """A model's details as the remote at ``where`` has them; its log file is on that
    machine, so there is none to open here (its last lines are shown all the same)."""
    path = data.get("log_path")
    note = f"the log is on {where}'s machine: {path}" if path else str(data.get("log_note", ""))
    return _build(ModelDetails, data,
                  settings=tuple(_build(Setting, x) for x in data.get("settings", ())),
                  history=tuple(_build(HistoryEntry, x) for x in data.get("history", ())),
                  crashes=tuple(_build(CrashEntry, x) for x in data.get("crashes", ())),
                  log_path=None, log_exists=False, log_note=note)
