"""Every branch of the pure lifecycle policy, with plain numbers for time."""

from dataclasses import replace

from gpuwarden.engine.lifecycle.actions import Load, Offload, Refusal, Unload
from gpuwarden.engine.lifecycle.estimate import estimate_vram_mib
from gpuwarden.engine.lifecycle.policy import (
    idle_actions,
    plan_load,
    ram_relief,
    restore_actions,
    vram_relief,
)
from gpuwarden.engine.lifecycle.state import priority_of
from lifecycle_helpers import by_name, loaded

NOW = 10_000.0


def always(_s):
    return True


def never_offload(_s):
    return False


def test_priority_follows_idle_time_against_the_timeout():
    s = loaded("m", idle_timeout_s=600.0)
    assert priority_of(replace(s, last_access=NOW - 5), NOW) == "active"
    assert priority_of(replace(s, last_access=NOW - 200), NOW) == "warm"
    assert priority_of(replace(s, last_access=NOW - 400), NOW) == "idle"
    assert priority_of(replace(s, last_access=NOW - 600), NOW) == "evictable"
    assert priority_of(replace(s, last_access=NOW - 9999, in_use=1), NOW) == "active"
    assert priority_of(replace(s, last_access=NOW - 9999, eviction_override="never"),
                       NOW) == "active"


def test_idle_unloads_only_idle_policy_models_past_their_timeout():
    states = by_name(
        loaded("old", last_access=NOW - 700),
        loaded("fresh", last_access=NOW - 100),
        loaded("pressure-only", last_access=NOW - 7000, eviction="pressure"),
        loaded("pinned", last_access=NOW - 7000, eviction="never"),
        loaded("serving", last_access=NOW - 7000, in_use=1),
        loaded("streaming", last_access=NOW - 7000, serving=True),  # its server says so
        loaded("gone", device="unloaded", last_access=NOW - 7000),
    )
    assert idle_actions(states, NOW) == [Unload("old", "idle")]


def test_vram_relief_takes_evictable_lru_first_then_offloads_idle_then_warm():
    states = by_name(
        loaded("evict-newer", last_access=NOW - 900),
        loaded("evict-older", last_access=NOW - 5000),
        loaded("idle", last_access=NOW - 400),
        loaded("warm", last_access=NOW - 100),
        loaded("active", last_access=NOW - 1),
        loaded("serving", last_access=NOW - 5000, in_use=1),
        loaded("pinned", last_access=NOW - 5000, eviction="never"),
        loaded("other-gpu", last_access=NOW - 5000, gpu=1),
        loaded("on-cpu", device="cpu", last_access=NOW - 5000),
    )
    assert vram_relief(states, 0, 100.0, NOW, always) == [Unload("evict-older", "pressure")]
    assert vram_relief(states, 0, 12_000.0, NOW, always) == [
        Unload("evict-older", "pressure"), Unload("evict-newer", "pressure"),
        Offload("idle", "pressure"),
    ]
    assert vram_relief(states, 0, 10**6, NOW, never_offload) == [
        Unload("evict-older", "pressure"), Unload("evict-newer", "pressure"),
        Unload("idle", "pressure"), Unload("warm", "pressure"),
    ]


def test_vram_relief_counts_models_already_stopping():
    states = by_name(loaded("stopping", device="stopping", vram=8000.0),
                     loaded("victim", last_access=NOW - 5000))
    assert vram_relief(states, 0, 6000.0, NOW, always) == []
    assert vram_relief(states, 0, 9000.0, NOW, always) == [Unload("victim", "pressure")]


def test_priority_hint_breaks_ties_before_recency():
    states = by_name(loaded("important", last_access=NOW - 5000, priority=5),
                     loaded("unimportant", last_access=NOW - 900, priority=0))
    assert vram_relief(states, 0, 1.0, NOW, always) == [Unload("unimportant", "pressure")]


def test_ram_relief_unloads_cpu_models_least_recent_first():
    states = by_name(
        loaded("cpu-new", device="cpu", ram=3000.0, vram=0.0, last_access=NOW - 700),
        loaded("cpu-old", device="cpu", ram=3000.0, vram=0.0, last_access=NOW - 3000),
        loaded("cpu-pinned", device="cpu", ram=3000.0, vram=0.0, last_access=NOW - 9000,
               eviction="never"),
        loaded("gpu", last_access=NOW - 9000),
    )
    assert ram_relief(states, 2000.0, NOW) == [Unload("cpu-old", "pressure")]
    assert ram_relief(states, 5000.0, NOW) == [Unload("cpu-old", "pressure"),
                                               Unload("cpu-new", "pressure")]


def test_load_that_fits_just_loads():
    states = by_name(loaded("new", device="unloaded", placement="gpu"))
    assert plan_load(states, "new", 5000.0, NOW, estimate_vram_mib) == [Load("new", "gpu")]


