"""The simulated GPU, judged by what a user of gpuwarden would see on screen."""

from __future__ import annotations

import contextlib
import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpuwarden.engine.clock import FakeClock
from gpuwarden.engine.events import GpuLost, GpuRecovered, ScenarioStep
from gpuwarden.engine.telemetry.probe import GpuProbe
from gpuwarden.engine.telemetry.scenario import Scenario, parse_scenario, register_action, text
from gpuwarden.engine.telemetry.simulated import (
    SIM_NOTE,
    GpuProfile,
    SimulatedGpu,
    SimulatedOutOfMemory,
    SimulatedProbe,
)
from gpuwarden.engine.telemetry.snapshot import GpuSample

BASELINE = GpuProfile().driver_baseline_mib
TOTAL = GpuProfile().memory_total_mib


def steady_c(profile: GpuProfile, util_pct: float) -> float:
    power = profile.idle_power_w + (profile.power_limit_w - profile.idle_power_w) * util_pct / 100
    return profile.ambient_c + power * profile.c_per_w


def run(gpu: SimulatedGpu, until: float, dt: float = 1.0, start: float = 0.0) -> GpuSample:
    t = start
    gpu.step(t)
    while t < until:
        t = min(until, t + dt)
        gpu.step(t)
    return gpu.sample()


def probe_for(toml: str) -> SimulatedProbe:
    return SimulatedProbe(scenario=parse_scenario(toml, "scenario.toml"))


def scenario_with_seed(toml: str, seed: int) -> Scenario:
    return parse_scenario(f"[simulation]\nseed = {seed}\n" + toml, "scenario.toml")


# --- VRAM ---------------------------------------------------------------------------


def test_vram_follows_allocate_release_and_external_grabs() -> None:
    gpu = SimulatedGpu(0)
    assert gpu.sample().memory_used_mib == BASELINE
    gpu.allocate("llama", 8000)
    gpu.allocate("sdxl", 4000)
    assert gpu.sample().memory_used_mib == BASELINE + 12000
    assert gpu.grab_external("blender", 2000) == 2000
    sample = gpu.sample()
    assert sample.memory_used_mib == BASELINE + 14000
    assert sample.memory_free_mib == TOTAL - BASELINE - 14000
    assert gpu.release("llama") == 8000
    assert gpu.release("nobody") == 0
    assert gpu.free_external("blender") == 2000
    assert gpu.sample().memory_used_mib == BASELINE + 4000
    assert dict(gpu.allocations()) == {"sdxl": 4000}


def test_reallocating_an_owner_replaces_its_booking() -> None:
    gpu = SimulatedGpu(0)
    gpu.allocate("llama", 8000)
    gpu.allocate("llama", 3000)
    assert gpu.memory_used_mib == BASELINE + 3000
    # Growing into memory that only fits once the old booking is gone is fine.
    gpu.allocate("llama", TOTAL - BASELINE)
    assert gpu.memory_free_mib == 0


def test_allocate_beyond_free_raises_and_changes_nothing() -> None:
    gpu = SimulatedGpu(0)
    gpu.allocate("llama", 20000)
    before = (dict(gpu.allocations()), gpu.sample().memory_used_mib, gpu.sample().processes)
    with pytest.raises(SimulatedOutOfMemory) as info:
        gpu.allocate("sdxl", 5000)
    assert info.value.free_mib == TOTAL - BASELINE - 20000
    with pytest.raises(SimulatedOutOfMemory):
        gpu.allocate("llama", TOTAL)
    after = (dict(gpu.allocations()), gpu.sample().memory_used_mib, gpu.sample().processes)
    assert after == before
    with pytest.raises(ValueError):
        gpu.allocate("x", 0)


def test_external_grab_takes_at_most_what_is_free() -> None:
    gpu = SimulatedGpu(0)
    gpu.allocate("llama", 20000)
    granted = gpu.grab_external("game", 10000)
    assert granted == TOTAL - BASELINE - 20000
    assert gpu.memory_used_mib == TOTAL
    assert gpu.grab_external("game", 10) == 0


