"""Which events are marked on which graphs.

A model's loads, unloads, moves, crashes and restarts go on its GPU's graphs (on the
host's when it runs on the CPU); pressure and safety verdicts go where they were judged
(VRAM pressure and a GPU's verdict on that GPU, RAM / CPU / disk pressure and the host's
verdict on the host); a lost or recovered GPU on its own graphs. The mark's text is the
event's sentence and its level the event's severity, as in the event log.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from gpuwarden.engine.events import (
    EmergencyStop,
    Event,
    GpuLost,
    GpuRecovered,
    ModelCrashed,
    ModelEvent,
    ModelLoading,
    ModelOffloaded,
    ModelReady,
    ModelRestartExhausted,
    ModelUnloaded,
    PressureCleared,
    PressureRaised,
    SafetyVerdictChanged,
    Severity,
    SwapEvicted,
)
from gpuwarden.engine.views import ModelRow


@dataclass(frozen=True, slots=True)
class GraphMark:
    gpu: int | None  # the GPU whose graphs show it; None: the host's graphs
    ts: float
    text: str
    level: Severity


def graph_mark(event: Event, rows: Iterable[ModelRow]) -> GraphMark | None:
    """Where ``event`` is marked (``rows``: the models now, for a model's GPU), or None
    for an event the graphs do not show (or about a model no longer configured)."""
    found, gpu = _graph_of(event, rows)
    if not found:
        return None
    return GraphMark(gpu, event.ts, event.describe(), event.severity)


_NOT_SHOWN: tuple[bool, int | None] = (False, None)
_HOST: tuple[bool, int | None] = (True, None)


def _graph_of(event: Event, rows: Iterable[ModelRow]) -> tuple[bool, int | None]:
    match event:
        case ModelLoading(reason="restart" | "restore") | ModelReady():
            if event.placement == "cpu":
                return _HOST
            return (True, event.gpu) if event.gpu is not None else _model_gpu(event, rows)
        case ModelUnloaded(reason="swap"):
            return _NOT_SHOWN  # the swap.evicted before it says more (for which model)
        case ModelUnloaded():
            return _model_gpu(event, rows) if event.freed_vram_mib > 0 else _HOST
        case ModelOffloaded() | SwapEvicted():
            return _model_gpu(event, rows)
        case ModelCrashed() | ModelRestartExhausted():
            row = _row(event, rows)
            if row is None:
                return _NOT_SHOWN
            return _HOST if row.placement == "cpu" else (True, row.gpu)
        case PressureRaised() | PressureCleared():
            return (True, event.gpu) if event.kind == "vram" else _HOST
        case SafetyVerdictChanged() | EmergencyStop():
            return (True, event.gpu)
        case GpuLost() | GpuRecovered():
            return (True, event.gpu)
    return _NOT_SHOWN


def _row(event: ModelEvent, rows: Iterable[ModelRow]) -> ModelRow | None:
    return next((r for r in rows if r.name == event.model), None)


def _model_gpu(event: ModelEvent, rows: Iterable[ModelRow]) -> tuple[bool, int | None]:
    row = _row(event, rows)
    return _NOT_SHOWN if row is None else (True, row.gpu)
