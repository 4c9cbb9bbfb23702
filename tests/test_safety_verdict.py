"""Safety verdicts: every transition, the hysteresis of cooldowns and aborts, n/a
readings, the host, and the monitor that reports what changed."""

from __future__ import annotations

import dataclasses
import math

import pytest

from gpuwarden.engine.events import EmergencyStop, SafetyVerdictChanged
from gpuwarden.engine.safety.limits import SafetyConfig, gpu_limits, host_limits
from gpuwarden.engine.safety.verdict import (
    SafetyMonitor,
    Verdict,
    VerdictChange,
    judge_gpu,
    judge_host,
)
from gpuwarden.engine.telemetry.snapshot import GpuSample, HostSample, Snapshot

# Card: slowdown 85 C (warn 80, hard 85), power limit 200 W (warn 190, hard 210).
CARD = GpuSample(index=0, name="Test GPU", uuid="GPU-0", temperature_c=50.0,
                 temperature_slowdown_c=85.0, power_draw_w=100.0, power_limit_w=200.0,
                 memory_total_mib=10_000.0, memory_used_mib=1_000.0)
CFG = SafetyConfig()
LIMITS = gpu_limits(CARD, CFG)
HOST = HostSample(cpu_pct=10.0, ram_used_mib=1_000.0, ram_total_mib=10_000.0, cpu_temp_c=50.0)
HOST_LIMITS = host_limits(CFG)  # CPU 90/95 C, CPU 95 %, RAM 85 %


def gpu(**changes: float | None) -> GpuSample:
    return dataclasses.replace(CARD, **changes)


def run_gpu(temps: list[float], **changes: float | None) -> list[str]:
    """The kinds a GPU goes through at these temperatures, one sample each."""
    previous: Verdict | None = None
    kinds = []
    for t in temps:
        previous = judge_gpu(gpu(temperature_c=t, **changes), LIMITS, previous)
        kinds.append(previous.kind)
    return kinds


def test_within_limits_proceeds() -> None:
    v = judge_gpu(CARD, LIMITS, None)
    assert (v.kind, v.throttle, v.reading, v.limit, v.cause, v.unknown) == (
        "proceed", 0.0, None, None, None, ())
    assert v.reason == "GPU 0 is within its limits"
    assert v.key == "gpu0" and v.scope == "gpu" and v.gpu == 0 and v.allows_loads


def test_hard_temperature_aborts_with_a_reason() -> None:
    v = judge_gpu(gpu(temperature_c=86.0), LIMITS, None)
    assert (v.kind, v.cause, v.reading, v.limit, v.throttle) == (
        "abort", "temperature", 86.0, 85.0, 1.0)
    assert v.reason == "GPU 0 at 86 C, hard limit 85 C (card slowdown)"
    assert not v.allows_loads


def test_warn_temperature_waits_for_cooldown() -> None:
    v = judge_gpu(gpu(temperature_c=80.0), LIMITS, None)
    assert (v.kind, v.cause, v.reading, v.limit, v.cooling) == (
        "wait_cooldown", "temperature", 80.0, 80.0, True)
    assert v.reason == "GPU 0 at 80 C, warn limit 80 C (card slowdown - 5 C)"
    assert not v.allows_loads


def test_cooldown_holds_until_under_warn_minus_margin() -> None:
    # warn 80, margin 5: it holds at 79 and 75, and lifts at 74.9
    assert run_gpu([70, 80, 79, 75, 74.9, 78]) == [
        "proceed", "wait_cooldown", "wait_cooldown", "wait_cooldown", "proceed", "proceed"]
    held = judge_gpu(gpu(temperature_c=77.0),
                     LIMITS, judge_gpu(gpu(temperature_c=81.0), LIMITS, None))
    assert held.reason == ("GPU 0 at 77 C, cooling down to under 75 C "
                           "(warn limit 80 C (card slowdown - 5 C) minus 5 C)")


def test_abort_holds_until_under_warn_minus_margin() -> None:
    assert run_gpu([85, 84, 80, 76, 75, 74, 80]) == [
        "abort", "abort", "abort", "abort", "abort", "proceed", "wait_cooldown"]
    held = judge_gpu(gpu(temperature_c=82.0),
                     LIMITS, judge_gpu(gpu(temperature_c=90.0), LIMITS, None))
    assert held.kind == "abort" and held.throttle == 1.0
    assert "still not under 75 C" in held.reason


def test_warn_then_hard_then_back() -> None:
    assert run_gpu([81, 86, 79, 70]) == ["wait_cooldown", "abort", "abort", "proceed"]