def test_load_that_does_not_fit_swaps_out_the_least_valuable():
    states = by_name(
        loaded("new", device="unloaded", placement="gpu", vram=6000.0),
        loaded("older", last_access=NOW - 2000),
        loaded("newer", last_access=NOW - 1000),
        loaded("pinned", last_access=NOW - 9000, eviction="never"),
    )
    plan = plan_load(states, "new", 3000.0, NOW, estimate_vram_mib)
    assert plan == [Unload("older", "swap", for_model="new"), Load("new", "gpu")]


def test_load_that_cannot_fit_is_refused_for_gpu_and_falls_back_for_auto():
    states = by_name(loaded("big", device="unloaded", placement="gpu", vram=50_000.0),
                     loaded("pinned", eviction="never"))
    refusal = plan_load(states, "big", 3000.0, NOW, estimate_vram_mib)
    assert isinstance(refusal, Refusal) and "50000 MiB" in refusal.message
    auto = by_name(replace(states["big"], placement="auto"), states["pinned"])
    assert plan_load(auto, "big", 3000.0, NOW, estimate_vram_mib) == [Load("big", "cpu")]


def test_a_live_model_is_never_started_twice():
    states = by_name(loaded("m", device="loading"))
    assert isinstance(plan_load(states, "m", 10**6, NOW, estimate_vram_mib), Refusal)


def test_swapped_out_model_returns_when_the_displacer_idles_and_it_fits():
    victim = loaded("victim", device="unloaded", displaced_by="big", placement="gpu")
    busy = by_name(victim, loaded("big", last_access=NOW - 10))
    assert restore_actions(busy, {0: 10_000.0}, NOW, estimate_vram_mib) == []
    idle = by_name(victim, loaded("big", last_access=NOW - 500))
    assert restore_actions(idle, {0: 10_000.0}, NOW, estimate_vram_mib) == [
        Load("victim", "gpu", "restore")]
    assert restore_actions(idle, {0: 1000.0}, NOW, estimate_vram_mib) == []
    user_said_no = by_name(replace(victim, user_unloaded=True), loaded("big", device="unloaded"))
    assert restore_actions(user_said_no, {0: 10_000.0}, NOW, estimate_vram_mib) == []


def test_make_room_leaves_pinned_and_serving_models_alone():
    from gpuwarden.engine.lifecycle.policy import room_actions

    states = by_name(loaded("pinned", eviction="never"), loaded("busy", serving=True),
                     loaded("idle", last_access=NOW - 500))
    assert room_actions(states, 0, None, NOW, lambda s: True) == [Offload("idle", "make_room")]


def test_no_return_to_a_gpu_while_another_model_is_on_its_way_there():
    from gpuwarden.engine.lifecycle.policy import GpuRoom

    calm = GpuRoom(used_mib=1000.0, total_mib=24000.0, clear_pct=80.0, under_pressure=False)
    assert calm.fits(8000.0)
    assert not replace(calm, settling=True).fits(8000.0)
    assert not replace(calm, under_pressure=True).fits(8000.0)
    assert not calm.fits(19000.0)  # would go back over the clear level


def test_a_model_goes_back_only_if_what_it_really_held_fits():
    from gpuwarden.engine.lifecycle.policy import GpuRoom, Return, return_actions

    away = replace(loaded("m", device="cpu", vram=0.0), home="gpu", return_after=NOW - 1,
                   home_vram_mib=9000.0)  # estimated 4000, but it held 9000 on the GPU
    room = {0: GpuRoom(used_mib=12000.0, total_mib=24000.0, clear_pct=80.0,
                       under_pressure=False)}
    assert return_actions(by_name(away), room, NOW, estimate_vram_mib) == []
    lighter = replace(away, home_vram_mib=4000.0)
    assert return_actions(by_name(lighter), room, NOW, estimate_vram_mib) == [Return("m", "gpu")]


def test_free_vram_counts_loads_that_started_after_the_last_sample():
    from gpuwarden.engine.lifecycle.estimate import free_vram_mib
    from helpers import gpu, snapshot

    snap = snapshot(100.0, gpu(0, memory_free_mib=7000.0))
    before = loaded("old", vram=3000.0, loaded_at=90.0)  # in the sample already
    ready_since = loaded("quick", vram=2000.0, loaded_at=101.0)  # loaded and ready since
    loading = replace(loaded("slow", vram=1000.0, loaded_at=102.0), device="loading",
                      vram_mib=None)
    on_cpu = loaded("cpu", device="cpu", vram=0.0, loaded_at=103.0)
    free = free_vram_mib(snap, [before, ready_since, loading, on_cpu],
                         lambda cfg, _: cfg.vram_mib or 0.0)
    assert free == {0: 7000.0 - 2000.0 - 1000.0}
