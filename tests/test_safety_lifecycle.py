"""Hardware limits acting on models, on the simulated GPU (whose slowdown threshold is
88 C and enforced power limit 350 W, so warn is 83 C / 332.5 W and hard 88 C / 367.5 W)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from helpers import drive
from lifecycle_helpers import model
from test_engine_facade import engine_for, row

HEAT_WAVE = """
[simulation]
gpus = 1

[[step]]
at = 10
action = "temperature"
celsius = 85

[[step]]
at = 40
action = "temperature"
celsius = 92

[[step]]
at = 60
action = "power_spike"
watts = 345
duration_s = 5

[[step]]
at = 80
action = "unsupported"
field = "temperature_c"

[[step]]
at = 90
action = "power_spike"
watts = 345
duration_s = 5
"""


def kinds(events, scope="gpu"):
    return [e.to_dict()["kind"] for e in events
            if e.type == "safety.verdict" and e.to_dict()["scope"] == scope]


def test_heat_holds_loads_then_aborts_then_power_throttles(tmp_path: Path):
    engine, clock, events = engine_for(
        model("a", vram_mib=4000.0, placement="gpu", eviction="never"),
        model("b", vram_mib=4000.0, placement="gpu", args=("--parallel", "4")),
        model("c", placement="cpu"),
        tmp_path=tmp_path, scenario=HEAT_WAVE)
    engine.load("a")
    engine.load("c")
    drive(engine, clock, 11.0)  # 85 C at t = 10: over warn
    assert engine.verdicts()["gpu0"].kind == "wait_cooldown"
    result = engine.load("b")
    assert result.ok and "will load once it is safe" in result.message
    assert row(engine, "b").state == "waiting"
    assert "warn limit 83 C" in (row(engine, "b").waiting_for or "")
    assert [e.to_dict()["model"] for e in events if e.type == "model.waiting"] == ["b"]
    drive(engine, clock, 20.0)  # it cools under warn - 5 C, then b loads
    assert engine.verdicts()["gpu0"].kind == "proceed"
    assert row(engine, "b").state == "ready" and row(engine, "b").waiting_for is None

    drive(engine, clock, 10.0)  # 92 C at t = 40: over the card's slowdown
    stop = next(e for e in events if e.type == "safety.emergency_stop")
    assert stop.to_dict()["gpu"] == 0 and sorted(stop.to_dict()["models"]) == ["a", "b"]
    unloaded = {e.to_dict()["model"]: e for e in events if e.type == "model.unloaded"}
    assert unloaded["a"].to_dict()["reason"] == "safety"
    assert unloaded["a"].ts == stop.ts == unloaded["b"].ts  # in the same sample
    assert row(engine, "c").state == "ready"  # on the CPU: not on that GPU
    assert row(engine, "a").state == "unloaded"  # pinned, yet not restarted by itself

    drive(engine, clock, 23.0)  # t = 64: cool again, power near 345 W (warn 332.5 W)
    power = engine.verdicts()["gpu0"]
    assert power.kind == "reduce_intensity" and 0 < power.throttle < 1
    assert "W" in power.reason
    drive(engine, clock, 25.0)  # t = 89: the temperature field is gone
    assert engine.verdicts()["gpu0"].unknown == ("temperature",)
    drive(engine, clock, 5.0)  # t = 94: a power spike with no temperature reading
    blind = engine.verdicts()["gpu0"]
    assert blind.kind == "reduce_intensity" and "temperature" in blind.unknown
    assert kinds(events) == ["wait_cooldown", "proceed", "abort", "proceed",
                             "reduce_intensity", "proceed", "reduce_intensity"]
    engine.close()


def test_a_held_load_is_refused_with_the_reason_after_the_cooldown_time_out(tmp_path: Path):
    from gpuwarden.engine.clock import FakeClock
    from gpuwarden.engine.facade import Engine, ServicePaths
    from gpuwarden.engine.lifecycle.config import Config
    from gpuwarden.engine.runtime import SimulateSpec, TelemetryOptions
    from gpuwarden.engine.safety.limits import SafetyConfig

    path = tmp_path / "hot.toml"
    path.write_text('[simulation]\ngpus = 1\n[[simulation.gpu]]\nambient_c = 80\n'
                    'c_per_w = 0.3\n')  # idles at 87.5 C: always too warm to load
    clock = FakeClock()
    config = Config(models=(model("m", placement="gpu"),),
                    safety=SafetyConfig(cooldown_timeout_s=30.0))
    engine = Engine.build(config, TelemetryOptions(simulate=SimulateSpec(scenario=path)),
                          ServicePaths(None, None), clock=clock)
    events = []
    engine.subscribe(events.append)
    engine.start(watch_config=False)
    drive(engine, clock, 2.0)
    assert engine.load("m").ok and row(engine, "m").state == "waiting"
    drive(engine, clock, 31.0)
    refused = [e.to_dict()["message"] for e in events if e.type == "model.refused"]
    assert len(refused) == 1 and "after waiting 3" in refused[0] and "C" in refused[0]
    assert row(engine, "m").state == "unloaded"
    engine.close()


def test_an_emergency_stop_by_hand_stops_the_gpus_models_and_says_which():
    engine, clock, _ = engine_for(model("a", placement="gpu"), model("c", placement="cpu"))
    engine.load("a")
    engine.load("c")
    drive(engine, clock, 2.0)
    assert not engine.emergency_stop(7).ok and not engine.emergency_stop("0").ok
    result = engine.emergency_stop(0)
    assert result.ok and result.message == "emergency stop on GPU 0: a"
    drive(engine, clock, 1.0)
    assert [r.state for r in engine.models()] == ["unloaded", "ready"]
    assert engine.emergency_stop().message == "emergency stop on every GPU: c"
    engine.close()


def test_a_throttled_llama_server_starts_with_fewer_parallel_slots(tmp_path: Path):
    from gpuwarden.engine.lifecycle.backend import Launch
    from gpuwarden.engine.lifecycle.config import ModelConfig
    from gpuwarden.engine.supervisor.launch import server_argv

    cfg = ModelConfig(name="m", backend="llama-server", path=tmp_path / "m.gguf",
                      args=("--parallel", "4"))
    calm = server_argv(Path("llama-server"), Launch(cfg, "gpu", 32, 1), 8080, "key")
    hot = server_argv(Path("llama-server"), Launch(cfg, "gpu", 32, 1, throttle=0.5), 8080,
                      "key")
    assert calm[-2:] == ["--parallel", "4"] and hot == [*calm, "--parallel", "2"]
    flat_out = Launch(ModelConfig(name="m", backend="llama-server", path=cfg.path), "gpu",
                      32, 1, throttle=1.0)
    assert server_argv(Path("llama-server"), flat_out, 8080, "key")[-3:] == [
        "--parallel", "1", "--kv-unified"]  # llama-server's auto slots share their KV cache


def test_a_load_during_reduce_intensity_is_launched_throttled(tmp_path: Path):
    engine, clock, _ = engine_for(model("late", placement="gpu"), tmp_path=tmp_path,
                                  scenario=HEAT_WAVE)
    drive(engine, clock, 64.0)
    assert engine.verdicts()["gpu0"].kind == "reduce_intensity"
    engine.load("late")
    launched = engine._simulated_backend._running["late"].launch
    assert launched.throttle == engine.verdicts()["gpu0"].throttle > 0
    engine.close()


HOT_AT_10 = """
[simulation]
gpus = 1

