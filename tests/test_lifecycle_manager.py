"""The manager end to end on a fake clock, with the simulated GPU and backend."""

from gpuwarden.engine.lifecycle.config import RestartConfig
from lifecycle_helpers import model
from lifecycle_rig import Rig

GIB = 1024.0


def test_load_books_vram_then_idle_timeout_unloads_and_frees_it():
    rig = Rig(model("llama", vram_mib=8 * GIB, load_time_s=2.0, idle_timeout_s=300.0))
    used_before = rig.snap.gpus[0].memory_used_mib
    assert rig.manager.load("llama").ok
    assert rig.device("llama") == "loading"
    rig.step(2.0)
    assert rig.device("llama") == "gpu"
    assert rig.snap.gpus[0].memory_used_mib - used_before == 8 * GIB
    rig.step(299.0, every=10.0)
    assert rig.device("llama") == "gpu"
    rig.step(2.0)
    assert rig.device("llama") == "unloaded"
    assert rig.of("model.unloaded")[0].reason == "idle"
    assert rig.snap.gpus[0].memory_used_mib == used_before


def test_external_vram_grab_raises_pressure_and_evicts_in_the_same_sample():
    rig = Rig(model("old", vram_mib=6 * GIB, idle_timeout_s=100.0, eviction="pressure"),
              model("busy", vram_mib=6 * GIB, eviction="pressure"))
    rig.manager.load("old")
    rig.manager.load("busy")
    rig.step(1.0)
    rig.step(200.0, every=50.0)
    rig.manager.notify_access("busy")
    mark = len(rig.events)
    rig.gpu.grab_external("blender", 10 * GIB)
    rig.step(1.0)
    kinds = rig.types(mark)
    assert kinds.index("pressure.raised") < kinds.index("model.unloaded")
    assert [e.model for e in rig.of("model.unloaded")] == ["old"]  # not the one just used
    assert rig.of("model.unloaded")[0].reason == "pressure"
    assert rig.device("busy") == "gpu"
    rig.step(1.0)
    assert "pressure.cleared" in rig.types(mark)


def test_in_use_model_is_never_evicted():
    rig = Rig(model("serving", vram_mib=12 * GIB, idle_timeout_s=10.0, eviction="pressure"))
    rig.manager.load("serving")
    rig.step(100.0, every=10.0)
    with rig.manager.in_use("serving"):
        rig.gpu.grab_external("game", 11 * GIB)
        rig.step(5.0)
        assert rig.device("serving") == "gpu"
    rig.clock.advance(100.0)
    rig.step(1.0)
    assert rig.device("serving") == "unloaded"


def test_crash_restarts_after_the_backoff_with_one_process_only():
    rig = Rig(model("m", load_time_s=0.5))
    rig.manager.load("m")
    rig.step(1.0)
    assert rig.backend.crash("m", exit_code=137)
    crashed = rig.of("model.crashed", "m")[0]
    assert crashed.kind == "oom_killed"
    scheduled = rig.of("model.restart_scheduled", "m")[0]
    assert scheduled.delay_s == 1.0 and scheduled.attempt == 1
    rig.step(0.5, every=0.5)
    assert rig.device("m") == "crashed"
    rig.step(0.5, every=0.5)
    assert rig.device("m") == "loading"
    rig.step(1.0)
    assert rig.device("m") == "gpu"
    assert rig.backend.running() == ["m"]


def test_five_crashes_in_a_row_give_up_but_pinned_models_keep_trying():
    rig = Rig(model("flaky", load_time_s=0.0), model("pinned", eviction="never", load_time_s=0.0),
              restart=RestartConfig(backoff_base_s=1.0, backoff_cap_s=4.0))
    rig.manager.load("flaky")
    rig.manager.load("pinned")
    for _ in range(7):
        rig.step(1.0)
        for name in ("flaky", "pinned"):
            if rig.device(name) == "gpu":
                rig.backend.crash(name, exit_code=1)
        rig.step(10.0, every=1.0)
    exhausted = rig.of("model.restart_exhausted")
    assert [e.model for e in exhausted] == ["flaky"] and exhausted[0].attempts == 5
    assert len(rig.of("model.crashed", "flaky")) == 5
    assert len(rig.of("model.crashed", "pinned")) == 7
    assert max(e.delay_s for e in rig.of("model.restart_scheduled", "pinned")) == 4.0
    assert rig.manager.load("flaky").ok  # by hand, it may try again


