"""Decisions about a server's health, as small pure objects with an injected clock:
when it is ready, when it has taken too long, when it hangs, when it was used."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class WatchSettings:
    ready_poll_s: float = 0.25  # /health while loading
    hang_poll_s: float = 5.0  # /health once ready
    hang_timeout_s: float = 2.0  # one probe's patience
    hang_failures: int = 3  # probes failed in a row = hung
    metrics_poll_s: float = 1.0  # request counters, at the sample rate
    stop_grace_s: float = 10.0  # SIGTERM -> SIGKILL


@dataclass
class HangDetector:
    """Hung = ``failures`` health probes in a row without an answer while the process lives."""

    failures: int
    _missed: int = 0

    def feed(self, answered: bool) -> bool:
        self._missed = 0 if answered else self._missed + 1
        return self._missed >= self.failures


@dataclass
class ActivityTracker:
    """Turns llama-server's /metrics counters into 'used since last time' and 'busy now',
    so requests from any client (not only through gpuwarden) keep a model alive."""

    _last: dict[str, float] = field(default_factory=dict)

    COUNTERS = ("prompt_tokens_total", "tokens_predicted_total", "n_decode_total")

    def feed(self, metrics: dict[str, float]) -> tuple[bool, bool]:
        """(used since the last reading, serving a request right now)."""
        used = any(metrics.get(k, 0.0) > self._last.get(k, 0.0) for k in self.COUNTERS)
        self._last = {k: metrics[k] for k in self.COUNTERS if k in metrics}
        busy = metrics.get("requests_processing", 0.0) > 0 or \
            metrics.get("requests_deferred", 0.0) > 0
        return used, busy