[[step]]
at = 10
action = "temperature"
celsius = 85
"""


def test_an_emergency_stop_also_cancels_starts_pending_on_that_gpu(tmp_path: Path):
    from gpuwarden.engine.lifecycle.config import RestartConfig

    engine, clock, events = engine_for(
        model("held", placement="gpu"), model("crashy", placement="gpu", eviction="never"),
        tmp_path=tmp_path, scenario=HOT_AT_10, restart=RestartConfig(backoff_base_s=30.0))
    engine.load("crashy")
    drive(engine, clock, 11.0)  # hot: loads wait
    engine.load("held")
    engine._simulated_backend.crash("crashy")  # a restart is now scheduled in 30 s
    assert row(engine, "held").state == "waiting" and row(engine, "crashy").restart_at
    result = engine.emergency_stop(0)
    assert result.ok and "held" in result.message and "crashy" in result.message
    drive(engine, clock, 60.0)  # cool again, and past the restart's time
    assert row(engine, "held").state == "unloaded"
    assert row(engine, "crashy").state == "crashed" and row(engine, "crashy").restart_at is None
    assert not [e for e in events if e.type == "model.loading"
                and e.to_dict()["reason"] == "restart"]
    engine.close()


def test_nothing_goes_back_to_a_gpu_that_is_too_hot(tmp_path: Path):
    engine, clock, _ = engine_for(model("m", placement="gpu", eviction="pressure"),
                                  tmp_path=tmp_path, scenario=HOT_AT_10)
    engine.load("m")
    drive(engine, clock, 1.0)
    state = engine._manager._states["m"]
    engine._manager._offload(state, "pressure")  # as VRAM pressure would
    drive(engine, clock, 12.0)  # t = 13: the GPU is hot
    manager = engine._manager
    manager._states["m"] = dataclasses.replace(manager._states["m"], return_after=0.0)  # due
    drive(engine, clock, 1.0)
    assert row(engine, "m").device == "cpu"  # still serving on the CPU, not torn down
    drive(engine, clock, 40.0)  # cool: now it goes back
    assert row(engine, "m").device == "gpu"
    engine.close()
