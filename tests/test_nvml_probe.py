"""NvmlProbe against a fake pynvml (autospecced functions, real errors and constants)."""

from __future__ import annotations

import logging
import os

import pynvml
import pytest

from fake_nvml import GIB, MIB, FakeGpu, FakeNvml, process
from gpuwarden.engine.events import Event, GpuLost, GpuRecovered, GpuUnavailable
from gpuwarden.engine.telemetry.nvml import NvmlProbe
from gpuwarden.engine.telemetry.probe import GpuProbe, GpuReading
from gpuwarden.engine.telemetry.snapshot import GpuProcess

NAMES = {1234: "python", 4321: "llama-server", 99: "Xorg"}


def two_gpus() -> list[FakeGpu]:
    return [
        FakeGpu(
            name="NVIDIA A100-SXM4-80GB",
            uuid="GPU-aaaa",
            memory_total=80 * GIB,
            memory_used=20 * GIB,
            power_mw=250_500,
            power_limit_mw=400_000,
            throttle_mask=pynvml.nvmlClocksEventReasonSwPowerCap
            | pynvml.nvmlClocksEventReasonHwThermalSlowdown,
            compute=[process(1234, 2 * GIB), process(4321, None)],
            graphics=[process(99, 512 * MIB)],
        ),
        FakeGpu(
            name=b"NVIDIA GeForce RTX 4090",
            uuid="GPU-bbbb",
            memory_total=24 * GIB,
            memory_used=3 * GIB,
            temperature=45,
            slowdown=87,
            shutdown=92,
            power_mw=30_000,
            power_limit_mw=450_000,
            fan=0,
            throttle_mask=pynvml.nvmlClocksEventReasonGpuIdle,
        ),
    ]


def make(fake: FakeNvml, **kwargs: float) -> NvmlProbe:
    return NvmlProbe(fake, process_name=lambda pid: NAMES.get(pid, f"pid {pid}"), **kwargs)


def run(probe: NvmlProbe, times: range | list[float]) -> tuple[list[GpuReading], list[Event]]:
    readings = [probe.sample(float(t)) for t in times]
    return readings, [e for r in readings for e in r.events]


def source(probe: NvmlProbe) -> str:
    return probe.source  # read afresh each time (a plain attribute read would be narrowed)


def of_type(events: list[Event], kind: type[Event]) -> list[Event]:
    return [e for e in events if isinstance(e, kind)]


def test_implements_the_probe_protocol() -> None:
    probe: GpuProbe = make(FakeNvml(two_gpus()))
    assert probe.source == "none"  # nothing read yet


def test_happy_path_two_gpus_units_and_slow_fields() -> None:
    probe = make(FakeNvml(two_gpus()))
    reading = probe.sample(0.0)
    assert probe.source == "nvml"
    assert reading.note is None and reading.events == ()
    a, b = reading.gpus
    assert (a.index, a.name, a.uuid, a.available) == (0, "NVIDIA A100-SXM4-80GB", "GPU-aaaa", True)
    assert (b.index, b.name, b.uuid) == (1, "NVIDIA GeForce RTX 4090", "GPU-bbbb")  # bytes decoded
    assert (a.memory_total_mib, a.memory_used_mib, a.memory_free_mib) == (81920.0, 20480.0, 61440.0)
    assert (a.gpu_util_pct, a.memory_util_pct, a.temperature_c) == (55.0, 30.0, 61.0)
    assert (a.temperature_slowdown_c, a.temperature_shutdown_c) == (90.0, 95.0)
    assert (a.power_draw_w, a.power_limit_w) == (250.5, 400.0)
    assert (a.fan_speed_pct, a.sm_clock_mhz, a.mem_clock_mhz) == (40.0, 1410.0, 1593.0)
    assert a.throttle_reasons == ("sw_power_cap", "hw_thermal")
    assert a.processes == (
        GpuProcess(1234, "python", 2048.0, "compute"),
        GpuProcess(4321, "llama-server", None, "compute"),
        GpuProcess(99, "Xorg", 512.0, "graphics"),
    )
    assert (b.memory_total_mib, b.temperature_c, b.power_draw_w, b.power_limit_w) == (
        24576.0,
        45.0,
        30.0,
        450.0,
    )
    assert (b.temperature_slowdown_c, b.temperature_shutdown_c, b.fan_speed_pct) == (87, 92, 0)
    assert b.throttle_reasons == ("gpu_idle",)
    assert b.processes == ()


