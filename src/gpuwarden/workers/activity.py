"""Request counters of a worker, served at /metrics in llama-server's Prometheus names
(``llamacpp:requests_processing``, ``llamacpp:prompt_tokens_total``, ...), so the engine
tracks a worker's use exactly as it tracks llama-server's."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class RequestCounter:
    """Thread-safe counts of requests served and in flight, and tokens in and out."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.processing = 0
        self.served = 0
        self.prompt_tokens = 0
        self.predicted_tokens = 0

    @contextmanager
    def request(self) -> Iterator[None]:
        """Counts one request in flight for the ``with`` block, served after it."""
        with self._lock:
            self.processing += 1
        try:
            yield
        finally:
            with self._lock:
                self.processing -= 1
                self.served += 1

    def tokens(self, prompt: int, predicted: int) -> None:
        with self._lock:
            self.prompt_tokens += prompt
            self.predicted_tokens += predicted

    def metrics_text(self) -> str:
        """The counters as llama-server writes them (``n_decode_total`` counts requests
        served, so a request that produced no token still counts as use)."""
        with self._lock:
            values = {"prompt_tokens_total": self.prompt_tokens,
                      "tokens_predicted_total": self.predicted_tokens,
                      "n_decode_total": self.served,
                      "requests_processing": self.processing,
                      "requests_deferred": 0}
        kinds = {"requests_processing": "gauge", "requests_deferred": "gauge"}
        lines = []
        for name, value in values.items():
            lines.append(f"# TYPE llamacpp:{name} {kinds.get(name, 'counter')}")
            lines.append(f"llamacpp:{name} {value}")
        return "\n".join(lines) + "\n"
