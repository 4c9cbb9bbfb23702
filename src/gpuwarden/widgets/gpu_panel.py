"""The graphs of one GPU: VRAM, temperature, power and utilisation."""

from __future__ import annotations

import numpy as np
from PySide6.QtWidgets import QGridLayout, QLabel, QVBoxLayout, QWidget

from gpuwarden.engine.telemetry.snapshot import (
    GpuSample,
    HistoryFrame,
    fmt,
    fmt_mib,
    gpu_key,
)
from gpuwarden.widgets.plot import FloatArray, LivePlot
from gpuwarden.widgets.theme import Theme

MIB_PER_GIB = 1024.0


def gpu_summary(g: GpuSample) -> str:
    """One line of the current readings, 'n/a' where the GPU does not report a field."""
    if not g.available:
        return f"GPU {g.index} · {g.name} — GPU lost, waiting for it to come back"
    parts = [
        f"VRAM {fmt_mib(g.memory_used_mib)} / {fmt_mib(g.memory_total_mib)}",
        f"{fmt(g.temperature_c, '°C')}",
        f"{fmt(g.power_draw_w)} / {fmt(g.power_limit_w, 'W')}",
        f"util {fmt(g.gpu_util_pct, '%')}",
        f"fan {fmt(g.fan_speed_pct, '%')}",
    ]
    # An idle GPU always reports the gpu_idle reason: that is not throttling.
    throttled = [r for r in g.throttle_reasons or () if r != "gpu_idle"]
    if throttled:
        parts.append("throttled: " + ", ".join(throttled))
    return f"GPU {g.index} · {g.name} — " + " · ".join(parts)


def process_summary(g: GpuSample) -> str:
    """Who holds this GPU's memory, biggest first ('n/a' where the driver won't say)."""
    if g.processes is None:
        return "Processes: n/a" if g.available else ""
    if not g.processes:
        return "Processes: none"
    ordered = sorted(g.processes, key=lambda p: -(p.used_memory_mib or 0.0))
    return "Processes: " + " · ".join(
        f"{p.name} (pid {p.pid}) {fmt_mib(p.used_memory_mib)}" for p in ordered
    )


class GpuPanel(QWidget):
    def __init__(self, index: int, theme: Theme) -> None:
        super().__init__()
        self.index = index
        self.summary = QLabel(f"GPU {index}")
        self.summary.setObjectName("gpuSummary")
        self.processes = QLabel("")
        self.processes.setWordWrap(True)
        self.vram = LivePlot("VRAM", "GiB", theme)
        self.vram.add_curve("used", "used", theme.vram)
        self.vram.add_limit("total", "total", theme.limit)
        self.temperature = LivePlot("Temperature", "°C", theme)
        self.temperature.add_curve("temp", "GPU", theme.temperature)
        self.temperature.add_limit("slowdown", "slowdown", theme.warn)
        self.power = LivePlot("Power", "W", theme)
        self.power.add_curve("draw", "draw", theme.power)
        self.power.add_limit("limit", "enforced limit", theme.limit)
        self.util = LivePlot("Utilisation", "%", theme, y_range=(0, 100))
        self.util.add_curve("gpu", "GPU", theme.util)
        self.util.add_curve("mem", "memory", theme.mem_util)
        grid = QGridLayout()
        for i, plot in enumerate(self.plots()):
            grid.addWidget(plot, i // 2, i % 2)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.summary)
        layout.addWidget(self.processes)
        layout.addLayout(grid)

    def plots(self) -> tuple[LivePlot, ...]:
        return (self.vram, self.temperature, self.power, self.util)

    def set_window(self, seconds: float) -> None:
        for plot in self.plots():
            plot.set_window(seconds)

    def update_sample(self, sample: GpuSample) -> None:
        self.summary.setText(gpu_summary(sample))
        self.processes.setText(process_summary(sample))
        total = _gib(sample.memory_total_mib)
        self.vram.set_limit("total", total)
        self.vram.set_y_ceiling(total)
        self.temperature.set_limit("slowdown", sample.temperature_slowdown_c)
        self.power.set_limit("limit", sample.power_limit_w)

    def update_history(self, frame: HistoryFrame, x: FloatArray) -> None:
        def series(name: str) -> FloatArray | None:
            return frame.get(gpu_key(self.index, name))

        used = series("memory_used_mib")
        self.vram.set_curve("used", x, None if used is None else used / MIB_PER_GIB)
        self.temperature.set_curve("temp", x, series("temperature_c"))
        self.power.set_curve("draw", x, series("power_draw_w"))
        self.util.set_curve("gpu", x, series("gpu_util_pct"))
        self.util.set_curve("mem", x, series("memory_util_pct"))


def _gib(mib: float | None) -> float | None:
    return None if mib is None else mib / MIB_PER_GIB


def seconds_ago(frame: HistoryFrame) -> FloatArray:
    """x values: seconds before the newest sample (0 = newest)."""
    if len(frame) == 0:
        return np.empty(0)
    return np.asarray(frame.t - frame.t[-1], dtype=np.float64)
