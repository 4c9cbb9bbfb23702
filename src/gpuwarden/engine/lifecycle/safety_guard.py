"""The hardware limits acting on the models: what a safety verdict means for a load that
is about to start (wait for the GPU to cool down, fewer parallel slots) and which models
an emergency stop takes. Pure functions of (verdicts, states, now): the manager carries
out what they decide."""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from gpuwarden.engine.lifecycle.actions import Load
from gpuwarden.engine.lifecycle.state import ModelState
from gpuwarden.engine.safety.verdict import Verdict

DEFAULT_PARALLEL = 4  # llama-server's slots when the config does not say
_PARALLEL_FLAGS = ("--parallel", "-np")


@dataclass(frozen=True)
class Held:
    """A load waiting for its GPU (or the host) to cool down."""

    load: Load
    since: float
    until: float  # refused after this (cooldown_timeout_s)
    reason: str


def uses_gpu(device: str) -> bool:
    return device != "cpu"


def blocking(verdicts: Mapping[str, Verdict], gpu: int, on_gpu: bool) -> Verdict | None:
    """The verdict that stops a load from starting now (cooldown or abort), if any: the
    host's for every load, the GPU's for a load that uses it."""
    keys = ("host", f"gpu{gpu}") if on_gpu else ("host",)
    for key in keys:
        verdict = verdicts.get(key)
        if verdict is not None and not verdict.allows_loads:
            return verdict
    return None


def throttle(verdicts: Mapping[str, Verdict], gpu: int, on_gpu: bool) -> float:
    """How hard the next start should back off (0..1): the GPU's verdict for a model on
    it, the host's for one on the CPU."""
    verdict = verdicts.get(f"gpu{gpu}" if on_gpu else "host")
    return 0.0 if verdict is None else verdict.throttle


def parallel_slots(args: Iterable[str], throttle_factor: float) -> int | None:
    """The ``--parallel`` a throttled llama-server starts with (None: not throttled): the
    configured slots (default 4) scaled down, at least one."""
    if throttle_factor <= 0:
        return None
    arg_list = list(args)
    base = DEFAULT_PARALLEL
    for flag in _PARALLEL_FLAGS:
        if flag in arg_list[:-1]:
            value = arg_list[arg_list.index(flag) + 1]
            base = int(value) if value.isdigit() and int(value) > 0 else base
    return max(1, math.floor(base * (1.0 - min(1.0, throttle_factor))))


def sets_parallel(args: Iterable[str]) -> bool:
    """Whether the config's own arguments choose the number of slots."""
    return any(arg in _PARALLEL_FLAGS for arg in args)


def emergency_victims(states: Mapping[str, ModelState], gpu: int | None,
                      heading_there: Collection[str]) -> list[str]:
    """The models an emergency stop takes: for a GPU, every one running on it and every
    one with a start pending there (``heading_there``: a held load, a load waiting for a
    swap, a move back to the GPU, a scheduled restart); for the host (gpu None), every
    model that runs or is about to."""
    def takes(s: ModelState) -> bool:
        if gpu is None:
            return s.live or s.name in heading_there
        return s.config.gpu == gpu and (
            (s.live and (s.on_gpu or s.placement != "cpu")) or s.name in heading_there)

    return [s.name for s in states.values() if takes(s)]