def test_user_unload_cancels_a_scheduled_restart_for_good():
    rig = Rig(model("m"))
    rig.manager.load("m")
    rig.step(1.0)
    rig.backend.crash("m", exit_code=1)
    assert rig.manager.state("m").restart_at is not None
    assert rig.manager.unload("m").ok
    rig.step(120.0, every=5.0)
    assert rig.device("m") in ("crashed", "unloaded")
    assert rig.of("model.loading", "m").__len__() == 1


def test_swap_evicts_for_a_new_model_and_restores_when_it_idles():
    rig = Rig(model("a", vram_mib=16 * GIB, placement="gpu", idle_timeout_s=1000.0),
              model("b", vram_mib=12 * GIB, placement="gpu", idle_timeout_s=120.0))
    rig.manager.load("a")
    rig.step(100.0, every=10.0)
    assert rig.manager.load("b").ok
    assert rig.of("swap.evicted")[0].model == "a" and rig.of("swap.evicted")[0].for_model == "b"
    rig.step(1.0)
    assert rig.device("b") == "gpu" and rig.device("a") == "unloaded"
    rig.manager.notify_access("b")
    rig.step(30.0, every=10.0)
    assert rig.device("a") == "unloaded"  # b is still in use recently
    rig.step(200.0, every=10.0)  # b goes idle, then its idle timeout unloads it
    assert rig.of("swap.restored")[0].model == "a"
    assert rig.device("a") == "gpu"


def test_gpu_out_of_memory_at_load_downgrades_to_partial_offload():
    rig = Rig(model("m", vram_mib=10 * GIB, placement="gpu", layers=32))
    rig.gpu.grab_external("sneaky", 18 * GIB)  # after the last sample: the plan thinks it fits
    assert rig.manager.load("m").ok
    crashed = rig.of("model.crashed", "m")[0]
    assert crashed.kind == "gpu_oom" and any("out of memory" in line for line in crashed.log_tail)
    assert rig.of("model.restart_scheduled", "m")[0].placement == "16"
    rig.step(2.0)
    state = rig.manager.state("m")
    assert state.device == "partial" and state.gpu_layers == 16
    ready = rig.of("model.ready", "m")[0]
    assert ready.vram_mib == 5 * GIB and ready.vram_est_mib == 5 * GIB


def test_offload_moves_a_model_to_the_cpu():
    rig = Rig(model("m", vram_mib=8 * GIB, ram_mib=9 * GIB))
    rig.manager.load("m")
    rig.step(1.0)
    assert rig.manager.offload("m").ok
    rig.step(1.0)
    assert rig.device("m") == "cpu"
    assert rig.of("model.offloaded")[0].freed_vram_mib == 8 * GIB
    assert rig.manager.state("m").vram_mib == 0 and rig.manager.state("m").ram_mib == 9 * GIB
    refused = rig.manager.offload("m")
    assert not refused.ok and "not on a GPU" in refused.message


def test_loading_that_takes_too_long_is_a_startup_timeout():
    rig = Rig(model("slow", load_time_s=500.0),
              restart=RestartConfig(startup_timeout_s=30.0))
    rig.manager.load("slow")
    rig.step(31.0)
    assert rig.of("model.crashed", "slow")[0].kind == "startup_timeout"


def test_admin_refusals_say_why():
    rig = Rig(model("m"))
    result = rig.manager.load("nope")
    assert not result.ok and "no model named 'nope'" in result.message
    assert rig.manager.unload("m").ok  # not loaded: nothing to do, not an error


def test_usage_and_user_choices_survive_a_restart_of_gpuwarden(tmp_path):
    from gpuwarden.engine.clock import FakeClock
    from gpuwarden.engine.events import EventBus
    from gpuwarden.engine.lifecycle.config import Config
    from gpuwarden.engine.lifecycle.hints import HintStore
    from gpuwarden.engine.lifecycle.manager import LifecycleManager

    clock = FakeClock()
    config = Config(models=(model("m"), model("n")))

    def start() -> LifecycleManager:
        hints = HintStore(tmp_path / "hints.json", clock)
        assert hints.load() == []
        return LifecycleManager(config, {}, bus=EventBus(clock=clock), clock=clock, hints=hints)

    first = start()
    first.notify_access("m")
    first.notify_access("m")
    assert first.set_policy("n", "never").ok
    assert first.set_priority("n", 9).ok
    first.shutdown()  # saves
    clock.advance(3600.0)
    second = start()
    m, n = second.state("m"), second.state("n")
    assert m.access_count == 2 and m.last_access == clock.time() - 3600.0
    assert n.eviction == "never" and n.priority_hint == 9


def test_a_model_whose_backend_is_missing_is_refused_with_a_reason():
    rig = Rig(model("real", backend="llama-server", path=None))
    result = rig.manager.load("real")
    assert not result.ok and "llama-server" in result.message


