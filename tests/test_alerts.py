"""The alert board: engine events folded into what is wrong now (and what was done)."""

from __future__ import annotations

from gpuwarden.engine.alerts import Alert, AlertBoard
from gpuwarden.engine.events import (
    ConfigProblemFound,
    ConfigReloaded,
    EmergencyStop,
    Event,
    GpuLost,
    GpuRecovered,
    ModelCrashed,
    ModelLoading,
    ModelOffloaded,
    ModelReady,
    ModelRestartExhausted,
    ModelRestartScheduled,
    ModelUnloaded,
    PressureAlert,
    PressureCleared,
    PressureRaised,
    SafetyVerdictChanged,
    StorageError,
)


def fold(*events: Event, board: AlertBoard | None = None) -> AlertBoard:
    board = board or AlertBoard()
    for event in events:
        board.apply(event)
    return board


def only(board: AlertBoard) -> Alert:
    (alert,) = board.active()
    return alert


def vram(gpu: int, ts: float = 10.0, value: float = 93.0) -> PressureRaised:
    return PressureRaised(kind="vram", gpu=gpu, value=value, threshold=90.0, ts=ts)


def vram_cleared(gpu: int, ts: float = 50.0) -> PressureCleared:
    return PressureCleared(kind="vram", gpu=gpu, value=70.0, threshold=80.0, ts=ts)


def verdict(kind: str, gpu: int | None = 0, ts: float = 10.0, previous: str = "proceed",
            reason: str = "GPU 0 at 88 C, warn limit 85 C (card slowdown)"
            ) -> SafetyVerdictChanged:
    return SafetyVerdictChanged(scope="gpu" if gpu is not None else "host", gpu=gpu, kind=kind,
                                previous=previous, reason=reason, ts=ts)


# -- pressure -------------------------------------------------------------------------------


def test_vram_pressure_is_an_amber_alert_on_its_gpu_until_it_clears():
    board = AlertBoard()
    assert board.apply(vram(0, value=93.4))
    alert = only(board)
    assert alert.level == "warning" and alert.gpu == 0 and not alert.dismissable
    assert alert.title == "GPU 0 VRAM pressure: 93 % used"
    assert "90 %" in alert.detail and alert.since_ts == 10.0
    assert (board.level(0), board.level(1), board.level()) == ("warning", "ok", "warning")
    # The debounced user alert that follows the raise is the same trouble: nothing changes.
    assert not board.apply(PressureAlert(kind="vram", gpu=0, value=93.4, threshold=90.0,
                                         throttle=0.3, ts=10.0))
    assert board.apply(vram_cleared(0))
    assert board.active() == () and board.level() == "ok"


def test_a_pressure_alert_alone_raises_the_alert_too():
    board = fold(PressureAlert(kind="ram", gpu=None, value=95.0, threshold=90.0, throttle=0.5,
                               ts=3.0))
    assert only(board).title == "RAM pressure: 95 % used" and only(board).gpu is None


def test_disk_pressure_is_told_in_free_gib():
    board = fold(PressureRaised(kind="disk", gpu=None, value=4.25, threshold=5.0, ts=1.0))
    alert = only(board)
    assert alert.title == "Disk space low: 4.2 GiB free"
    assert "under 5 GiB" in alert.detail


def test_the_relief_the_engine_carried_out_is_told_on_the_gpus_own_alert():
    board = fold(vram(0), vram(1, ts=11.0))
    board.set_model_gpus({"llama-8b": 0, "qwen-7b": 1, "phi": 1})
    assert board.apply(ModelOffloaded(model="llama-8b", reason="pressure", ts=12.0))
    board.apply(ModelOffloaded(model="qwen-7b", reason="pressure", ts=12.0))
    board.apply(ModelUnloaded(model="phi", reason="pressure", ts=12.0))
    by_gpu = {a.gpu: a.detail for a in board.active()}
    assert by_gpu[0] == "over 90 %; moved llama-8b to the CPU"
    assert by_gpu[1] == "over 90 %; moved qwen-7b to the CPU; unloaded phi"