def test_old_pynvml_without_clocks_event_reasons_uses_throttle_reasons() -> None:
    fake = FakeNvml(two_gpus(), event_reasons=False)
    reading = make(fake).sample(0.0)
    assert reading.gpus[0].throttle_reasons == ("sw_power_cap", "hw_thermal")
    assert fake.nvmlDeviceGetCurrentClocksThrottleReasons.call_count == 2


def test_init_once_and_slow_fields_once_per_slow_interval() -> None:
    fake = FakeNvml(two_gpus())
    run(make(fake, slow_every_s=5.0), range(50))  # 50 samples, one per second
    assert fake.nvmlInit.call_count == 1
    assert fake.nvmlDeviceGetCount.call_count == 1
    assert fake.nvmlDeviceGetMemoryInfo.call_count == 100  # fast: every sample, both GPUs
    assert fake.nvmlDeviceGetComputeRunningProcesses.call_count == 20  # 10 intervals x 2 GPUs
    assert fake.nvmlDeviceGetGraphicsRunningProcesses.call_count == 20
    assert fake.nvmlDeviceGetTemperatureThreshold.call_count == 40  # slowdown + shutdown
    assert fake.nvmlDeviceGetEnforcedPowerLimit.call_count == 20
    assert fake.nvmlDeviceGetName.call_count == 2  # static: once at enumeration


def test_slow_fields_refresh_after_interval() -> None:
    fake = FakeNvml(two_gpus())
    probe = make(fake, slow_every_s=5.0)
    probe.sample(0.0)
    fake.gpus[0].compute = [process(1234, 4 * GIB)]
    fake.gpus[0].power_limit_mw = 300_000
    stale = probe.sample(4.0).gpus[0]
    assert stale.power_limit_w == 400.0 and stale.processes is not None
    assert len(stale.processes) == 3
    fresh = probe.sample(5.0).gpus[0]
    assert fresh.power_limit_w == 300.0
    assert fresh.processes == (
        GpuProcess(1234, "python", 4096.0, "compute"),
        GpuProcess(99, "Xorg", 512.0, "graphics"),
    )


def test_not_supported_field_is_na_and_never_asked_again() -> None:
    gpus = two_gpus()
    gpus[0].unsupported = {"nvmlDeviceGetFanSpeed", "nvmlDeviceGetPowerUsage"}
    fake = FakeNvml(gpus)
    readings, events = run(make(fake), range(10))
    for r in readings:
        a, b = r.gpus
        assert a.fan_speed_pct is None and a.power_draw_w is None
        assert a.temperature_c == 61.0 and a.memory_used_mib == 20480.0
        assert b.fan_speed_pct == 0.0 and b.power_draw_w == 30.0
    assert events == []
    # GPU 0 asked once each; GPU 1 every sample.
    assert fake.nvmlDeviceGetFanSpeed.call_count == 1 + 10
    assert fake.nvmlDeviceGetPowerUsage.call_count == 1 + 10


def test_no_permission_on_processes_is_na_without_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gpus = two_gpus()
    gpus[0].errors = {
        "nvmlDeviceGetComputeRunningProcesses": pynvml.NVML_ERROR_NO_PERMISSION,
        "nvmlDeviceGetGraphicsRunningProcesses": pynvml.NVML_ERROR_NO_PERMISSION,
    }
    with caplog.at_level(logging.WARNING):
        a = make(FakeNvml(gpus)).sample(0.0).gpus[0]
    assert a.processes is None and a.memory_used_mib == 20480.0
    assert not caplog.records