def test_no_offload_to_the_cpu_while_ram_is_short_too():
    from dataclasses import replace

    from gpuwarden.engine.lifecycle.config import PressureConfig

    rig = Rig(model("idle", vram_mib=8 * GIB, eviction="pressure"))
    rig.manager.load("idle")
    rig.step(120.0, every=10.0)
    full_ram = replace(rig.sampler.host_probe.value, ram_used_mib=7900.0)  # of 8192
    rig.sampler.host_probe.value = full_ram
    rig.gpu.grab_external("game", 15 * GIB)
    rig.step(1.0)
    assert rig.of("model.offloaded") == []
    assert rig.of("model.unloaded")[0].reason == "pressure"
    assert PressureConfig().ram.enter < 100 * 7900 / 8192


def test_a_model_loaded_again_is_not_idle_because_of_its_old_last_use():
    rig = Rig(model("m", idle_timeout_s=60.0, load_time_s=0.0))
    rig.manager.load("m")
    rig.step(1.0)
    rig.manager.notify_access("m")
    rig.step(120.0, every=10.0)
    assert rig.of("model.unloaded", "m")[0].reason == "idle"
    rig.manager.load("m")
    rig.step(5.0)
    assert rig.device("m") == "gpu"  # not unloaded again at the next sample
    assert len(rig.of("model.unloaded", "m")) == 1


def test_unload_or_quit_during_an_offload_or_swap_is_final():
    rig = Rig(model("a", vram_mib=16 * GIB, placement="gpu"),
              model("b", vram_mib=12 * GIB, placement="gpu"), stop_time_s=2.0)
    rig.manager.load("a")
    rig.step(1.0)
    rig.manager.offload("a")  # stopping, to come back on the CPU ...
    rig.manager.unload("a")  # ... but the user says no
    rig.step(5.0)
    assert rig.device("a") == "unloaded" and rig.backend.running() == []
    assert [e.reason for e in rig.of("model.unloaded", "a")] == ["user"]
    rig.manager.load("a")
    rig.step(100.0, every=10.0)
    rig.manager.load("b")  # swaps a out; b waits for a's process to end ...
    rig.manager.shutdown()  # ... and then gpuwarden quits
    rig.step(5.0)
    assert rig.backend.running() == []
    assert rig.of("model.loading", "b") == []


def test_restart_during_an_offload_restarts_where_it_was_not_on_the_cpu():
    rig = Rig(model("a", vram_mib=8 * GIB, placement="gpu"), stop_time_s=2.0)
    rig.manager.load("a")
    rig.step(1.0)
    rig.manager.offload("a")
    rig.manager.restart("a")  # the user's later request wins over the offload
    rig.manager.restart("a")  # pressed twice: still one restart, not pushed back
    rig.step(5.0)
    assert rig.device("a") == "gpu"
    assert [e.reason for e in rig.of("model.loading", "a")] == ["user", "restart"]


def test_a_model_for_a_gpu_that_does_not_exist_is_refused_or_falls_back_to_cpu():
    rig = Rig(model("far", gpu=3, placement="gpu"), model("flexible", gpu=3, placement="auto"))
    refused = rig.manager.load("far")
    assert not refused.ok and "GPU 3" in refused.message and "1 GPU(s)" in refused.message
    assert rig.manager.load("flexible").ok
    rig.step(1.0)
    assert rig.device("flexible") == "cpu"


def test_a_model_put_back_in_the_config_while_it_stops_keeps_its_process():
    from gpuwarden.engine.lifecycle.config import Config
    from gpuwarden.engine.lifecycle.config_diff import diff_configs

    a = model("a", vram_mib=4 * GIB, placement="gpu")
    rig = Rig(a, stop_time_s=5.0)
    rig.manager.load("a")
    rig.step(1.0)
    rig.manager.reconfigure(diff_configs(Config(models=(a,)), Config(), []))
    assert rig.device("a") == "stopping"
    changed = model("a", vram_mib=4 * GIB, placement="cpu")
    rig.manager.reconfigure(diff_configs(Config(), Config(models=(changed,)), []))
    assert rig.device("a") == "stopping"  # the old process is still tracked
    assert not rig.manager.load("a").ok  # and no second one starts beside it
    rig.step(5.0)
    assert [e.to_dict()["reason"] for e in rig.of("model.unloaded", "a")] == ["removed"]
    assert rig.manager.load("a").ok
    rig.step(1.0)
    assert rig.device("a") == "cpu"  # the new settings, at the next load