def test_margin_zero_lifts_at_warn() -> None:
    limits = gpu_limits(CARD, SafetyConfig(cooldown_margin_c=0))
    v = judge_gpu(gpu(temperature_c=80.0), limits, None)
    assert judge_gpu(gpu(temperature_c=79.9), limits, v).kind == "proceed"


def test_power_over_warn_reduces_intensity_with_a_throttle() -> None:
    at_warn = judge_gpu(gpu(power_draw_w=190.0), LIMITS, None)
    assert (at_warn.kind, at_warn.cause, at_warn.throttle) == ("reduce_intensity", "power", 0.0)
    half = judge_gpu(gpu(power_draw_w=200.0), LIMITS, None)
    assert half.kind == "reduce_intensity"
    assert half.throttle == pytest.approx(0.5)
    assert half.reason == "GPU 0 at 200 W, warn limit 190 W (95% of the card's 200 W limit)"
    assert judge_gpu(gpu(power_draw_w=189.0), LIMITS, None).kind == "proceed"


def test_power_over_hard_aborts_and_holds_until_under_warn() -> None:
    v = judge_gpu(gpu(power_draw_w=215.0), LIMITS, None)
    assert (v.kind, v.cause, v.throttle, v.limit) == ("abort", "power", 1.0,
                                                      pytest.approx(210.0))
    v = judge_gpu(gpu(power_draw_w=195.0), LIMITS, v)
    assert v.kind == "abort" and "still not under its warn limit 190 W" in v.reason
    v = judge_gpu(gpu(power_draw_w=150.0), LIMITS, v)
    assert v.kind == "proceed"


def test_a_power_abort_does_not_hold_a_temperature_abort() -> None:
    power_abort = judge_gpu(gpu(power_draw_w=250.0), LIMITS, None)
    assert judge_gpu(gpu(temperature_c=78.0), LIMITS, power_abort).kind == "proceed"


def test_vram_over_its_limit_reduces_intensity() -> None:
    v = judge_gpu(gpu(memory_used_mib=9_500.0), LIMITS, None)
    assert (v.kind, v.cause, v.reading, v.limit) == ("reduce_intensity", "vram", 95.0, 90.0)
    assert v.throttle == pytest.approx(0.5)
    assert v.reason == "GPU 0 VRAM at 95 %, limit 90 % (default)"
    assert judge_gpu(gpu(memory_used_mib=10_000.0), LIMITS, None).throttle == 1.0
    assert judge_gpu(gpu(memory_used_mib=8_900.0), LIMITS, None).kind == "proceed"


def test_the_worst_applies_and_keeps_the_strongest_throttle() -> None:
    v = judge_gpu(gpu(temperature_c=82.0, power_draw_w=200.0, memory_used_mib=9_200.0),
                  LIMITS, None)
    assert (v.kind, v.cause) == ("wait_cooldown", "temperature")
    assert v.throttle == pytest.approx(0.5)  # power's, the stronger of power and VRAM
    v = judge_gpu(gpu(power_draw_w=195.0, memory_used_mib=9_800.0), LIMITS, None)
    assert (v.kind, v.cause) == ("reduce_intensity", "vram")
    assert v.throttle == pytest.approx(0.8)
    v = judge_gpu(gpu(temperature_c=82.0, power_draw_w=230.0), LIMITS, None)
    assert (v.kind, v.cause, v.throttle) == ("abort", "power", 1.0)


def test_unknown_temperature_still_checks_power_and_vram() -> None:
    v = judge_gpu(gpu(temperature_c=None, power_draw_w=200.0), LIMITS, None)
    assert (v.kind, v.cause, v.unknown) == ("reduce_intensity", "power", ("temperature",))
    v = judge_gpu(gpu(temperature_c=None), LIMITS, None)
    assert (v.kind, v.unknown) == ("proceed", ("temperature",))
    assert v.reason == "GPU 0 is within its limits (temperature n/a)"
    v = judge_gpu(gpu(temperature_c=math.nan, memory_total_mib=None), LIMITS, None)
    assert v.unknown == ("temperature", "vram")


def test_every_reading_unknown() -> None:
    v = judge_gpu(gpu(temperature_c=None, power_draw_w=None, memory_used_mib=None), LIMITS, None)
    assert (v.kind, v.unknown) == ("proceed", ("temperature", "power", "vram"))


def test_a_temperature_turning_unknown_lifts_the_cooldown() -> None:
    hot = judge_gpu(gpu(temperature_c=82.0), LIMITS, None)
    v = judge_gpu(gpu(temperature_c=None), LIMITS, hot)
    assert (v.kind, v.cooling) == ("proceed", False)