@pytest.mark.parametrize(
    ("setup", "reason", "words"),
    [
        ({"library_present": False}, "no_library", "libnvidia-ml.so"),
        ({"driver_loaded": False}, "driver_not_loaded", "not loaded"),
        ({"gpus": []}, "no_device", "no GPU"),
    ],
)
def test_no_gpu_is_a_normal_state_then_the_driver_appears(
    setup: dict[str, object], reason: str, words: str
) -> None:
    fake = FakeNvml(**{"gpus": two_gpus(), **setup})  # type: ignore[arg-type]
    probe = make(fake, retry_every_s=5.0)
    readings, events = run(probe, range(20))
    assert all(r.gpus == () for r in readings)
    assert all(r.note and "--simulate" in r.note and words in r.note for r in readings)
    assert [(e.reason, e.message) for e in of_type(events, GpuUnavailable)] == [  # type: ignore[attr-defined]
        (reason, readings[0].note)
    ]
    assert len(events) == 1
    assert source(probe) == "none"
    assert fake.nvmlInit.call_count == 4  # retried at 0, 5, 10, 15 s; not per sample
    fake.library_present, fake.driver_loaded, fake.gpus = True, True, two_gpus()
    assert probe.sample(20.0).gpus != ()  # retry due at 20 s
    assert source(probe) == "nvml"
    later = probe.sample(21.0)
    assert [g.name for g in later.gpus] == ["NVIDIA A100-SXM4-80GB", "NVIDIA GeForce RTX 4090"]
    assert later.note is None


def test_each_reason_has_its_own_sentence() -> None:
    notes = {
        make(FakeNvml(two_gpus(), library_present=False)).sample(0.0).note,
        make(FakeNvml(two_gpus(), driver_loaded=False)).sample(0.0).note,
        make(FakeNvml([])).sample(0.0).note,
    }
    assert len(notes) == 3


def test_gpu_lost_then_back_after_retry_interval() -> None:
    fake = FakeNvml(two_gpus())
    probe = make(fake, retry_every_s=5.0)
    run(probe, range(10))
    fake.gpus[0].lost = True
    lost_readings, lost_events = run(probe, [10, 11, 12])
    assert [(type(e), e.gpu, e.uuid) for e in lost_events] == [  # type: ignore[attr-defined]
        (GpuLost, 0, "GPU-aaaa")
    ]
    for r in lost_readings:
        a, b = r.gpus
        assert (a.index, a.name, a.uuid, a.available) == (
            0,
            "NVIDIA A100-SXM4-80GB",
            "GPU-aaaa",
            False,
        )
        assert a.memory_used_mib is None and a.temperature_c is None and a.processes is None
        assert b.available and b.temperature_c == 45.0
    fake.gpus[0].lost = False
    fake.gpus[0].name = "NVIDIA A100 (reset)"
    early, early_events = run(probe, [13, 14])
    assert not any(r.gpus[0].available for r in early) and early_events == []  # not yet
    back, back_events = run(probe, [15, 16, 17])
    assert [(type(e), e.gpu) for e in back_events] == [(GpuRecovered, 0)]  # type: ignore[attr-defined]
    a = back[0].gpus[0]
    assert a.available and a.memory_used_mib == 20480.0 and a.power_limit_w == 400.0
    assert a.name == "NVIDIA A100 (reset)"  # static fields re-read
    assert a.processes is not None and len(a.processes) == 3


@pytest.mark.parametrize(
    "error",
    [
        pynvml.NVML_ERROR_DRIVER_NOT_LOADED,
        pynvml.NVML_ERROR_UNINITIALIZED,
        pynvml.NVML_ERROR_LIBRARY_NOT_FOUND,
    ],
)
def test_driver_goes_away_mid_run_and_comes_back(error: int) -> None:
    fake = FakeNvml(two_gpus())
    probe = make(fake, retry_every_s=5.0)
    run(probe, range(3))
    fake.driver_loaded, fake.driver_error = False, error
    gone, gone_events = run(probe, [3, 4, 5, 6, 7, 8, 9, 10])
    lost = of_type(gone_events, GpuLost)
    assert [(e.gpu, e.uuid) for e in lost] == [(0, "GPU-aaaa"), (1, "GPU-bbbb")]  # type: ignore[attr-defined]
    assert all("driver stopped answering" in e.message for e in lost)  # type: ignore[attr-defined]
    assert len(gone_events) == 2  # no GpuUnavailable on top of the GpuLost events
    for r in gone:
        assert [(g.index, g.available) for g in r.gpus] == [(0, False), (1, False)]
        assert r.note and "driver" in r.note
    assert source(probe) == "none"
    assert fake.nvmlShutdown.call_count == 1  # tried (it failed, and was only logged)
    assert fake.nvmlInit.call_count == 2  # at start, then one retry at 8 s (next due at 13 s)
    fake.driver_loaded = True
    back, back_events = run(probe, [11, 12, 13, 14])
    assert [(type(e), e.gpu) for e in back_events] == [  # type: ignore[attr-defined]
        (GpuRecovered, 0),
        (GpuRecovered, 1),
    ]
    assert not any(g.available for g in back[0].gpus)  # retry due at 13 s
    assert all(g.available and g.memory_used_mib is not None for g in back[2].gpus)
    assert source(probe) == "nvml"
    assert back[3].gpus[1].temperature_c == 45.0


