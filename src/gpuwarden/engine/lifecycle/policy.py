"""The lifecycle policy as pure functions: (states, snapshot, now) in, actions out.

Relief order under VRAM pressure, per GPU: evictable models first (least recently used
first), then idle models (offloaded to CPU where their backend can, else unloaded), then
warm ones. Never a model that is active, in use or pinned (`never`). RAM pressure unloads
CPU-resident models, least recently used first.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from gpuwarden.engine.events import LoadReason
from gpuwarden.engine.lifecycle.actions import Action, Load, Offload, Refusal, Return, Unload
from gpuwarden.engine.lifecycle.config import ModelConfig, Placement
from gpuwarden.engine.lifecycle.state import (
    ModelState,
    evictable_now,
    eviction_rank,
    idle_for,
    priority_of,
)

States = Mapping[str, ModelState]
CanOffload = Callable[[ModelState], bool]
Estimate = Callable[[ModelConfig, Placement], float]


def idle_actions(states: States, now: float) -> list[Action]:
    """Unload `idle`-policy models that have not been used for their idle timeout; never
    one answering a request (through gpuwarden, or any client its server counts)."""
    return [
        Unload(s.name, "idle")
        for s in states.values()
        if s.loaded and s.eviction == "idle" and s.in_use == 0 and not s.serving
        and idle_for(s, now) >= s.config.idle_timeout_s
    ]


def vram_relief(
    states: States, gpu: int, need_mib: float, now: float, can_offload: CanOffload
) -> list[Action]:
    """Free at least ``need_mib`` of VRAM on ``gpu``, cheapest loss first."""
    pending = sum(s.held_vram_mib for s in states.values()
                  if s.device == "stopping" and s.config.gpu == gpu)
    need = need_mib - pending
    actions: list[Action] = []
    candidates = sorted(
        (s for s in states.values() if s.on_gpu and s.config.gpu == gpu and evictable_now(s, now)),
        key=lambda s: eviction_rank(s, now),
    )
    for s in candidates:
        if need <= 0:
            break
        if priority_of(s, now) != "evictable" and can_offload(s):
            actions.append(Offload(s.name, "pressure"))
        else:
            actions.append(Unload(s.name, "pressure"))
        need -= s.held_vram_mib
    return actions


def ram_relief(states: States, need_mib: float, now: float) -> list[Action]:
    """Free at least ``need_mib`` of host RAM by unloading CPU models, LRU first."""
    pending = sum(s.ram_mib for s in states.values() if s.device == "stopping")
    need = need_mib - pending
    actions: list[Action] = []
    candidates = sorted(
        (s for s in states.values() if s.device == "cpu" and evictable_now(s, now)),
        key=lambda s: eviction_rank(s, now),
    )
    for s in candidates:
        if need <= 0:
            break
        actions.append(Unload(s.name, "pressure"))
        need -= s.ram_mib
    return actions


LoadHow = Literal["auto", "swap", "partial"]


def plan_load(
    states: States, name: str, free_mib: float | None, now: float, estimate: Estimate,
    reason: LoadReason = "user", *, margin_mib: float = 0.0,
    max_layers: Callable[[float], int] | None = None, how: LoadHow = "auto",
) -> list[Action] | Refusal:
    """Load ``name`` if it fits with ``margin_mib`` to spare; else, by ``how``: ``auto``
    swaps out the lowest-priority, least recent GPU models that free enough, else (for
    placement auto) puts as many layers as fit on the GPU (``max_layers``), or the CPU;
    ``swap`` only swaps (refused when no swap frees enough); ``partial`` never swaps and
    loads the layers that fit (the CPU when none does)."""
    state = states[name]
    if state.live:
        return Refusal(name, f"{name} is already {state.device}")
    placement = state.placement
    if placement == "cpu" or free_mib is None:
        return [Load(name, placement, reason)]
    need = estimate(state.config, placement)
    if need + margin_mib <= free_mib:
        return [Load(name, placement, reason)]
    victims = None if how == "partial" else \
        _swap_victims(states, state, need + margin_mib - free_mib, now)
    if victims is not None:
        evict: list[Action] = [Unload(v, "swap", for_model=name) for v in victims]
        return [*evict, Load(name, placement, reason)]
    if how == "partial" or (how == "auto" and placement == "auto"):
        layers = max_layers(free_mib) if max_layers is not None else 0
        return [Load(name, layers if layers >= 1 else "cpu", reason)]
    why = "swapping out" if how == "swap" else "unloading"
    return Refusal(
        name,
        f"{name} needs about {need:.0f} MiB of VRAM on GPU {state.config.gpu} (CUDA "
        f"overhead included) plus a {margin_mib:.0f} MiB margin, but only {free_mib:.0f} "
        f"MiB is free, and {why} every model that may be unloaded would not free enough",
    )


@dataclass(frozen=True)
class LoadPreview:
    """What a load of ``model`` would do now, before it is asked for: whether it fits
    whole (``fits``), which models a swap would unload (``swap``, with the VRAM they
    hold; empty when no swap frees enough or none is needed) and how many of
    ``total_layers`` fit on the GPU without moving anything (``partial_layers``)."""

    model: str
    gpu: int | None  # None: it would run on the CPU (placement cpu, or no GPU known)
    need_mib: float
    free_mib: float | None
    margin_mib: float
    fits: bool
    swap: tuple[tuple[str, float], ...]
    partial_layers: int
    total_layers: int

    @property
    def swap_frees_mib(self) -> float:
        return sum(mib for _, mib in self.swap)


def preview_load(
    states: States, name: str, free_mib: float | None, now: float, estimate: Estimate, *,
    margin_mib: float = 0.0, max_layers: Callable[[float], int] | None = None,
) -> LoadPreview:
    """The choices :func:`plan_load` has for ``name`` now (same pricing, nothing done)."""
    state = states[name]
    placement = state.placement
    total = state.config.layers
    if placement == "cpu" or free_mib is None:
        return LoadPreview(name, None, 0.0, free_mib, margin_mib, True, (), 0, total)
    need = estimate(state.config, placement)
    fits = need + margin_mib <= free_mib
    victims = [] if fits else \
        _swap_victims(states, state, need + margin_mib - free_mib, now) or []
    layers = total if fits else (max_layers(free_mib) if max_layers is not None else 0)
    return LoadPreview(
        name, state.config.gpu, need, free_mib, margin_mib, fits,
        tuple((v, states[v].held_vram_mib) for v in victims), max(0, layers), total)


def _swap_victims(states: States, wanted: ModelState, shortfall: float,
                  now: float) -> list[str] | None:
    gpu = wanted.config.gpu
    candidates = sorted(
        (s for s in states.values()
         if s.name != wanted.name and s.on_gpu and s.config.gpu == gpu
         and evictable_now(s, now)),
        key=lambda s: eviction_rank(s, now),
    )
    chosen: list[str] = []
    for s in candidates:
        if shortfall <= 0:
            break
        chosen.append(s.name)
        shortfall -= s.held_vram_mib
    return chosen if shortfall <= 0 else None


def restore_actions(states: States, free_mib: Mapping[int, float | None], now: float,
                    estimate: Estimate, margin_mib: float = 0.0) -> list[Action]:
    """Bring back models evicted by a swap once the displacer is idle (or gone) and the
    model fits again with ``margin_mib`` to spare (a GPU whose free VRAM is None is not
    a candidate). One restore per GPU per pass, most important first."""
    actions: list[Action] = []
    budget = dict(free_mib)
    waiting = sorted(
        (s for s in states.values() if s.displaced_by is not None and s.device == "unloaded"
         and not s.user_unloaded),
        key=lambda s: eviction_rank(s, now), reverse=True,
    )
    for s in waiting:
        displacer = states.get(s.displaced_by or "")
        if displacer is not None and displacer.live and priority_of(displacer, now) in (
                "active", "warm"):
            continue
        room = budget.get(s.config.gpu)
        need = estimate(s.config, s.placement)
        if room is None or need + margin_mib > room:
            continue
        budget[s.config.gpu] = room - need
        actions.append(Load(s.name, s.placement, "restore"))
    return actions


def room_actions(states: States, gpu: int, need_mib: float | None, now: float,
                 can_offload: CanOffload) -> list[Action]:
    """Make room on ``gpu`` for another program, in the relief order of pressure: free at
    least ``need_mib`` (None: everything). Only pinned models and models serving a
    request stay; the rest move to the CPU where their backend can, else unload."""
    candidates = sorted(
        (s for s in states.values()
         if s.on_gpu and s.config.gpu == gpu and s.eviction != "never" and s.in_use == 0
         and not s.serving),
        key=lambda s: eviction_rank(s, now),
    )
    actions: list[Action] = []
    need = need_mib
    for s in candidates:
        if need is not None and need <= 0:
            break
        actions.append(Offload(s.name, "make_room") if can_offload(s)
                       else Unload(s.name, "make_room"))
        if need is not None:
            need -= s.held_vram_mib
    return actions


@dataclass(frozen=True)
class GpuRoom:
    """What a GPU can take now without going back over the pressure clear level."""

    used_mib: float
    total_mib: float
    clear_pct: float
    under_pressure: bool
    settling: bool = False  # a model is on its way there: wait until it shows in the readings

    def fits(self, mib: float) -> bool:
        return not self.under_pressure and not self.settling and \
            self.used_mib + mib < self.clear_pct / 100.0 * self.total_mib


def return_actions(states: States, rooms: Mapping[int, GpuRoom], now: float,
                   estimate: Estimate) -> list[Action]:
    """Models that pressure moved to the CPU go back to where they belong once their GPU
    is calm, their wait is over and they fit with usage staying under the clear level
    (counting what they held there, when that was more than the estimate).
    One return per GPU per pass, most important first."""
    waiting = sorted(
        (s for s in states.values()
         if s.home is not None and s.device == "cpu" and s.return_after is not None
         and now >= s.return_after and s.in_use == 0 and not s.serving),
        key=lambda s: eviction_rank(s, now), reverse=True,
    )
    actions: list[Action] = []
    busy: set[int] = set()
    for s in waiting:
        room = rooms.get(s.config.gpu)
        home = s.home
        if room is None or home is None or s.config.gpu in busy:
            continue
        if room.fits(max(estimate(s.config, home), s.home_vram_mib)):  # as much as it held
            busy.add(s.config.gpu)
            actions.append(Return(s.name, home))
    return actions