def test_a_lost_gpu_cannot_be_checked() -> None:
    v = judge_gpu(gpu(temperature_c=99.0), LIMITS, None)
    lost = judge_gpu(dataclasses.replace(CARD, available=False, temperature_c=99.0), LIMITS, v)
    assert (lost.kind, lost.unknown) == ("proceed", ("temperature", "power", "vram"))
    assert "not answering" in lost.reason


def test_configured_limits_are_named_in_the_reason() -> None:
    limits = gpu_limits(CARD, SafetyConfig(gpu_temp_warn_c=60, gpu_temp_hard_c=70))
    v = judge_gpu(gpu(temperature_c=72.5), limits, None)
    assert v.reason == "GPU 0 at 72.5 C, hard limit 70 C (config)"


# -- host --------------------------------------------------------------------------------


def host(**changes: float | None) -> HostSample:
    return dataclasses.replace(HOST, **changes)


def test_host_within_limits() -> None:
    v = judge_host(HOST, HOST_LIMITS, None)
    assert (v.kind, v.scope, v.gpu, v.key, v.unknown) == ("proceed", "host", None, "host", ())
    assert v.reason == "host is within its limits"


def test_host_cpu_temperature_hysteresis() -> None:
    kinds = []
    previous: Verdict | None = None
    for t in (91, 87, 85.5, 84.9, 96, 90, 85, 84):  # warn 90, hard 95, margin 5
        previous = judge_host(host(cpu_temp_c=t), HOST_LIMITS, previous)
        kinds.append(previous.kind)
    assert kinds == ["wait_cooldown", "wait_cooldown", "wait_cooldown", "proceed",
                     "abort", "abort", "abort", "proceed"]


def test_host_cpu_temperature_hard_aborts() -> None:
    v = judge_host(host(cpu_temp_c=95.0), HOST_LIMITS, None)
    assert (v.kind, v.cause, v.throttle) == ("abort", "cpu_temperature", 1.0)
    assert v.reason == "CPU at 95 C, hard limit 95 C (default)"


def test_host_cpu_and_ram_reduce_intensity() -> None:
    v = judge_host(host(cpu_pct=97.5), HOST_LIMITS, None)
    assert (v.kind, v.cause, v.throttle) == ("reduce_intensity", "cpu", pytest.approx(0.5))
    assert v.reason == "host CPU at 97.5 %, limit 95 % (default)"
    v = judge_host(host(ram_used_mib=9_250.0), HOST_LIMITS, None)
    assert (v.kind, v.cause, v.reading) == ("reduce_intensity", "ram", 92.5)
    assert v.throttle == pytest.approx(0.5)
    v = judge_host(host(cpu_pct=96.0, ram_used_mib=9_900.0), HOST_LIMITS, None)
    assert v.cause == "ram"  # the stronger throttle


def test_host_unknown_readings() -> None:
    v = judge_host(HostSample(), HOST_LIMITS, None)
    assert (v.kind, v.unknown) == ("proceed", ("cpu_temperature", "cpu", "ram"))
    v = judge_host(host(cpu_temp_c=None, ram_used_mib=9_000.0), HOST_LIMITS, None)
    assert (v.kind, v.unknown) == ("reduce_intensity", ("cpu_temperature",))


# -- the monitor -------------------------------------------------------------------------


def snap(seq: int, gpus: tuple[GpuSample, ...] = (CARD,), host_: HostSample = HOST) -> Snapshot:
    return Snapshot(ts=float(seq), seq=seq, gpu_source="simulated", gpus=gpus, host=host_)


def test_monitor_reports_only_changes() -> None:
    monitor = SafetyMonitor()
    second = dataclasses.replace(CARD, index=1, uuid="GPU-1")
    assert monitor.check(snap(1, (CARD, second)), CFG) == []
    assert list(monitor.verdicts()) == ["gpu0", "gpu1", "host"]
    assert all(v.kind == "proceed" for v in monitor.verdicts().values())

    changes = monitor.check(snap(2, (gpu(temperature_c=81.0), second)), CFG)
    assert [(c.previous, c.verdict.key, c.verdict.kind) for c in changes] == [
        ("proceed", "gpu0", "wait_cooldown")]
    assert monitor.check(snap(3, (gpu(temperature_c=78.0), second)), CFG) == []  # held
    changes = monitor.check(snap(4, (gpu(temperature_c=90.0), second),
                                 host(cpu_pct=99.0)), CFG)
    assert [(c.previous, c.verdict.key, c.verdict.kind) for c in changes] == [
        ("wait_cooldown", "gpu0", "abort"), ("proceed", "host", "reduce_intensity")]
    changes = monitor.check(snap(5, (gpu(temperature_c=60.0), second)), CFG)
    assert [(c.previous, c.verdict.kind) for c in changes] == [
        ("abort", "proceed"), ("reduce_intensity", "proceed")]
    assert monitor.verdict("gpu0") == monitor.verdicts()["gpu0"]


