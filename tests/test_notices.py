"""Which events become desktop notifications: five kinds, each can be turned off, a few a
minute at most, and what was held back said once the limits open (fake clock, no sleep)."""

from __future__ import annotations

from gpuwarden.app.notices import KINDS, NoticePolicy, notice_for
from gpuwarden.engine.clock import FakeClock
from gpuwarden.engine.events import (
    EmergencyStop,
    GpuLost,
    ModelCrashed,
    ModelReady,
    ModelRestartExhausted,
    PressureAlert,
    PressureRaised,
)
from gpuwarden.widgets.app_prefs import NOTIFY_LABELS


def crash(model: str = "chat") -> ModelCrashed:
    return ModelCrashed(model=model, kind="crash", exit_code=1)


def raised(gpu: int = 0) -> PressureRaised:
    return PressureRaised(kind="vram", gpu=gpu, value=95.0, threshold=90.0)


def test_the_five_kinds_notify_and_other_events_do_not():
    clock = FakeClock()
    policy = NoticePolicy(clock)
    events = [raised(), crash(), ModelRestartExhausted(model="chat", attempts=5, message="x"),
              GpuLost(gpu=1, message="fell off the bus"),
              EmergencyStop(scope="gpu", gpu=0, reason="too hot", models=("chat",))]
    notices = []
    for event in events:
        notices.append(policy.offer(event))
        clock.advance(61)  # past every limit
    assert [n.kind for n in notices if n is not None] == [e.TYPE for e in events]
    assert set(KINDS) == {e.TYPE for e in events} == set(NOTIFY_LABELS)  # each can be off
    assert policy.offer(ModelReady(model="chat", placement="gpu", vram_mib=1000.0)) is None
    assert policy.offer(PressureAlert(kind="vram", gpu=0, value=96.0, threshold=90.0,
                                      throttle=0.5)) is None  # the raise said it already


def test_a_notice_says_what_happened_and_what_a_click_opens():
    notice = notice_for(crash("chat"))
    assert notice.title == "chat crashed" and notice.model == "chat" and notice.gpu is None
    assert notice.body == crash("chat").describe() and notice.severity == "error"
    lost = notice_for(GpuLost(gpu=1, message="fell off the bus"))
    assert lost.title == "GPU 1 lost" and lost.gpu == 1 and lost.model is None
    assert notice_for(raised(1)).title == "VRAM on GPU 1 under pressure"
    stop = notice_for(EmergencyStop(scope="host", gpu=None, reason="RAM full"))
    assert stop.title == "Emergency stop on the host" and stop.severity == "error"


def test_a_kind_turned_off_never_notifies_nor_counts():
    clock = FakeClock()
    policy = NoticePolicy(clock, enabled=lambda kind: kind != "model.crashed")
    assert policy.offer(crash()) is None
    assert policy.offer(raised()) is not None
    clock.advance(600)
    assert policy.offer(crash()) is None and policy.due() == [] and policy.next_due() is None


def test_a_crash_storm_gives_one_notice_then_a_summary_when_the_limit_opens():
    clock = FakeClock()
    policy = NoticePolicy(clock)
    shown = []
    for i in range(20):  # 20 crashes, one every half second
        notice = policy.offer(crash("chat" if i % 2 else "embed"))
        if notice is not None:
            shown.append(notice)
        clock.advance(0.5)
    assert [n.title for n in shown] == ["embed crashed"]
    assert policy.due() == []  # not yet: the first was 10 s ago
    assert policy.next_due() == 20.0  # 30 s after the first
    clock.advance(20.0)
    summary = policy.due()
    assert len(summary) == 1
    assert summary[0].title == "19 more crashes"
    assert "in the last 30 s (chat, embed)" in summary[0].body
    assert summary[0].model is None  # two models: a click opens the window
    assert policy.due() == [] and policy.next_due() is None


def test_the_next_notice_of_a_kind_carries_the_count_held_back():
    clock = FakeClock()
    policy = NoticePolicy(clock)
    assert policy.offer(crash("a")) is not None
    clock.advance(5)
    assert policy.offer(crash("b")) is None
    assert policy.offer(crash("b")) is None
    clock.advance(30)
    notice = policy.offer(crash("c"))
    assert notice is not None and notice.title == "c crashed"
    assert notice.body.endswith("… and 2 more crashes before it (b).")
    assert policy.due() == []  # said already


def test_at_most_four_a_minute_over_all_kinds():
    clock = FakeClock()
    policy = NoticePolicy(clock)
    offered = [raised(0), crash(), GpuLost(gpu=1), EmergencyStop(scope="gpu", gpu=0,
                                                                   reason="hot"),
               ModelRestartExhausted(model="chat", attempts=5, message="x")]
    shown = [policy.offer(e) for e in offered]
    assert [n is not None for n in shown] == [True, True, True, True, False]
    assert policy.next_due() == 60.0  # the first of the minute must age out
    clock.advance(59.9)
    assert policy.due() == []
    clock.advance(0.1)
    [summary] = policy.due()
    assert summary.title == "1 more model that gave up" and summary.model == "chat"


def test_each_kind_has_its_own_limit():
    clock = FakeClock()
    policy = NoticePolicy(clock)
    assert policy.offer(crash()) is not None
    assert policy.offer(raised()) is not None  # another kind: not held by the crash's limit
    assert policy.offer(crash("other")) is None
