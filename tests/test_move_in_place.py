"""The lifecycle moves a model whose backend can move in place (the torch worker) without
stopping it: offloaded to the CPU and back by pressure with no restart, the same process
throughout; the ordinary stop-and-start when the backend cannot move it now."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

import lifecycle_rig
from gpuwarden.engine.lifecycle.backend import (
    ActivityCallback,
    ExitCallback,
    Launch,
    MovesInPlace,
    ReadyCallback,
)
from gpuwarden.engine.lifecycle.config import PressureConfig
from gpuwarden.engine.lifecycle.crash import DeathReport
from gpuwarden.engine.lifecycle.simulated_backend import SimulatedBackend, _Running, owner
from lifecycle_helpers import model

RETURN_WAIT_S = 30.0


@dataclass
class InPlace(SimulatedBackend):
    """The simulated backend, plus moves in place: the booking follows the new device,
    the process (its pid) stays."""

    movable: bool = True
    moves: list[str] = field(default_factory=list)
    stops: list[int] = field(default_factory=list)

    def __init__(self, *args: object, **kw: object) -> None:
        SimulatedBackend.__init__(self, *args, **kw)  # type: ignore[arg-type]
        self.movable, self.moves, self.stops = True, [], []

    def can_move(self, model: str, device: str, gpu_uuid: str | None) -> bool:
        run = self._running.get(model)
        return self.movable and run is not None and run.ready

    def move(self, launch: Launch, on_ready: ReadyCallback, on_exit: ExitCallback,
             on_activity: ActivityCallback | None = None) -> None:
        name = launch.config.name
        old = self._running[name]
        gpu = self._gpu(launch.config.gpu)
        assert gpu is not None
        gpu.release(owner(name))
        fp = self.footprint(launch)
        if fp.vram_mib > 0:
            gpu.allocate(owner(name), fp.vram_mib, pid=old.pid)
        self.moves.append(launch.device)
        self._running[name] = _Running(launch, on_ready, on_exit, self._clock.time(), fp,
                                       old.pid)

    def stop(self, model: str, instance: int) -> None:
        self.stops.append(instance)
        super().stop(model, instance)


@pytest.fixture
def rig(monkeypatch: pytest.MonkeyPatch) -> lifecycle_rig.Rig:
    monkeypatch.setattr(lifecycle_rig, "SimulatedBackend", InPlace)
    rig = lifecycle_rig.Rig(model("m", vram_mib=8000.0, placement="gpu", eviction="pressure",
                                  load_time_s=1.0),
                            pressure=PressureConfig(return_wait_s=RETURN_WAIT_S))
    assert isinstance(rig.backend, MovesInPlace)
    rig.manager.load("m")
    rig.step(60.0)  # past the time a model is kept after it loads
    assert rig.device("m") == "gpu"
    return rig


def test_pressure_moves_it_to_the_cpu_and_back_without_a_restart(rig) -> None:
    backend: InPlace = rig.backend  # type: ignore[assignment]
    pid = backend.pids("m")
    rig.gpu.allocate("game", 15000.0)
    rig.step(3.0)
    assert rig.device("m") == "cpu" and backend.moves == ["cpu"]
    offloaded = rig.of("model.offloaded", "m")
    assert [e.to_dict()["reason"] for e in offloaded] == ["pressure"]
    assert offloaded[0].to_dict()["freed_vram_mib"] == pytest.approx(8000.0, rel=0.05)
    assert [e.to_dict()["reason"] for e in rig.of("model.loading", "m")] == ["user", "offload"]
    assert rig.of("model.unloaded", "m") == []
    rig.gpu.release("game")
    rig.step(RETURN_WAIT_S + 3.0)
    assert rig.device("m") == "gpu" and backend.moves == ["cpu", "gpu"]
    assert rig.of("model.loading", "m")[-1].to_dict()["reason"] == "restore"
    assert backend.stops == [] and backend.pids("m") == pid  # never stopped: one process


def test_the_report_of_the_instance_before_the_move_is_ignored(rig) -> None:
    backend: InPlace = rig.backend  # type: ignore[assignment]
    before = rig.manager.state("m").instance
    assert rig.manager.offload("m").ok
    rig.step(2.0)
    assert rig.device("m") == "cpu" and rig.manager.state("m").instance != before
    run = backend._running["m"]
    run.on_exit(DeathReport("m", before, exit_code=1, log_tail=("old news",)))
    assert rig.device("m") == "cpu" and rig.of("model.crashed") == []


def test_a_backend_that_cannot_move_it_now_stops_and_starts_it(rig) -> None:
    backend: InPlace = rig.backend  # type: ignore[assignment]
    backend.movable = False
    first = rig.manager.state("m").instance
    assert rig.manager.offload("m").ok
    rig.step(3.0)
    assert rig.device("m") == "cpu"
    assert backend.moves == [] and backend.stops == [first]
