"""The engine's one face: commands that answer and never raise, rows for every model,
events delivered outside the lock, and a step that is woken early by a crash."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from gpuwarden.engine.clock import FakeClock
from gpuwarden.engine.events import Event
from gpuwarden.engine.facade import Engine, ServicePaths
from gpuwarden.engine.lifecycle.config import Config, RestartConfig
from gpuwarden.engine.runtime import SimulateSpec, TelemetryOptions
from helpers import drive
from lifecycle_helpers import model

GIB = 1024.0


def engine_for(*models, tmp_path: Path | None = None, scenario: str | None = None,
               restart: RestartConfig | None = None, interval_s: float = 1.0,
               start: bool = True) -> tuple[Engine, FakeClock, list[Event]]:
    clock = FakeClock()
    spec = SimulateSpec()
    if scenario is not None:
        assert tmp_path is not None
        path = tmp_path / "scenario.toml"
        path.write_text(scenario)
        spec = SimulateSpec(scenario=path)
    config = Config(models=models, restart=restart or RestartConfig())
    engine = Engine.build(config, TelemetryOptions(simulate=spec, interval_s=interval_s),
                          ServicePaths(None, None), clock=clock)
    events: list[Event] = []
    engine.subscribe(events.append)
    if start:
        engine.start(watch_config=False)
    return engine, clock, events


def row(engine: Engine, name: str):
    found = engine.model(name)
    assert found is not None
    return found


COMMANDS = [
    ("load", ()), ("unload", ()), ("offload", ()), ("restart", ()), ("pin", ()),
    ("unpin", ()), ("set_policy", ("never",)), ("set_priority", (3,)),
]


@pytest.mark.parametrize(("command", "args"), COMMANDS)
def test_a_command_for_an_unknown_model_is_refused_with_its_name(command, args):
    engine, _, _ = engine_for(model("chat"))
    result = getattr(engine, command)("nope", *args)
    assert not result.ok and "'nope'" in result.message
    engine.close()


def test_commands_in_the_wrong_state_are_refused_or_said_plainly():
    engine, clock, _ = engine_for(model("chat", placement="cpu"))
    offload = engine.offload("chat")
    assert not offload.ok and "not on a GPU" in offload.message
    assert engine.unload("chat").message == "chat is not loaded"
    assert engine.load("chat").ok
    drive(engine, clock, 1.0)
    assert engine.load("chat").message == "chat is already cpu"
    assert not engine.make_room(5, None).ok  # no such GPU
    assert not engine.make_room(0, -1).ok
    engine.close()


def test_every_configured_model_has_a_row_loaded_or_not():
    engine, clock, _ = engine_for(model("a", vram_mib=2 * GIB, placement="gpu"),
                                  model("b", placement="cpu", priority=4))
    engine.load("a")
    drive(engine, clock, 1.0)
    a, b = engine.models()
    assert (a.name, a.state, a.device, a.gpu_layers) == ("a", "ready", "gpu", 32)
    assert a.vram_est_mib == 2 * GIB and a.vram_mib == 2 * GIB  # measured by pid
    assert a.pids and a.idle_s is not None
    assert (b.name, b.state, b.vram_mib, b.idle_s) == ("b", "unloaded", None, None)
    assert (b.priority, b.priority_source) == (4, "config")
    assert engine.set_priority("b", 9).ok
    assert (row(engine, "b").priority, row(engine, "b").priority_source) == (9, "user")
    engine.close()


def test_pin_and_unpin_set_the_policy_and_say_where_it_came_from():
    engine, _, _ = engine_for(model("a"), model("p", eviction="never"))
    assert engine.pin("a").message == "a is pinned"
    assert (row(engine, "a").eviction, row(engine, "a").eviction_source) == ("never", "user")
    assert engine.unpin("a").ok
    assert (row(engine, "a").eviction, row(engine, "a").eviction_source) == ("idle", "config")
    assert engine.unpin("p").ok  # pinned by the config: unpinning overrides it
    assert (row(engine, "p").eviction, row(engine, "p").eviction_source) == ("idle", "user")
    engine.close()


def test_make_room_moves_all_but_pinned_models_and_says_what_it_moved():
    engine, clock, events = engine_for(
        model("pinned", vram_mib=3 * GIB, placement="gpu", eviction="never"),
        model("old", vram_mib=4 * GIB, placement="gpu"),
        model("new", vram_mib=5 * GIB, placement="gpu"))
    for name in ("pinned", "old", "new"):
        engine.load(name)
        drive(engine, clock, 40.0)  # "old" was used longest ago
    result = engine.make_room(0, 3.0)  # 3 GiB: the least recently used one is enough
    assert result.ok and "moving old to the CPU" in result.message and "new" not in result.message
    drive(engine, clock, 1.0)
    assert [r.device for r in engine.models()] == ["gpu", "cpu", "gpu"]
    everything = engine.make_room(0, None)
    assert everything.ok and "new" in everything.message and "pinned" not in everything.message
    drive(engine, clock, 1.0)
    assert [r.device for r in engine.models()] == ["gpu", "cpu", "cpu"]
    offloaded = [e.to_dict()["reason"] for e in events if e.type == "model.offloaded"]
    assert offloaded == ["make_room", "make_room"]
    drive(engine, clock, 300.0)  # moved for the user's game: never comes back on its own
    assert row(engine, "new").device == "cpu" and row(engine, "new").returns_to_gpu_at is None
    assert not engine.make_room(0, None).ok  # only the pinned one is left
    engine.close()


def test_events_reach_listeners_after_the_lock_is_released_in_seq_order():
    engine, clock, _ = engine_for(model("a", vram_mib=2 * GIB, placement="gpu"),
                                  restart=RestartConfig(backoff_base_s=0.5))
    lock = engine._manager._lock
    held: list[str] = []
    seqs: list[int] = []

    def check(event: Event) -> None:
        seqs.append(event.seq)
        free = threading.Event()

        def try_lock() -> None:
            if lock.acquire(blocking=False):
                lock.release()
                free.set()

        other = threading.Thread(target=try_lock)
        other.start()
        other.join()
        if not free.is_set():
            held.append(event.type)

    engine.subscribe(check)
    engine.load("a")
    drive(engine, clock, 2.0)
    engine._simulated_backend.crash("a")
    drive(engine, clock, 3.0)
    engine.unload("a")
    engine.close()
    assert {"model.loading", "model.ready", "model.crashed", "model.restart_scheduled",
            "model.unloaded"} <= {e.type for e in engine.events_since(0)}
    assert held == []
    assert seqs == sorted(seqs) and len(seqs) == len(set(seqs))


def test_a_scheduled_restart_wakes_the_driver_and_shortens_its_wait():
    engine, clock, events = engine_for(model("a", placement="cpu"),
                                       restart=RestartConfig(backoff_base_s=0.05),
                                       interval_s=2.5)
    woken = threading.Event()
    engine.set_waker(woken.set)
    engine.load("a")
    drive(engine, clock, 3.0)
    assert engine.step() > 1.0  # nothing due but the next sample
    engine._simulated_backend.crash("a")  # as a backend thread reports a death
    assert woken.is_set()
    assert engine.step() == pytest.approx(0.05, abs=1e-6)  # the restart, not the sample
    clock.advance(0.05)
    engine.step()
    assert [e.type for e in events][-2:] == ["model.restart_scheduled", "model.loading"]
    engine.close()


def test_events_since_a_seq_resume_where_a_client_left_off():
    engine, clock, _ = engine_for(model("a", placement="cpu"))
    engine.load("a")
    drive(engine, clock, 1.0)
    everything = engine.events_since(0)
    middle = everything[len(everything) // 2].seq
    assert [e.seq for e in engine.events_since(middle)] == [
        e.seq for e in everything if e.seq > middle]
    engine.close()


@pytest.mark.parametrize(("command", "args", "said"), [
    ("set_policy", ("sometimes",), "eviction policy must be one of"),
    ("set_priority", ("high",), "whole number"),
    ("set_priority", (True,), "whole number"),
])
def test_bad_values_are_refused_before_they_reach_the_state(command, args, said):
    engine, _, _ = engine_for(model("a"))
    result = getattr(engine, command)("a", *args)
    assert not result.ok and said in result.message
    assert row(engine, "a").eviction == "idle" and row(engine, "a").priority == 0
    engine.close()


@pytest.mark.parametrize("gib", ["2", float("nan"), float("inf"), 0, True])
def test_make_room_refuses_what_is_not_an_amount(gib):
    engine, _, _ = engine_for(model("a"))
    result = engine.make_room(0, gib)
    assert not result.ok and "GiB above 0" in result.message
    engine.close()


def test_a_model_whose_processes_the_driver_does_not_list_counts_its_estimate():
    engine, clock, _ = engine_for(model("a", vram_mib=3 * GIB, placement="gpu"),
                                  model("b", vram_mib=3 * GIB, placement="gpu"))
    engine._simulated_backend.pids = lambda _model: (999_999,)  # as in a container
    for name in ("a", "b"):
        engine.load(name)
        drive(engine, clock, 40.0)
    assert row(engine, "a").vram_mib is None and row(engine, "a").vram_est_mib == 3 * GIB
    result = engine.make_room(0, 1.0)  # one is enough, by its estimate
    assert result.ok and result.message == "moving a to the CPU: about 3.0 GiB freed on GPU 0"
    engine.close()


def test_a_restart_while_the_old_process_stops_does_not_make_the_driver_spin(tmp_path):
    engine, clock, _ = engine_for(model("a", placement="cpu"), interval_s=1.0)
    engine._simulated_backend._stop_time_s = 2.0  # a server that takes its time to stop
    engine.load("a")
    drive(engine, clock, 1.0)
    assert engine.restart("a").ok
    waits = []
    for _ in range(5):
        waits.append(engine.step())
        clock.advance(waits[-1])
    assert min(waits) > 0.5  # woken by the stop or the next sample, never in a busy loop
    drive(engine, clock, 3.0)
    assert row(engine, "a").state == "ready"
    engine.close()


def test_starting_twice_starts_once():
    engine, clock, events = engine_for(model("a", placement="cpu", autostart=True))
    drive(engine, clock, 1.0)
    engine.start(watch_config=False)  # a second driver (or a script) calling it again
    drive(engine, clock, 1.0)
    assert [e.type for e in events].count("model.loading") == 1
    engine.close()
