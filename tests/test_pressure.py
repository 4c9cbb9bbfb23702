from gpuwarden.engine.lifecycle.config import PressureConfig
from gpuwarden.engine.lifecycle.pressure import (
    Level,
    PressureKey,
    alert_due,
    mib_to_free,
    read_levels,
    step_pressure,
)
from gpuwarden.engine.telemetry.snapshot import DiskSample, HostSample, Snapshot
from helpers import gpu

VRAM0 = PressureKey("vram", 0)


def snap(vram_used: float, *, ram_pct: float = 10.0, disk_free: float = 100.0) -> Snapshot:
    return Snapshot(ts=0.0, seq=0, gpu_source="simulated",
                    gpus=(gpu(0, memory_used_mib=vram_used, memory_total_mib=1000.0),),
                    host=HostSample(cpu_pct=5.0, ram_used_mib=ram_pct * 10,
                                    ram_total_mib=1000.0,
                                    disks=(DiskSample("/d", disk_free, 500.0),)))


def run(values: list[float]) -> list[str]:
    active: frozenset[PressureKey] = frozenset()
    out = []
    for v in values:
        active, changes = step_pressure(active, read_levels(snap(v), PressureConfig()))
        out += [("raised" if c.raised else "cleared") + f"@{v:g}" for c in changes
                if c.level.key == VRAM0]
    return out


def test_raised_at_enter_cleared_only_below_clear_no_flapping():
    hovering = [850, 899, 900, 901, 899, 900, 880, 850, 810, 805, 799, 820, 899, 900]
    assert run(hovering) == ["raised@900", "cleared@799", "raised@900"]


def test_disk_pressure_is_about_free_space_going_down():
    cfg = PressureConfig()
    levels = read_levels(snap(0, disk_free=4.0), cfg)
    active, changes = step_pressure(frozenset(), levels)
    assert PressureKey("disk") in active and changes[0].raised
    active, _ = step_pressure(active, read_levels(snap(0, disk_free=8.0), cfg))
    assert PressureKey("disk") in active  # 8 GiB is not yet above the 10 GiB clear level
    active, changes = step_pressure(active, read_levels(snap(0, disk_free=11.0), cfg))
    assert PressureKey("disk") not in active and not changes[0].raised


def test_a_missing_reading_keeps_the_state():
    active, _ = step_pressure(frozenset(), read_levels(snap(950), PressureConfig()))
    lost = Snapshot(ts=0.0, seq=0, gpu_source="simulated", gpus=(gpu(0, available=False),),
                    host=HostSample())
    active, changes = step_pressure(active, read_levels(lost, PressureConfig()))
    assert VRAM0 in active and changes == []


def test_throttle_factor_and_amount_to_free():
    level = Level(VRAM0, 95.0, 90.0, 80.0)
    assert level.throttle() == 0.75
    assert Level(VRAM0, 79.0, 90.0, 80.0).throttle() == 0.0
    assert mib_to_free(level, 1000.0) == 150.0


def test_alerts_are_debounced_per_kind():
    last: dict[str, float] = {}
    assert alert_due(last, "vram", 100.0, 60.0)
    last["vram"] = 100.0
    assert not alert_due(last, "vram", 159.0, 60.0)
    assert alert_due(last, "ram", 120.0, 60.0)
    assert alert_due(last, "vram", 160.0, 60.0)


def test_cpu_pressure_is_judged_on_an_average_not_on_a_spike():
    from gpuwarden.engine.lifecycle.pressure import CpuAverage

    avg = CpuAverage(tau_s=10.0)
    cpu = PressureKey("cpu")

    def feed(pct: float, now: float) -> Level | None:
        return avg.feed(Level(cpu, pct, 95.0, 80.0), now)

    assert feed(100.0, 0.0) is None  # measured over start-up: ignored
    for t in range(1, 11):
        assert feed(5.0, float(t)) is None  # not judged before 10 s of readings
    calm = feed(5.0, 11.0)
    assert calm is not None and calm.value == 5.0
    spike = feed(100.0, 12.0)
    assert spike is not None and spike.value < 40.0  # one busy second is not pressure
    for t in range(13, 60):
        level = feed(100.0, float(t))
    assert level is not None and level.value > 95.0  # sustained load is
