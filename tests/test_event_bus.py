"""The event bus: delivery in seq order, and never while a deferred block is open."""

from __future__ import annotations

import threading

from gpuwarden.engine.events import Event, EventBus, ScenarioStep


def step(n: int) -> Event:
    return ScenarioStep(action="test", detail=str(n))


def test_an_open_deferred_block_on_one_thread_is_not_delivered_by_another():
    bus = EventBus()
    got: list[str] = []
    bus.subscribe(lambda e: got.append(e.to_dict()["detail"]))
    inside, other_done = threading.Event(), threading.Event()

    def holder() -> None:
        with bus.deferred():
            bus.publish(step(1))
            inside.set()
            other_done.wait(5)
            assert got == ["2"]  # the other thread's flush left ours alone
        assert got == ["2", "1"]

    thread = threading.Thread(target=holder)
    thread.start()
    inside.wait(5)
    bus.publish(step(2))  # delivers at once
    other_done.set()
    thread.join(5)
    assert got == ["2", "1"]
    assert [e.seq for e in bus.since(0)] == [1, 2]  # stamped in the order delivered


def test_a_listener_that_publishes_has_its_event_delivered_after_the_current_one():
    bus = EventBus()
    seen: list[tuple[str, str]] = []

    def first(e: Event) -> None:
        seen.append(("first", e.to_dict()["detail"]))
        if e.to_dict()["detail"] == "1":
            bus.publish(step(2))

    bus.subscribe(first)
    bus.subscribe(lambda e: seen.append(("second", e.to_dict()["detail"])))
    bus.publish(step(1))
    assert seen == [("first", "1"), ("second", "1"), ("first", "2"), ("second", "2")]
