"""What the event log says: plain sentences with units, how serious each event is, and
which model it is about. Asserted on the words and figures a person reads."""

from __future__ import annotations

from typing import get_args

import pytest

from gpuwarden.engine.events import (
    ConfigProblemFound,
    CrashKind,
    EmergencyStop,
    Event,
    GpuLost,
    GpuRecovered,
    LoadReason,
    ModelCrashed,
    ModelLoading,
    ModelOffloaded,
    ModelReady,
    ModelRefused,
    ModelRestartExhausted,
    ModelRestartScheduled,
    ModelUnloaded,
    ModelWaiting,
    OffloadReason,
    PressureAlert,
    PressureCleared,
    PressureRaised,
    SafetyVerdictChanged,
    StorageError,
    SwapEvicted,
    UnloadReason,
)
from gpuwarden.engine.events.base import figure, size_text

# -- pressure -------------------------------------------------------------------------------


def test_vram_pressure_reads_as_percent_full_on_its_gpu() -> None:
    raised = PressureRaised(kind="vram", gpu=0, value=95.1, threshold=90.0)
    text = raised.describe()
    assert "VRAM on GPU 0" in text and "95 % full" in text and "90 %" in text
    assert "95.1" not in text and "threshold" not in text
    assert raised.severity == "warning"
    cleared = PressureCleared(kind="vram", gpu=0, value=62.0, threshold=80.0)
    assert "no longer under pressure" in cleared.describe()
    assert "62 % full" in cleared.describe() and "under 80 %" in cleared.describe()
    assert cleared.severity == "info"


def test_a_reading_next_to_its_limit_never_looks_equal_to_it() -> None:
    cleared = PressureCleared(kind="vram", gpu=1, value=79.7, threshold=80.0)
    assert "79.7 % full" in cleared.describe()
    assert figure(89.96, 90.0) == "89.96"
    assert figure(90.0, 90.0) == "90"


def test_disk_pressure_reads_as_free_gib() -> None:
    raised = PressureRaised(kind="disk", gpu=None, value=3.24, threshold=5.0)
    assert raised.describe() == "Disk space is under pressure: 3.2 GiB free (limit 5 GiB free)"
    cleared = PressureCleared(kind="disk", gpu=None, value=12.5, threshold=10.0)
    assert "12 GiB free" in cleared.describe() and "at least 10 GiB" in cleared.describe()


def test_alert_tells_clients_how_hard_to_back_off() -> None:
    alert = PressureAlert(kind="vram", gpu=0, value=95.1, threshold=90.0, throttle=0.76)
    text = alert.describe()
    assert "running short" in text and "alert at 90 %" in text
    assert "cut their load by 76 %" in text and "throttle" not in text
    assert alert.severity == "warning"
    full = PressureAlert(kind="ram", gpu=None, value=100.0, threshold=90.0, throttle=1.0)
    assert "stop sending work" in full.describe()
    assert full.severity == "error"
    calm = PressureAlert(kind="cpu", gpu=None, value=95.0, threshold=95.0, throttle=0.0)
    assert "need not back off" in calm.describe() and "busy on average" in calm.describe()


def test_to_dict_keeps_the_machine_form() -> None:
    alert = PressureAlert(ts=5.0, seq=3, kind="vram", gpu=0, value=95.1, threshold=90.0,
                          throttle=0.76)
    assert list(alert.to_dict().items()) == [
        ("ts", 5.0), ("seq", 3), ("type", "pressure.alert"), ("kind", "vram"), ("gpu", 0),
        ("value", 95.1), ("threshold", 90.0), ("throttle", 0.76)]
    ready = ModelReady(model="chat", placement="gpu", vram_mib=6450.0)
    assert list(ready.to_dict())[:5] == ["ts", "seq", "type", "model", "placement"]


# -- models ---------------------------------------------------------------------------------


def test_ready_says_where_and_the_measured_vram_in_gib_or_mib() -> None:
    ready = ModelReady(model="chat-8b", placement="gpu", gpu=0, vram_mib=6450.0,
                       vram_est_mib=6000.0)
    assert ready.describe().startswith("chat-8b is ready on GPU 0, holds 6.3 GiB VRAM")
    assert "planned 5.9 GiB" in ready.describe()
    small = ModelReady(model="tiny", placement="gpu", gpu=1, vram_mib=700.0)
    assert "holds 700 MiB VRAM" in small.describe() and "GPU 1" in small.describe()
    unmeasured = ModelReady(model="chat", placement="gpu", vram_est_mib=6000.0)
    assert "not measured" in unmeasured.describe() and "holds" not in unmeasured.describe()
    partial = ModelReady(model="big", placement="partial (20 layers on GPU)", gpu=0,
                         vram_mib=9000.0)
    assert "20 layers on GPU 0 and the rest on the CPU" in partial.describe()
    cpu = ModelReady(model="cpu-only", placement="cpu", ram_mib=800.0)
    assert cpu.describe() == "cpu-only is ready on the CPU, uses 800 MiB RAM"


@pytest.mark.parametrize(("kind", "words"), [
    ("gpu_oom", "ran out of GPU memory"),
    ("oom_killed", "OOM killer"),
    ("hang", "stopped answering"),
    ("startup_timeout", "did not get ready in time"),
    ("load_error", "could not load its model file"),
    ("launch_failed", "could not be started"),
    ("crash", "crashed"),
])
def test_crash_kinds_are_said_in_words(kind: CrashKind, words: str) -> None:
    event = ModelCrashed(model="coder", kind=kind, exit_code=1)
    assert event.describe().startswith("coder ") and words in event.describe()
    assert "_" not in event.describe()
    assert event.severity == "error"