def test_without_the_models_gpus_a_relief_goes_only_to_an_unambiguous_alert():
    board = fold(vram(0), ModelOffloaded(model="llama-8b", reason="pressure"))
    assert "moved llama-8b to the CPU" in only(board).detail
    board = fold(vram(0), vram(1), ModelOffloaded(model="llama-8b", reason="pressure"))
    assert all("llama-8b" not in a.detail for a in board.active())


def test_a_model_unloaded_from_the_cpu_answers_ram_pressure_not_vram():
    board = fold(vram(0), PressureRaised(kind="ram", gpu=None, value=92.0, threshold=90.0),
                 ModelReady(model="tiny", placement="cpu"),
                 ModelUnloaded(model="tiny", reason="pressure"))
    board.set_model_gpus({"tiny": 0})
    by_kind = {a.key: a.detail for a in board.active()}
    assert "unloaded tiny" in by_kind["pressure:ram"]
    assert "tiny" not in by_kind["pressure:vram:gpu0"]


def test_unloads_for_other_reasons_are_not_counted_as_relief():
    board = fold(vram(0), ModelUnloaded(model="llama-8b", reason="idle"),
                 ModelOffloaded(model="qwen", reason="user"))
    assert only(board).detail == "over 90 %"


# -- safety ---------------------------------------------------------------------------------


def test_safety_verdicts_turn_amber_then_red_and_proceed_clears():
    board = fold(verdict("reduce_intensity", ts=10.0))
    assert only(board).level == "warning" and only(board).title == "GPU 0 near its limits"
    assert "fewer parallel slots" in only(board).detail
    board.apply(verdict("wait_cooldown", ts=20.0, previous="reduce_intensity"))
    alert = only(board)
    assert alert.title == "GPU 0 cooling down" and alert.since_ts == 10.0  # same trouble
    assert alert.detail.startswith("GPU 0 at 88 C, warn limit 85 C")
    assert "loads wait" in alert.detail
    board.apply(verdict("abort", ts=30.0, previous="wait_cooldown"))
    assert only(board).level == "error" and board.level(0) == "error"
    assert board.apply(verdict("proceed", ts=40.0, previous="abort"))
    assert board.active() == ()


def test_a_host_verdict_belongs_to_no_gpu():
    board = fold(verdict("reduce_intensity", gpu=None, reason="host RAM at 87 %, limit 85 %"))
    assert only(board).title == "Host near its limits" and only(board).gpu is None
    assert board.level(0) == "ok" and board.level() == "warning"


def test_an_emergency_stop_stays_red_until_dismissed():
    board = fold(verdict("abort"),
                 EmergencyStop(scope="gpu", gpu=0, reason="GPU 0 at 90 C, hard limit 87 C",
                               models=("llama-8b", "phi"), ts=10.0),
                 verdict("proceed", ts=60.0, previous="abort"))
    alert = only(board)
    assert alert.level == "error" and alert.title == "Emergency stop on GPU 0"
    assert "stopped llama-8b, phi" in alert.detail and alert.dismissable
    assert board.dismiss(alert.key)
    assert board.active() == () and board.level(0) == "ok"


def test_conditions_that_clear_by_themselves_cannot_be_dismissed():
    board = fold(vram(0), GpuLost(gpu=1, message="fell off the bus"))
    assert not any(board.dismiss(a.key) for a in board.active())
    assert len(board.active()) == 2


# -- GPUs and models ------------------------------------------------------------------------


def test_a_lost_gpu_is_red_until_it_recovers():
    board = fold(GpuLost(gpu=1, message="fell off the bus", ts=5.0))
    alert = only(board)
    assert alert.title == "GPU 1 lost" and "fell off the bus" in alert.detail
    assert (board.level(1), board.level(0)) == ("error", "ok")
    assert board.apply(GpuRecovered(gpu=1, ts=9.0)) and board.active() == ()


