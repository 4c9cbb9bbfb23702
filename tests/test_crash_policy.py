import signal
from dataclasses import replace

import pytest

from gpuwarden.engine.lifecycle.config import RestartConfig
from gpuwarden.engine.lifecycle.crash import DeathReport, backoff_s, classify, decide, downgrade
from lifecycle_helpers import loaded

CFG = RestartConfig()


def report(**kw) -> DeathReport:
    return DeathReport("m", 1, **kw)


def test_classification():
    assert classify(report(exit_code=0, expected=True)) is None
    assert classify(report(signal=signal.SIGKILL)) == "oom_killed"
    assert classify(report(exit_code=137, oom_evidence=True)) == "oom_killed"
    assert classify(report(exit_code=137, oom_evidence=False)) == "crash"
    assert classify(report(exit_code=1, log_tail=("x", "cudaMalloc failed: out of memory"))) \
        == "gpu_oom"
    assert classify(report(exit_code=134, log_tail=("CUDA error: out of memory",))) == "gpu_oom"
    assert classify(report(exit_code=1, log_tail=("error: invalid magic",))) == "crash"
    assert classify(report(exit_code=0)) == "crash"  # exited on its own: not what we wanted
    assert classify(report(expected=True, kind_hint="hang")) == "hang"


def test_backoff_doubles_to_the_cap():
    assert [backoff_s(n, CFG) for n in (1, 2, 3, 4, 5, 6, 7, 8)] == [1, 2, 4, 8, 16, 32, 60, 60]


@pytest.mark.parametrize(("placement", "layers", "expected"), [
    ("gpu", None, 16), ("auto", None, 16), (16, 16, 8), (2, 2, 1), (1, 1, "cpu"), ("cpu", None,
                                                                                   "cpu"),
])
def test_downgrade_after_gpu_oom(placement, layers, expected):
    assert downgrade(placement, layers, 32) == expected


def test_decide_schedules_with_backoff_and_gives_up_after_five():
    s = replace(loaded("m", placement="gpu"), ready_since=None)  # never healthy in between
    for attempt in range(1, 5):
        d = decide(s, "crash", 1000.0, CFG)
        assert d.attempt == attempt and d.restart_at == 1000.0 + backoff_s(attempt, CFG)
        s = replace(s, consecutive_crashes=attempt)
    last = decide(s, "crash", 1000.0, CFG)
    assert last.exhausted and last.restart_at is None


def test_pinned_models_keep_retrying_at_the_cap():
    s = replace(loaded("m", eviction="never"), consecutive_crashes=40)
    d = decide(s, "crash", 0.0, CFG)
    assert not d.exhausted and d.restart_at == 60.0


def test_ten_healthy_minutes_reset_the_count():
    s = replace(loaded("m"), consecutive_crashes=4, ready_since=0.0)
    assert decide(s, "crash", 601.0, CFG).attempt == 1
    assert decide(s, "crash", 599.0, CFG).attempt == 5


def test_gpu_oom_downgrades_and_a_user_unload_is_never_undone():
    s = loaded("m", placement="gpu")
    assert decide(s, "gpu_oom", 0.0, CFG).placement == 16
    assert decide(replace(s, user_unloaded=True), "crash", 0.0, CFG).restart_at is None