def test_gpu_lost_at_start_up_is_listed_and_picked_up_later() -> None:
    gpus = two_gpus()
    gpus[0].lost = True
    fake = FakeNvml(gpus)
    probe = make(fake, retry_every_s=5.0)
    first = probe.sample(0.0)
    assert [(type(e), e.gpu) for e in first.events] == [(GpuLost, 0)]  # type: ignore[attr-defined]
    a, b = first.gpus
    assert (a.index, a.name, a.available) == (0, "GPU 0", False)
    assert b.available and b.name == "NVIDIA GeForce RTX 4090"
    gpus[0].lost = False
    _, events = run(probe, range(1, 8))
    assert [(type(e), e.gpu) for e in events] == [(GpuRecovered, 0)]  # type: ignore[attr-defined]
    a = probe.sample(8.0).gpus[0]
    assert a.available and a.name == "NVIDIA A100-SXM4-80GB" and a.uuid == "GPU-aaaa"


def test_a_gpu_still_lost_after_the_driver_returns_is_not_reported_twice() -> None:
    fake = FakeNvml(two_gpus())
    probe = make(fake, retry_every_s=5.0)
    fake.gpus[0].lost = True
    _, events = run(probe, [0, 1])
    fake.driver_loaded = False
    _, gone = run(probe, [2, 3])
    fake.driver_loaded = True
    _, back = run(probe, range(4, 10))
    assert [(type(e), e.gpu) for e in events + gone + back] == [  # type: ignore[attr-defined]
        (GpuLost, 0),
        (GpuLost, 1),
        (GpuRecovered, 1),
    ]
    last = probe.sample(10.0)
    assert [g.available for g in last.gpus] == [False, True]


def test_unexpected_error_on_one_field(caplog: pytest.LogCaptureFixture) -> None:
    gpus = two_gpus()
    gpus[0].errors = {"nvmlDeviceGetTemperature": pynvml.NVML_ERROR_UNKNOWN}
    fake = FakeNvml(gpus)
    probe = make(fake)
    with caplog.at_level(logging.WARNING):
        readings, events = run(probe, range(5))
    for r in readings:
        a, b = r.gpus
        assert a.available and a.temperature_c is None
        assert a.memory_used_mib == 20480.0 and a.power_draw_w == 250.5
        assert b.temperature_c == 45.0
    assert events == []
    warnings = [rec for rec in caplog.records if "temperature" in rec.getMessage()]
    assert len(warnings) == 1  # once per (gpu, field)
    gpus[0].errors = {}
    assert probe.sample(5.0).gpus[0].temperature_c == 61.0  # asked again, not remembered


def test_close_shuts_nvml_down_only_when_initialised() -> None:
    fake = FakeNvml(two_gpus(), driver_loaded=False)
    probe = make(fake)
    probe.sample(0.0)
    probe.close()
    assert fake.nvmlShutdown.call_count == 0
    fake.driver_loaded = True
    probe.sample(5.0)
    probe.close()
    assert fake.nvmlShutdown.call_count == 1
    assert probe.source == "none"


def test_default_process_names_come_from_psutil() -> None:
    gpus = two_gpus()
    gpus[0].compute = [process(os.getpid(), GIB), process(2**31 - 7, None)]
    gpus[0].graphics = []
    a = NvmlProbe(FakeNvml(gpus)).sample(0.0).gpus[0]
    assert a.processes is not None
    own, gone = a.processes
    assert own.name and not own.name.startswith("pid ")
    assert gone.name == f"pid {2**31 - 7}"


def test_real_pynvml_never_raises() -> None:
    probe = NvmlProbe()  # the real pynvml: no GPU here means a note, GPUs means readings
    try:
        reading = probe.sample(0.0)
        again = probe.sample(1.0)
    finally:
        probe.close()
    if reading.gpus:
        assert probe.source in ("nvml", "none") and again.gpus
    else:
        assert reading.note and "--simulate" in reading.note
        assert len(of_type(list(reading.events), GpuUnavailable)) == 1 and again.events == ()