def test_each_owner_is_a_process_with_a_stable_pid() -> None:
    gpu = SimulatedGpu(0)
    gpu.allocate("llama", 1000)
    gpu.grab_external("blender", 500)
    procs = gpu.sample().processes
    assert procs is not None
    assert [(p.name, p.used_memory_mib, p.kind) for p in procs] == [
        ("llama", 1000, "compute"),
        ("blender", 500, "compute"),
    ]
    pid = procs[0].pid
    gpu.release("llama")
    gpu.allocate("llama", 2000)
    again = gpu.sample().processes
    assert again is not None
    assert {p.name: p.pid for p in again}["llama"] == pid
    assert len({p.pid for p in again}) == 2


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["allocate", "release", "grab", "free"]),
            st.sampled_from(["a", "b", "c", "d"]),
            st.floats(min_value=1, max_value=30000, allow_nan=False),
        ),
        max_size=40,
    )
)
def test_used_memory_is_baseline_plus_bookings(ops: list[tuple[str, str, float]]) -> None:
    gpu = SimulatedGpu(0)
    external: dict[str, float] = {}
    for op, owner, mib in ops:
        if op == "allocate":
            with contextlib.suppress(SimulatedOutOfMemory):
                gpu.allocate(owner, mib)
        elif op == "release":
            gpu.release(owner)
        elif op == "grab":
            external[owner] = external.get(owner, 0.0) + gpu.grab_external(owner, mib)
        else:
            external[owner] = external.get(owner, 0.0) - gpu.free_external(owner)
        sample = gpu.sample()
        assert sample.memory_used_mib is not None
        booked = sum(gpu.allocations().values()) + sum(external.values())
        assert math.isclose(sample.memory_used_mib, BASELINE + booked, abs_tol=1e-6)
        assert sample.memory_used_mib <= TOTAL + 1e-6
        assert sample.memory_free_mib is not None and sample.memory_free_mib >= -1e-6


# --- power and temperature ------------------------------------------------------------


def test_power_rises_with_load_and_falls_back() -> None:
    gpu = SimulatedGpu(0)
    idle = run(gpu, 10).power_draw_w
    assert idle is not None and idle == pytest.approx(25, abs=2)
    gpu.set_load(100)
    busy = run(gpu, 20, start=10).power_draw_w
    assert busy == pytest.approx(350, abs=3)
    gpu.set_load(0)
    assert run(gpu, 30, start=20).power_draw_w == pytest.approx(25, abs=2)


def test_model_activity_adds_to_utilisation() -> None:
    gpu = SimulatedGpu(0)
    gpu.allocate("llama", 1000)
    gpu.set_activity("llama", 40)
    gpu.set_load(30)
    assert gpu.utilization_pct == 70
    gpu.set_activity("sdxl", 80)
    assert gpu.utilization_pct == 100
    gpu.release("llama")
    gpu.release("sdxl")
    assert gpu.utilization_pct == 30
    assert run(gpu, 5).gpu_util_pct == pytest.approx(30, abs=5)


def test_temperature_approaches_steady_state_with_the_time_constant() -> None:
    profile = GpuProfile()
    gpu = SimulatedGpu(0, profile)
    gpu.set_load(100)
    target = steady_c(profile, 100)
    idle = steady_c(profile, 0)
    assert gpu.sample().temperature_c == pytest.approx(idle)  # a fresh card sits at idle
    after_tau = run(gpu, profile.thermal_tau_s).temperature_c
    expected = idle + (target - idle) * (1 - math.exp(-1))
    assert after_tau == pytest.approx(expected, abs=0.5)
    assert run(gpu, 10 * profile.thermal_tau_s, start=profile.thermal_tau_s).temperature_c == (
        pytest.approx(target, abs=0.1)
    )
    assert target < profile.slowdown_c  # full load at 30 C ambient does not throttle


def test_temperature_decays_toward_ambient_at_idle() -> None:
    profile = GpuProfile()
    gpu = SimulatedGpu(0, profile)
    gpu.force_temperature(80)
    idle_steady = steady_c(profile, 0)
    temps = [run(gpu, t, start=t - 10).temperature_c for t in range(10, 400, 10)]
    assert all(a is not None and b is not None and b < a for a, b in itertools.pairwise(temps))
    assert temps[-1] == pytest.approx(idle_steady, abs=0.1)
    gpu.set_ambient(20)
    assert run(gpu, 1000, start=400).temperature_c == pytest.approx(idle_steady - 10, abs=0.1)


def test_big_time_steps_are_stable_and_agree_with_small_ones() -> None:
    fine, coarse = SimulatedGpu(0), SimulatedGpu(0)
    for gpu in (fine, coarse):
        gpu.set_load(70)
    fine_t = run(fine, 120, dt=0.1).temperature_c
    coarse_t = run(coarse, 120, dt=60).temperature_c
    assert coarse_t == pytest.approx(fine_t, abs=0.01)
    huge = SimulatedGpu(0)
    huge.set_load(100)
    huge.step(0)
    huge.step(1e9)
    temp = huge.sample().temperature_c
    assert temp is not None and math.isfinite(temp)
    assert temp == pytest.approx(steady_c(huge.profile, 100), abs=0.01)