def test_a_crash_names_its_signal_or_exit_code_and_its_last_log_line() -> None:
    killed = ModelCrashed(model="m", kind="oom_killed", signal=9)
    assert "SIGKILL" in killed.describe()
    failed = ModelCrashed(model="m", kind="gpu_oom", exit_code=1,
                          log_tail=("loading", "CUDA error: out of memory", "  "))
    assert "exit code 1" in failed.describe()
    assert failed.describe().endswith("last log line: CUDA error: out of memory")


def test_every_reason_a_model_event_carries_has_words() -> None:
    for reason in get_args(LoadReason):
        text = ModelLoading(model="m", placement="gpu", gpu=0, reason=reason).describe()
        assert "GPU 0" in text and "_" not in text
    for unload in get_args(UnloadReason):
        assert "_" not in ModelUnloaded(model="m", reason=unload).describe()
    for offload in get_args(OffloadReason):
        assert "_" not in ModelOffloaded(model="m", reason=offload).describe()


def test_unloads_and_moves_say_why_and_what_they_freed() -> None:
    idle = ModelUnloaded(model="chat", reason="idle", freed_vram_mib=6450.0,
                         freed_ram_mib=300.0)
    assert idle.describe() == ("chat was unloaded because it was idle, freeing 6.3 GiB VRAM "
                               "and 300 MiB RAM")
    assert idle.severity == "info"
    stopped = ModelUnloaded(model="chat", reason="safety")
    assert "emergency stop" in stopped.describe() and stopped.severity == "warning"
    moved = ModelOffloaded(model="coder", reason="pressure", freed_vram_mib=9000.0)
    assert "moved to the CPU to relieve VRAM pressure" in moved.describe()
    assert "8.8 GiB VRAM" in moved.describe() and "goes back to the GPU" in moved.describe()
    assert "goes back" not in ModelOffloaded(model="c", reason="user").describe()
    swap = SwapEvicted(model="chat", for_model="coder")
    assert "makes way for coder" in swap.describe()


def test_restarts_say_when_and_where() -> None:
    later = ModelRestartScheduled(model="m", delay_s=90.0, attempt=3, placement="16")
    assert later.describe() == ("m restarts in 1 min 30 s with 16 layers on the GPU and the "
                                "rest on the CPU (attempt 3)")
    soon = ModelRestartScheduled(model="m", delay_s=0.5, attempt=1, placement="cpu")
    assert "in 0.5 s on the CPU" in soon.describe()


def test_refusals_do_not_repeat_not_loaded() -> None:
    waited = ModelRefused(model="m", message="not loaded after waiting 300 s: GPU 0 at 86 C")
    assert waited.describe() == "m was not loaded after waiting 300 s: GPU 0 at 86 C"
    assert ModelRefused(model="m", message="it does not fit").describe() == \
        "m was not loaded: it does not fit"


# -- safety ---------------------------------------------------------------------------------


def verdict(kind: str, gpu: int | None = 0, **kw: float) -> SafetyVerdictChanged:
    return SafetyVerdictChanged(scope="gpu" if gpu is not None else "host", gpu=gpu,
                                kind=kind, previous="proceed", reason="the reading", **kw)


def test_safety_verdicts_say_what_follows_and_how_serious_it_is() -> None:
    reduce = verdict("reduce_intensity", throttle=0.5)
    assert "fewer requests at once (cut by 50 %)" in reduce.describe()
    assert reduce.severity == "warning"
    cool = verdict("wait_cooldown")
    assert cool.describe() == "No model loads on GPU 0 until it cools down: the reading"
    assert cool.severity == "warning"
    host = verdict("wait_cooldown", gpu=None)
    assert "until the host cools down" in host.describe()
    abort = verdict("abort")
    assert abort.describe() == "Every model on GPU 0 is stopped: the reading"
    assert abort.severity == "error"
    assert verdict("proceed").severity == "info"
    assert "Safe again" in verdict("proceed").describe()


def test_emergency_stop_names_what_it_stopped() -> None:
    stop = EmergencyStop(scope="gpu", gpu=0, reason="GPU 0 at 86 C, hard limit 85 C",
                         models=("chat-8b", "coder-14b"))
    assert "Emergency stop on GPU 0" in stop.describe()
    assert "Stopped chat-8b, coder-14b" in stop.describe()
    assert "nothing restarts by itself" in stop.describe()
    assert stop.severity == "error" and stop.model_name is None


# -- severity and model -------------------------------------------------------------------


@pytest.mark.parametrize(("event", "severity"), [
    (GpuLost(gpu=0), "error"),
    (StorageError(path="/x", message="disk full"), "error"),
    (ModelRestartExhausted(model="m", attempts=5, message="gave up"), "error"),
    (ConfigProblemFound(message="bad"), "warning"),
    (ModelRefused(model="m", message="no"), "warning"),
    (ModelWaiting(model="m", reason="hot"), "warning"),
    (GpuRecovered(gpu=0), "info"),
    (ModelReady(model="m", placement="gpu"), "info"),
])
def test_severity_per_kind_of_event(event: Event, severity: str) -> None:
    assert event.severity == severity


def test_model_name_is_the_model_an_event_is_about() -> None:
    assert ModelWaiting(model="chat", reason="hot").model_name == "chat"
    assert SwapEvicted(model="chat", for_model="coder").model_name == "chat"
    assert GpuLost(gpu=0).model_name is None
    assert PressureRaised(kind="vram", gpu=0, value=95.0, threshold=90.0).model_name is None


def test_sizes_switch_to_gib_at_one_gib() -> None:
    assert size_text(1023.0) == "1023 MiB"
    assert size_text(1024.0) == "1.0 GiB"
    assert size_text(6450.0) == "6.3 GiB"
