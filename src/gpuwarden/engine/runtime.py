"""Composition root: builds the probes and the sampler from the user's options."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from gpuwarden.engine import paths
from gpuwarden.engine.clock import Clock
from gpuwarden.engine.events import EventBus
from gpuwarden.engine.telemetry.history import DEFAULT_HISTORY_S
from gpuwarden.engine.telemetry.host import PsutilHostProbe
from gpuwarden.engine.telemetry.nvml import NvmlProbe
from gpuwarden.engine.telemetry.probe import GpuProbe
from gpuwarden.engine.telemetry.sampler import DEFAULT_INTERVAL_S, Sampler
from gpuwarden.engine.telemetry.scenario import load_scenario
from gpuwarden.engine.telemetry.simulated import SimulatedProbe
from gpuwarden.engine.telemetry.snapshot import Snapshot

MAX_SIMULATED_GPUS = 8
CPU_MEASURE_S = 0.25


@dataclass(frozen=True)
class SimulateSpec:
    """``--simulate``: a number of simulated GPUs, or a scenario file (which sets its own)."""

    count: int = 1
    scenario: Path | None = None


@dataclass(frozen=True)
class TelemetryOptions:
    simulate: SimulateSpec | None = None
    interval_s: float = DEFAULT_INTERVAL_S
    history_s: float = DEFAULT_HISTORY_S
    disk_paths: tuple[Path, ...] = field(default_factory=tuple)
    per_core: bool = False
    seed: int = 0


def parse_simulate(text: str) -> SimulateSpec:
    """Parse the value of ``--simulate``: ``N`` GPUs or a scenario file path.

    Raises ValueError with a sentence for the user.
    """
    try:
        count = int(text)
    except ValueError:
        path = Path(text)
        try:
            is_file = path.is_file()
        except OSError:  # a name too long to be a file at all
            is_file = False
        if not is_file:
            raise ValueError(
                f"'{text[:80]}' is neither a number of GPUs (1-{MAX_SIMULATED_GPUS}) "
                "nor an existing scenario file"
            ) from None
        return SimulateSpec(scenario=path)
    if not 1 <= count <= MAX_SIMULATED_GPUS:
        raise ValueError(
            f"the number of simulated GPUs must be between 1 and {MAX_SIMULATED_GPUS}, got {count}"
        )
    return SimulateSpec(count=count)


def make_gpu_probe(simulate: SimulateSpec | None, seed: int = 0) -> GpuProbe:
    """The simulated GPU when asked for, else NVML (which copes with no driver).

    Raises ScenarioError (a ValueError) for a bad scenario file.
    """
    if simulate is None:
        return NvmlProbe()
    if simulate.scenario is not None:
        return SimulatedProbe.from_scenario(load_scenario(simulate.scenario))
    return SimulatedProbe(count=simulate.count, seed=seed)


def default_disk_paths() -> tuple[Path, ...]:
    return (paths.data_dir(),)


def build_sampler(
    options: TelemetryOptions, *, bus: EventBus | None = None, clock: Clock | None = None
) -> Sampler:
    host = PsutilHostProbe(
        options.disk_paths or default_disk_paths(), per_core=options.per_core
    )
    return Sampler(
        make_gpu_probe(options.simulate, options.seed),
        host,
        bus=bus,
        clock=clock,
        interval_s=options.interval_s,
        history_s=options.history_s,
    )


def take_snapshot(options: TelemetryOptions) -> Snapshot:
    """One reading of everything, for `gpuwarden status` and the no-display fallback.
    psutil measures CPU use between two reads, so the second comes a moment later."""
    sampler = build_sampler(options)
    try:
        time.sleep(CPU_MEASURE_S)
        return sampler.tick()
    finally:
        sampler.close()