def test_throttles_above_slowdown_and_stays_near_it() -> None:
    gpu = SimulatedGpu(0)
    gpu.set_ambient(45)  # a hot room: full load would settle near 97 C
    gpu.set_load(100)
    gpu.step(0)
    samples = []
    for t in range(1, 900):
        gpu.step(t)
        samples.append(gpu.sample())
    throttled = [s for s in samples if s.throttle_reasons]
    assert throttled, "never throttled"
    assert set(throttled[0].throttle_reasons or ()) == {"sw_thermal", "hw_slowdown"}
    assert all(s.temperature_c is not None and s.temperature_c < 89 for s in samples)
    cool = samples[0]
    hot = throttled[-1]
    assert cool.throttle_reasons == ()
    assert hot.sm_clock_mhz is not None and cool.sm_clock_mhz is not None
    assert hot.sm_clock_mhz < cool.sm_clock_mhz
    assert hot.power_draw_w is not None and hot.power_draw_w < 0.9 * gpu.profile.power_limit_w


def test_forced_temperature_throttles_at_once_then_recovers() -> None:
    gpu = SimulatedGpu(0)
    gpu.step(0)
    gpu.force_temperature(95)
    sample = gpu.sample()
    assert sample.temperature_c == 95
    assert sample.throttle_reasons == ("sw_thermal", "hw_slowdown")
    assert sample.fan_speed_pct == 100
    cooled = run(gpu, 300, start=0)
    assert cooled.throttle_reasons == ()
    assert cooled.fan_speed_pct is not None and cooled.fan_speed_pct < 100


def test_power_spike_goes_above_the_limit_briefly() -> None:
    gpu = SimulatedGpu(0)
    gpu.step(0)
    gpu.power_spike(500, 3, now=0)
    peak = run(gpu, 3, dt=0.5).power_draw_w
    assert peak is not None and peak > gpu.profile.power_limit_w
    after = run(gpu, 13, start=3).power_draw_w
    assert after == pytest.approx(gpu.profile.idle_power_w, abs=2)


# --- determinism, n/a fields, lost GPUs -----------------------------------------------


BUSY = """
[[step]]
at = 1
action = "load"
util_pct = 55

[[step]]
at = 3
action = "vram_grab"
mib = 1234
"""


def readings(probe: SimulatedProbe, n: int = 30) -> list[tuple[GpuSample, ...]]:
    return [probe.sample(100.0 + t * 0.5).gpus for t in range(n)]


def test_same_seed_same_readings_different_seed_different() -> None:
    first = readings(SimulatedProbe(scenario=scenario_with_seed(BUSY, 7)))
    second = readings(SimulatedProbe(scenario=scenario_with_seed(BUSY, 7)))
    other = readings(SimulatedProbe(scenario=scenario_with_seed(BUSY, 8)))
    assert first == second
    assert first != other
    assert first[0][0].uuid == second[0][0].uuid != other[0][0].uuid


def test_unsupported_field_reads_none_and_comes_back() -> None:
    gpu = SimulatedGpu(0)
    gpu.set_unsupported("fan_speed_pct")
    gpu.set_unsupported("processes")
    sample = gpu.sample()
    assert sample.fan_speed_pct is None and sample.processes is None
    assert sample.temperature_c is not None
    gpu.set_unsupported("fan_speed_pct", False)
    assert gpu.sample().fan_speed_pct is not None
    with pytest.raises(ValueError, match="unknown field"):
        gpu.set_unsupported("colour")


def test_gpu_lost_and_back_give_one_event_each() -> None:
    probe = probe_for(
        "[simulation]\ngpus = 2\n"
        '[[step]]\nat = 5\naction = "gpu_lost"\ngpu = 1\n'
        '[[step]]\nat = 10\naction = "gpu_back"\ngpu = 1\n'
    )
    readings_ = [probe.sample(float(t)) for t in range(15)]
    lost = [(t, e) for t, r in enumerate(readings_) for e in r.events if isinstance(e, GpuLost)]
    back = [
        (t, e) for t, r in enumerate(readings_) for e in r.events if isinstance(e, GpuRecovered)
    ]
    assert [(t, e.gpu) for t, e in lost] == [(5, 1)]
    assert [(t, e.gpu) for t, e in back] == [(10, 1)]
    assert lost[0][1].uuid == probe.gpu(1).uuid
    during = readings_[7].gpus[1]
    assert during == GpuSample(1, "Simulated GPU 1", probe.gpu(1).uuid, available=False)
    assert readings_[7].gpus[0].available
    assert readings_[12].gpus[1].available and readings_[12].gpus[1].temperature_c is not None