def test_monitor_first_sample_over_a_limit_is_a_change() -> None:
    monitor = SafetyMonitor()
    changes = monitor.check(snap(1, (gpu(temperature_c=99.0),)), CFG)
    assert [(c.previous, c.verdict.kind) for c in changes] == [("proceed", "abort")]


def test_monitor_forgets_a_gpu_that_is_gone_and_can_reset() -> None:
    monitor = SafetyMonitor()
    monitor.check(snap(1, (gpu(temperature_c=81.0),)), CFG)
    monitor.check(snap(2, ()), CFG)
    assert list(monitor.verdicts()) == ["host"]
    # back at 78 C: a fresh start, no cooldown held
    monitor.check(snap(3, (gpu(temperature_c=78.0),)), CFG)
    assert monitor.verdicts()["gpu0"].kind == "proceed"
    monitor.reset()
    assert monitor.verdicts() == {}


def test_monitor_applies_a_new_config_at_once() -> None:
    monitor = SafetyMonitor()
    monitor.check(snap(1), CFG)
    changes = monitor.check(snap(2), SafetyConfig(gpu_temp_warn_c=40, gpu_temp_hard_c=45))
    assert [c.verdict.kind for c in changes] == ["abort"]


def test_verdicts_are_a_copy() -> None:
    monitor = SafetyMonitor()
    monitor.check(snap(1), CFG)
    view = monitor.verdicts()
    monitor.check(snap(2, ()), CFG)
    assert "gpu0" in view


# -- events ------------------------------------------------------------------------------


def test_a_change_becomes_an_event() -> None:
    verdict = judge_gpu(gpu(power_draw_w=200.0), LIMITS, None)
    event = VerdictChange("proceed", verdict).event()
    assert event == SafetyVerdictChanged(
        scope="gpu", gpu=0, kind="reduce_intensity", previous="proceed", reason=verdict.reason,
        reading=200.0, limit=pytest.approx(190.0), throttle=pytest.approx(0.5))
    assert event.type == "safety.verdict"
    assert event.describe() == (
        "Models started on GPU 0 now serve fewer requests at once (cut by 50 %): "
        "GPU 0 at 200 W, warn limit 190 W (95% of the card's 200 W limit)")
    assert event.severity == "warning"
    host_event = VerdictChange("abort", judge_host(HOST, HOST_LIMITS, None)).event()
    assert host_event.describe() == (
        "Safe again: host is within its limits (before: over a hard limit)")
    assert host_event.severity == "info"
    assert host_event.to_dict()["reading"] is None


def test_emergency_stop_is_loud() -> None:
    event = EmergencyStop(scope="gpu", gpu=0, reason="GPU 0 at 86 C, hard limit 85 C "
                          "(card slowdown)", models=("chat-8b", "coder-14b"))
    assert event.type == "safety.emergency_stop"
    assert event.describe().startswith(
        "Emergency stop on GPU 0: GPU 0 at 86 C, hard limit 85 C (card slowdown). "
        "Stopped chat-8b, coder-14b; nothing restarts by itself")
    assert event.severity == "error"
    assert event.to_dict()["models"] == ("chat-8b", "coder-14b")
    quiet = EmergencyStop(scope="host", gpu=None, reason="CPU at 96 C")
    assert quiet.describe() == "Emergency stop on the host: CPU at 96 C. No model was running there"


def test_reduce_intensity_holds_until_a_band_under_the_limit_so_it_does_not_flap() -> None:
    from gpuwarden.engine.safety.limits import SafetyConfig, host_limits
    from gpuwarden.engine.safety.verdict import PERCENT_BAND, judge_host
    from gpuwarden.engine.telemetry.snapshot import HostSample

    limits = host_limits(SafetyConfig(ram_pct=85.0))

    def ram(pct: float, previous):
        return judge_host(HostSample(ram_used_mib=pct, ram_total_mib=100.0), limits, previous)

    first = ram(86.0, None)
    assert first.kind == "reduce_intensity" and first.cause == "ram"
    hovering = ram(84.0, first)  # under the limit, inside the band: still reduced
    assert hovering.kind == "reduce_intensity" and hovering.throttle == 0.0
    assert ram(85.0 - PERCENT_BAND - 0.1, hovering).kind == "proceed"
    assert ram(84.0, None).kind == "proceed"  # no band without a previous reduce