def test_a_crashed_model_is_amber_while_it_restarts_and_clears_when_ready():
    board = AlertBoard()
    board.set_model_gpus({"llama-8b": 1})
    fold(ModelReady(model="llama-8b", placement="gpu"),
         ModelCrashed(model="llama-8b", kind="gpu_oom", exit_code=1, ts=5.0),
         ModelRestartScheduled(model="llama-8b", delay_s=2.0, attempt=1, placement="gpu"),
         board=board)
    alert = only(board)
    assert alert.title == "llama-8b ran out of GPU memory" and alert.gpu == 1
    assert alert.detail == "exit code 1; restart #1 after 2 s"
    board.apply(ModelCrashed(model="llama-8b", kind="crash", signal=11, ts=8.0))
    board.apply(ModelRestartScheduled(model="llama-8b", delay_s=4.0, attempt=2,
                                      placement="gpu"))
    assert only(board).detail == "signal 11; restart #2 after 4 s"
    assert not board.apply(ModelLoading(model="llama-8b", placement="gpu", reason="restart"))
    assert board.apply(ModelReady(model="llama-8b", placement="gpu"))
    assert board.active() == ()


def test_a_model_that_gave_up_is_red_until_it_loads_again():
    board = fold(ModelCrashed(model="phi", kind="crash", ts=5.0),
                 ModelRestartExhausted(model="phi", attempts=5, message="gave up", ts=6.0))
    alert = only(board)  # the amber crash is replaced, not shown beside it
    assert alert.level == "error" and alert.title == "phi gave up after 5 crashes in a row"
    assert board.apply(ModelLoading(model="phi", placement="cpu"))
    assert board.active() == ()


# -- files ----------------------------------------------------------------------------------


def test_config_problems_stay_until_dismissed():
    board = fold(ConfigProblemFound(message="config.toml:4: models[0].gpu: not a number"),
                 ConfigProblemFound(message="config.toml:9: unknown key 'colour'"),
                 ConfigReloaded(path="config.toml"))
    assert len(board.active()) == 2 and board.level() == "warning"
    alert = next(a for a in board.active() if "colour" in a.detail)
    assert alert.title == "Config problem" and alert.dismissable
    assert board.dismiss(alert.key)
    assert [a.detail.startswith("config.toml:4") for a in board.active()] == [True]
    # Reported again (a later reload still finds it): it is back.
    assert board.apply(ConfigProblemFound(message="config.toml:9: unknown key 'colour'"))
    assert len(board.active()) == 2


def test_a_storage_error_is_red_until_dismissed():
    board = fold(StorageError(path="/data/journal.jsonl", message="No space left on device"))
    alert = only(board)
    assert alert.level == "error" and alert.title == "Cannot write /data/journal.jsonl"
    assert alert.detail == "No space left on device"
    assert board.dismiss(alert.key) and board.active() == ()
    assert not board.dismiss(alert.key)


def test_errors_come_first_then_the_newest():
    board = fold(vram(0, ts=1.0), ConfigProblemFound(message="bad", ts=3.0),
                 GpuLost(gpu=1, ts=2.0), StorageError(path="p", message="m", ts=0.5))
    assert [a.key for a in board.active()] == [
        "gpu-lost:1", "storage:p", "config:bad", "pressure:vram:gpu0"]


def test_a_storage_outage_clears_when_writing_works_again_and_a_read_problem_is_amber():
    from gpuwarden.engine.events import StorageError, StorageProblem, StorageRecovered

    board = AlertBoard()
    board.apply(StorageError(path="/data/events.jsonl", message="disk full", ts=1.0))
    board.apply(StorageProblem(path="/data/hints.json", message="unreadable: left alone",
                               ts=2.0))
    assert [(a.level, a.title) for a in board.active()] == [
        ("error", "Cannot write /data/events.jsonl"),
        ("warning", "Problem reading /data/hints.json")]
    board.apply(StorageRecovered(path="/data/events.jsonl", ts=3.0))
    assert [a.title for a in board.active()] == ["Problem reading /data/hints.json"]
