"""The engine end to end on a simulated GPU and a fake clock: models come back to the GPU
after pressure (without flapping), a user's choice to keep one on the CPU stands, and
pressure is relieved by what models really hold, not by what was estimated."""

from __future__ import annotations

from pathlib import Path

from gpuwarden.engine.lifecycle.config import PressureConfig
from gpuwarden.engine.lifecycle.core import FLAP_WINDOW_S
from helpers import drive
from lifecycle_helpers import model
from test_engine_facade import engine_for, row

RETURN_WAIT_S = PressureConfig().return_wait_s

PRESSURE_AND_RELIEF = """
[simulation]
gpus = 1
[[simulation.gpu]]
memory_total_mib = 24576

[[step]]
at = 100
action = "vram_grab"
owner = "game"
mib = 15000

[[step]]
at = 200
action = "vram_free"
owner = "game"

[[step]]
at = 230
action = "vram_grab"
owner = "game"
mib = 15000

[[step]]
at = 260
action = "vram_free"
owner = "game"
"""


def test_a_model_pressure_moved_to_the_cpu_comes_back_and_waits_longer_if_it_flaps(
        tmp_path: Path):
    engine, clock, events = engine_for(
        model("m", vram_mib=8000.0, placement="gpu", eviction="pressure"),
        model("mine", vram_mib=2000.0, placement="gpu", eviction="pressure"),
        tmp_path=tmp_path, scenario=PRESSURE_AND_RELIEF)
    engine.load("m")
    engine.load("mine")
    drive(engine, clock, 50.0)
    assert engine.offload("mine").ok  # the user's choice: it stays on the CPU
    drive(engine, clock, 55.0)  # t = 105: the game took 15 GB at 100
    assert row(engine, "m").device == "cpu"
    offloaded = next(e for e in events if e.type == "model.offloaded"
                     and e.to_dict()["model"] == "m")
    assert offloaded.to_dict()["reason"] == "pressure"
    first_try = row(engine, "m").returns_to_gpu_at
    assert first_try == offloaded.ts + RETURN_WAIT_S
    drive(engine, clock, 80.0)  # t = 185: the wait is over but 8 GB would not fit yet
    assert row(engine, "m").device == "cpu"
    drive(engine, clock, 20.0)  # t = 205: the game is gone
    back = [e.to_dict() for e in events if e.type == "model.loading"
            and e.to_dict()["model"] == "m"]
    assert back[-1]["reason"] == "restore" and back[-1]["placement"] == "gpu"
    assert row(engine, "m").device == "gpu"
    drive(engine, clock, 30.0)  # t = 235: pushed off again soon after coming back
    assert row(engine, "m").device == "cpu"
    second = [e for e in events if e.type == "model.offloaded" and e.to_dict()["model"] == "m"]
    assert len(second) == 2 and second[1].ts - second[0].ts < FLAP_WINDOW_S
    assert row(engine, "m").returns_to_gpu_at == second[1].ts + 2 * RETURN_WAIT_S
    drive(engine, clock, 2 * RETURN_WAIT_S + 5)
    assert row(engine, "m").device == "gpu"
    assert row(engine, "mine").device == "cpu"  # the user said CPU: still there
    engine.close()


MEASURED_MORE = """
[simulation]
gpus = 1
[[simulation.gpu]]
memory_total_mib = 24576

[[simulation.model]]
name = "greedy"
vram_scale = 3.0

[[step]]
at = 100
action = "vram_grab"
owner = "game"
mib = 11900
"""


def test_pressure_is_relieved_by_what_a_model_really_holds(tmp_path: Path):
    engine, clock, events = engine_for(
        model("greedy", vram_mib=3000.0, placement="gpu", eviction="pressure", priority=-1),
        model("honest", vram_mib=3000.0, placement="gpu", eviction="pressure"),
        tmp_path=tmp_path, scenario=MEASURED_MORE)
    engine.load("greedy")
    engine.load("honest")
    drive(engine, clock, 60.0)
    greedy = row(engine, "greedy")
    assert (greedy.vram_est_mib, greedy.vram_mib) == (3000.0, 9000.0)
    ready = next(e.to_dict() for e in events if e.type == "model.ready"
                 and e.to_dict()["model"] == "greedy")
    assert (ready["vram_est_mib"], ready["vram_mib"]) == (3000.0, 9000.0)
    drive(engine, clock, 45.0)  # 98 % used: about 4.5 GB must go
    moved = [e.to_dict() for e in events if e.type == "model.offloaded"]
    assert [(m["model"], m["freed_vram_mib"]) for m in moved] == [("greedy", 9000.0)]
    assert row(engine, "honest").device == "gpu"  # by the estimate it would have gone too
    engine.close()