# --- the probe and scenario timing ----------------------------------------------------


def test_probe_basics() -> None:
    probe: GpuProbe = SimulatedProbe(count=2, seed=3)
    reading = probe.sample(0.0)
    assert probe.source == "simulated"
    assert reading.note == SIM_NOTE
    assert [g.name for g in reading.gpus] == ["Simulated GPU 0", "Simulated GPU 1"]
    assert reading.gpus[0].uuid != reading.gpus[1].uuid
    assert reading.gpus[0].uuid.startswith("GPU-")
    assert reading.events == ()
    with pytest.raises(ValueError):
        SimulatedProbe(count=9)
    probe.close()


def test_scenario_profiles_are_used() -> None:
    probe = probe_for(
        '[simulation]\ngpus = 2\n[[simulation.gpu]]\nname = "RTX"\npower_limit_w = 450\n'
    )
    assert probe.count == 2
    first, second = probe.sample(0.0).gpus
    assert (first.name, first.power_limit_w) == ("RTX", 450)
    assert (second.name, second.power_limit_w) == ("Simulated GPU 1", 350)


def test_scenario_steps_apply_once_in_order_at_the_right_time() -> None:
    probe = probe_for(
        '[[step]]\nat = 10\naction = "vram_grab"\nowner = "a"\nmib = 1000\n'
        '[[step]]\nat = 0\naction = "load"\nutil_pct = 20\n'
        '[[step]]\nat = 10\naction = "vram_grab"\nowner = "b"\nmib = 500\n'
        '[[step]]\nat = 25\naction = "vram_free"\nowner = "a"\n'
    )
    clock = FakeClock()
    clock.advance(1000)  # monotonic time need not start at zero
    seen: dict[float, list[str]] = {}
    used: dict[float, float | None] = {}
    for dt in (0, 5, 4.99, 0.01, 1, 19):
        clock.advance(dt)
        reading = probe.sample(clock.monotonic())
        elapsed = round(clock.monotonic() - 1000, 2)
        seen[elapsed] = [e.detail for e in reading.events if isinstance(e, ScenarioStep)]
        used[elapsed] = reading.gpus[0].memory_used_mib
    assert [k for k, v in seen.items() if v] == [0, 10, 30]
    assert len(seen[0]) == 1 and "util_pct=20" in seen[0][0]
    assert ["owner=a" in d for d in seen[10]] == [True, False]  # file order kept at equal times
    assert used[9.99] == BASELINE
    assert used[10] == used[11] == BASELINE + 1500  # applied once, not again at 11
    assert used[30] == BASELINE + 500


def test_steps_take_effect_at_their_time_not_at_the_next_sample() -> None:
    probe = probe_for('[[step]]\nat = 10\naction = "ambient"\ncelsius = 50\n')
    probe.sample(0.0)
    temp = probe.sample(50.0).gpus[0].temperature_c
    tau = probe.gpu(0).profile.thermal_tau_s
    start, end = steady_c(GpuProfile(), 0), steady_c(GpuProfile(ambient_c=50), 0)
    # the air warmed at t=10, so the die had 40 s (one tau), not 0 s, to follow
    assert temp == pytest.approx(start + (end - start) * (1 - math.exp(-40 / tau)), abs=0.05)


def test_scenario_spike_and_unsupported_steps() -> None:
    probe = probe_for(
        '[[step]]\nat = 1\naction = "power_spike"\nwatts = 600\nduration_s = 4\n'
        '[[step]]\nat = 2\naction = "unsupported"\nfield = "power_draw_w"\n'
        '[[step]]\nat = 4\naction = "supported"\nfield = "power_draw_w"\n'
    )
    power = [probe.sample(float(t)).gpus[0].power_draw_w for t in range(12)]
    assert power[2] is None and power[3] is None
    assert power[4] is not None and power[4] > 350
    assert power[11] is not None and power[11] < 40


def test_probe_ignores_actions_of_other_consumers() -> None:
    register_action("test_other_consumer", {"model": text()})
    probe = probe_for('[[step]]\nat = 0\naction = "test_other_consumer"\nmodel = "m"\n')
    reading = probe.sample(0.0)
    assert reading.events == ()
    assert reading.gpus[0].available
