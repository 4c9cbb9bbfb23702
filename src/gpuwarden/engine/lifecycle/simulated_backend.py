"""A model backend for demos and tests: loading takes ``load_time_s``, and a loaded model
books its VRAM on the simulated GPU, and the rest of it in simulated host RAM, until it
stops or crashes.

Each launch is a fake process with its own fake pid (:meth:`SimulatedBackend.pids`), under
which its booking shows in the simulated GPU's process list, as a real server's memory
shows in NVML's. A scenario's ``[[simulation.model]]`` ``vram_scale`` makes a model book
more or less than its config's ``vram_mib`` says, so the estimate can be wrong.

A model that does not fit fails to load with the message llama.cpp would print, so the
GPU out-of-memory path of the crash policy runs for real against the simulation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from gpuwarden.engine.clock import Clock
from gpuwarden.engine.lifecycle.backend import (
    ActivityCallback,
    ExitCallback,
    Footprint,
    Launch,
    ReadyCallback,
)
from gpuwarden.engine.lifecycle.crash import DeathReport
from gpuwarden.engine.telemetry.simulated import SimulatedGpu, SimulatedOutOfMemory, SimulatedProbe
from gpuwarden.engine.telemetry.simulated_ram import SimulatedRam

log = logging.getLogger(__name__)

DEFAULT_VRAM_MIB = 4096.0
DEFAULT_RAM_MIB = 4096.0
PID_BASE = 50000  # launch N is fake pid PID_BASE + N: far from SimulatedGpu's own 4000+
_OOM_LINES = (
    "ggml_backend_cuda_buffer_type_alloc_buffer: allocating {mib:.0f} MiB on device {gpu}: "
    "cudaMalloc failed: out of memory",
    "llama_model_load: error loading model: unable to allocate CUDA0 buffer",
    "main: exiting due to model loading error",
)


def footprint(launch: Launch, vram_scale: float = 1.0) -> Footprint:
    """What a simulated model holds: VRAM in proportion to its GPU layers (times
    ``vram_scale``, the scenario's knob), the rest in RAM."""
    cfg = launch.config
    vram = cfg.vram_mib or DEFAULT_VRAM_MIB
    ram = cfg.ram_mib or DEFAULT_RAM_MIB
    share = launch.gpu_layers / cfg.layers if cfg.layers else 0.0
    return Footprint(vram_mib=vram * share * vram_scale, ram_mib=ram * (1.0 - share))


@dataclass
class _Running:
    launch: Launch
    on_ready: ReadyCallback
    on_exit: ExitCallback
    ready_at: float
    footprint: Footprint  # what it booked
    pid: int
    ready: bool = False
    exit_at: float | None = None  # stopping: exits (cleanly) at this time


def owner(model: str) -> str:
    return f"model:{model}"


class SimulatedBackend:
    kind = "simulated"
    can_offload = True

    def __init__(self, probe: SimulatedProbe | None, clock: Clock,
                 ram: SimulatedRam | None = None, stop_time_s: float = 0.0) -> None:
        self._probe = probe
        self._clock = clock
        self._ram = ram
        self._stop_time_s = stop_time_s  # > 0: stops finish later, like real processes
        self._running: dict[str, _Running] = {}

    def attach(self, probe: SimulatedProbe) -> None:
        """Book on these simulated GPUs from now on (what runs now keeps its booking)."""
        self._probe = probe

    def start(self, launch: Launch, on_ready: ReadyCallback, on_exit: ExitCallback,
              on_activity: ActivityCallback | None = None) -> None:
        name = launch.config.name
        fp = self.footprint(launch)
        pid = self._new_pid(launch)
        if fp.vram_mib > 0 and not self._book(launch, fp, pid):
            on_exit(DeathReport(name, launch.instance, exit_code=1,
                                log_tail=tuple(line.format(mib=fp.vram_mib,
                                                           gpu=launch.config.gpu)
                                               for line in _OOM_LINES)))
            return
        if self._ram is not None and fp.ram_mib > 0:
            self._ram.allocate(owner(name), fp.ram_mib)
        ready_at = self._clock.time() + launch.config.load_time_s
        self._running[name] = _Running(launch, on_ready, on_exit, ready_at, fp, pid)

    def footprint(self, launch: Launch) -> Footprint:
        """What ``launch`` books: :func:`footprint` with the scenario's ``vram_scale``."""
        return footprint(launch, self._vram_scale(launch.config.name))

    def _vram_scale(self, model: str) -> float:
        return self._probe.scenario.vram_scale(model) if self._probe is not None else 1.0

    def _new_pid(self, launch: Launch) -> int:
        """``PID_BASE + instance``; instances are unique per manager, the loop covers a
        backend shared by two of them."""
        taken = {run.pid for run in self._running.values()}
        pid = PID_BASE + launch.instance
        while pid in taken:
            pid += 1
        return pid

    def pids(self, model: str) -> tuple[int, ...]:
        """The fake pid of ``model``'s process (loading, ready or stopping); () when it
        does not run."""
        run = self._running.get(model)
        return (run.pid,) if run is not None else ()

    def _book(self, launch: Launch, fp: Footprint, pid: int) -> bool:
        gpu = self._gpu(launch.config.gpu)
        if gpu is None:
            return True
        try:
            gpu.allocate(owner(launch.config.name), fp.vram_mib, pid=pid)
        except SimulatedOutOfMemory as exc:
            log.info("simulated GPU out of memory for %s: %s", launch.config.name, exc)
            return False
        return True

    def _gpu(self, index: int) -> SimulatedGpu | None:
        if self._probe is None or index >= self._probe.count:
            return None
        return self._probe.gpu(index)

    def stop(self, model: str, instance: int) -> None:
        run = self._running.get(model)
        if run is None or run.launch.instance != instance:
            return
        if self._stop_time_s > 0:
            run.exit_at = run.exit_at or self._clock.time() + self._stop_time_s
            return
        self._finish_stop(run)

    def _finish_stop(self, run: _Running) -> None:
        model, instance = run.launch.config.name, run.launch.instance
        if self._take(model, instance) is not None:
            run.on_exit(DeathReport(model, instance, exit_code=0, expected=True))

    def crash(self, model: str, exit_code: int = 137, log_tail: tuple[str, ...] = ()) -> bool:
        """Kill a running model as the kernel or a bug would (scenario `crash`)."""
        run = self._running.get(model)
        if run is None:
            return False
        self._take(model, run.launch.instance)
        signal = 9 if exit_code == 137 else None
        run.on_exit(DeathReport(model, run.launch.instance, exit_code=exit_code, signal=signal,
                                log_tail=log_tail))
        return True

    def _take(self, model: str, instance: int) -> _Running | None:
        run = self._running.get(model)
        if run is None or run.launch.instance != instance:
            return None
        del self._running[model]
        if self._ram is not None:
            self._ram.release(owner(model))
        gpu = self._gpu(run.launch.config.gpu)
        if gpu is not None:
            gpu.release(owner(model))
        return run

    def poll(self, now: float) -> None:
        for run in list(self._running.values()):
            if run.exit_at is not None:
                if now >= run.exit_at:
                    self._finish_stop(run)
            elif not run.ready and now >= run.ready_at:
                run.ready = True
                run.on_ready(run.launch.instance, run.footprint)

    def next_due(self) -> float | None:
        """When the next simulated model becomes ready or finishes stopping."""
        due = [run.exit_at if run.exit_at is not None else run.ready_at
               for run in self._running.values() if run.exit_at is not None or not run.ready]
        return min(due) if due else None

    def running(self) -> list[str]:
        return sorted(self._running)
