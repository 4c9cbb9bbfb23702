"""What the engine shows the outside: one immutable row per model, with everything a
table, a tray menu or an API client needs, computed from a model's state and ``now``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from gpuwarden.engine.lifecycle.state import ModelState, idle_for, priority_of

# The backends whose servers answer chat completions (a test prompt, an API client).
TEXT_BACKENDS = frozenset({"llama-server", "llama-cpp", "torch"})

RowState = Literal["unloaded", "waiting", "loading", "ready", "stopping", "crashed",
                   "restarting", "gave_up"]
Source = Literal["config", "user"]


@dataclass(frozen=True, slots=True)
class ModelRow:
    name: str
    backend: str
    state: RowState
    device: str  # unloaded | loading | gpu | partial | cpu | stopping | crashed
    placement: str  # what the next load asks for: gpu | cpu | auto | N (layers)
    gpu: int
    gpu_layers: int | None  # on the GPU now (None: not loaded on a GPU)
    layers: int  # the model's total layers
    vram_mib: float | None  # measured: what its processes hold (None: not known)
    vram_est_mib: float  # the estimate its load was planned with
    ram_mib: float
    priority: int
    priority_source: Source
    eviction: str  # idle | pressure | never
    eviction_source: Source
    activity: str  # active | warm | idle | evictable (for the relief order)
    idle_s: float | None  # since last use or load; None while not loaded
    requests: int  # requests served (as counted by the server or by notify_access)
    serving: bool
    crashes_in_a_row: int
    last_crash_kind: str | None
    restart_at: float | None  # wall clock
    restart_in_s: float | None  # None while restarting: held until automation resumes
    returns_to_gpu_at: float | None  # moved to the CPU by pressure: next try to go back
    waiting_for: str | None  # a load held by a safety limit: why
    pids: tuple[int, ...] = ()
    loading_for_s: float | None = None  # since its load started, while it loads

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def model_row(s: ModelState, now: float, pids: tuple[int, ...] = (),
              paused: bool = False) -> ModelRow:
    """``paused``: automation is paused, so a due restart waits for the resume
    (``restart_in_s`` None)."""
    on_gpu = s.device in ("gpu", "partial") or (s.device == "stopping" and s.vram_est_mib > 0)
    layers = s.gpu_layers if s.gpu_layers is not None else s.config.layers
    return ModelRow(
        name=s.name,
        backend=s.config.backend,
        state=_row_state(s),
        device=s.device,
        placement=str(s.placement),
        gpu=s.config.gpu,
        gpu_layers=layers if on_gpu else None,
        layers=s.config.layers,
        vram_mib=s.vram_mib,
        vram_est_mib=s.vram_est_mib,
        ram_mib=s.ram_mib,
        priority=s.priority_hint,
        priority_source="config" if s.priority_override is None else "user",
        eviction=s.eviction,
        eviction_source="config" if s.eviction_override is None else "user",
        activity=priority_of(s, now),
        idle_s=idle_for(s, now) if s.loaded else None,
        requests=s.access_count,
        serving=s.serving or s.in_use > 0,
        crashes_in_a_row=s.consecutive_crashes,
        last_crash_kind=s.crashes[-1].kind if s.crashes else None,
        restart_at=s.restart_at,
        restart_in_s=None if s.restart_at is None or paused else max(0.0, s.restart_at - now),
        returns_to_gpu_at=s.return_after if s.home is not None else None,
        waiting_for=s.waiting_for,
        pids=pids,
        loading_for_s=max(0.0, now - s.loaded_at)
        if s.device == "loading" and s.loaded_at is not None else None,
    )


def _row_state(s: ModelState) -> RowState:
    if s.gave_up:
        return "gave_up"
    if s.waiting_for is not None and not s.live:
        return "waiting"
    if s.loaded:
        return "ready"
    if s.device == "crashed" or (s.device == "unloaded" and s.restart_at is not None):
        return "restarting" if s.restart_at is not None else "crashed"
    if s.device in ("loading", "stopping"):
        return "loading" if s.device == "loading" else "stopping"
    return "unloaded"
