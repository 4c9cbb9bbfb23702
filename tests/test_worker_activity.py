"""A worker's request counters read by the engine exactly as llama-server's /metrics."""

from __future__ import annotations

from gpuwarden.engine.supervisor.http import parse_metrics
from gpuwarden.engine.supervisor.watch import ActivityTracker
from gpuwarden.workers.activity import RequestCounter


def test_a_request_in_flight_is_busy_and_a_served_one_is_use() -> None:
    counter, tracker = RequestCounter(), ActivityTracker()
    assert tracker.feed(parse_metrics(counter.metrics_text())) == (False, False)
    with counter.request():
        assert tracker.feed(parse_metrics(counter.metrics_text())) == (False, True)
    assert tracker.feed(parse_metrics(counter.metrics_text())) == (True, False)
    assert tracker.feed(parse_metrics(counter.metrics_text())) == (False, False)


def test_tokens_are_counted_in_llama_servers_names() -> None:
    counter = RequestCounter()
    counter.tokens(prompt=7, predicted=3)
    metrics = parse_metrics(counter.metrics_text())
    assert metrics["prompt_tokens_total"] == 7
    assert metrics["tokens_predicted_total"] == 3
