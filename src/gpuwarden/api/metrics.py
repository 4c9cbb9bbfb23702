"""``/metrics`` in Prometheus' text format (prometheus_client): per-GPU gauges from the
last sample, the host's, one set per model (state, measured and estimated VRAM), and
counters of what the engine did, counted from its events since gpuwarden started."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from gpuwarden.engine.events import Event
from gpuwarden.engine.facade import Engine
from gpuwarden.engine.views import RowState

MIB = 1024 * 1024
STATES: tuple[RowState, ...] = ("unloaded", "waiting", "loading", "ready", "stopping",
                                "crashed", "restarting", "gave_up")
_GPU_GAUGES = (  # name, help, field, scale
    ("gpuwarden_gpu_memory_used_bytes", "VRAM in use", "memory_used_mib", MIB),
    ("gpuwarden_gpu_memory_total_bytes", "VRAM on the card", "memory_total_mib", MIB),
    ("gpuwarden_gpu_utilization_ratio", "GPU utilisation, 0..1", "gpu_util_pct", 0.01),
    ("gpuwarden_gpu_temperature_celsius", "GPU temperature", "temperature_c", 1),
    ("gpuwarden_gpu_power_watts", "power draw", "power_draw_w", 1),
    ("gpuwarden_gpu_power_limit_watts", "enforced power limit", "power_limit_w", 1),
)
# counter name -> (help, event type, the event field that labels it)
_COUNTED = {
    "gpuwarden_model_loads": ("loads started", "model.loading", "reason"),
    "gpuwarden_model_evictions": ("models unloaded or moved by the engine",
                                  "model.unloaded", "reason"),
    "gpuwarden_model_crashes": ("crashes by kind", "model.crashed", "kind"),
    "gpuwarden_model_restarts": ("restarts scheduled after a crash",
                                 "model.restart_scheduled", None),
    "gpuwarden_pressure_alerts": ("pressure alerts by kind", "pressure.alert", "kind"),
    "gpuwarden_safety_verdicts": ("safety verdict changes by kind", "safety.verdict", "kind"),
}
_BY_TYPE = {etype: (name, field) for name, (_, etype, field) in _COUNTED.items()}


class MetricsBook(Collector):
    """Counts the engine's events (from the first kept one on) and renders everything."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, str]] = Counter()
        self._seen = 0
        engine.subscribe(self.count)
        for event in engine.events_since(0):
            self.count(event)
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(self)

    def count(self, event: Event) -> None:
        found = _BY_TYPE.get(event.TYPE)
        if found is None:
            return
        name, field = found
        label = str(getattr(event, field, "")) if field else ""
        with self._lock:
            if event.seq <= self._seen:
                return  # the backlog and the subscription overlap
            self._seen = event.seq
            self._counts[(name, label)] += 1

    def close(self) -> None:
        self._engine.unsubscribe(self.count)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self._registry), CONTENT_TYPE_LATEST

    def collect(self) -> Iterator[Any]:
        yield from self._gpus()
        yield from self._models()
        yield from self._counters()

    def _gpus(self) -> Iterator[GaugeMetricFamily]:
        snap = self._engine.snapshot()
        gpus = snap.gpus if snap is not None else ()
        for name, text, field, scale in _GPU_GAUGES:
            family = GaugeMetricFamily(name, text, labels=["gpu", "name"])
            for g in gpus:
                value = getattr(g, field)
                if g.available and value is not None:
                    family.add_metric([str(g.index), g.name], value * scale)
            yield family
        host = snap.host if snap is not None else None
        family = GaugeMetricFamily("gpuwarden_host_memory_used_bytes", "host RAM in use")
        if host is not None and host.ram_used_mib is not None:
            family.add_metric([], host.ram_used_mib * MIB)
        yield family
        family = GaugeMetricFamily("gpuwarden_host_cpu_utilization_ratio", "CPU, 0..1")
        if host is not None and host.cpu_pct is not None:
            family.add_metric([], host.cpu_pct / 100)
        yield family

    def _models(self) -> Iterator[GaugeMetricFamily]:
        rows = self._engine.models()
        state = GaugeMetricFamily("gpuwarden_model_state", "the state it is in (one series "
                                  "per model, value 1; states: " + ", ".join(STATES) + ")",
                                  labels=["model", "backend", "state"])
        measured = GaugeMetricFamily("gpuwarden_model_vram_bytes",
                                     "VRAM its processes hold, as measured",
                                     labels=["model"])
        estimated = GaugeMetricFamily("gpuwarden_model_vram_estimated_bytes",
                                      "VRAM its load was planned with", labels=["model"])
        for row in rows:
            state.add_metric([row.name, row.backend, row.state], 1.0)
            if row.vram_mib is not None:
                measured.add_metric([row.name], row.vram_mib * MIB)
            estimated.add_metric([row.name], row.vram_est_mib * MIB)
        yield from (state, measured, estimated)

    def _counters(self) -> Iterator[CounterMetricFamily]:
        with self._lock:
            counts = dict(self._counts)
        for name, (text, _etype, field) in _COUNTED.items():
            family = CounterMetricFamily(name, text, labels=[field] if field else [])
            for (counted, label), value in sorted(counts.items()):
                if counted == name:
                    family.add_metric([label] if field else [], value)
            yield family
