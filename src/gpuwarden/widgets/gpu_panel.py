"""The graphs of one GPU: VRAM, temperature, power and utilisation, with event marks,
the pressure threshold, and a greyed-out look while the GPU is lost."""

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
from gpuwarden.widgets.plot import FloatArray, LivePlot, PlotMarks
from gpuwarden.widgets.plot_marks import MarkLevel
from gpuwarden.widgets.theme import Theme

MIB_PER_GIB = 1024.0
TEMPERATURE_FALLBACK_C = 100.0  # the temperature axis before any reading


def fmt_mib_of(used: float | None, total: float | None) -> str:
    """'used / total' in one unit: GiB (one decimal) when the total is 1 GiB or more."""
    if total is None or abs(total) < MIB_PER_GIB:
        return f"{fmt_mib(used)} / {fmt_mib(total)}"
    return f"{fmt(_gib(used), digits=1)} / {fmt(_gib(total), 'GiB', 1)}"


def gpu_summary(g: GpuSample) -> str:
    """One line of the current readings, 'n/a' where the GPU does not report a field."""
    if not g.available:
        return f"GPU {g.index} · {g.name} — GPU lost, waiting for it to come back"
    parts = [
        f"VRAM {fmt_mib_of(g.memory_used_mib, g.memory_total_mib)}",
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
        self.vram = LivePlot("VRAM", "GiB", theme, digits=1)
        self.vram.add_curve("used", "used", theme.vram)
        self.vram.add_limit("total", "total", theme.limit, dashed=False)
        # Beside the total's label, not on it: the two lines are close.
        self.vram.add_limit("pressure", "pressure", theme.warn, label_at=0.12)
        self.temperature = LivePlot("Temperature", "°C", theme,
                                    fallback_max=TEMPERATURE_FALLBACK_C)
        self.temperature.add_curve("temp", "GPU", theme.temperature)
        self.temperature.add_limit("slowdown", "slowdown", theme.warn)
        self.power = LivePlot("Power", "W", theme)
        self.power.add_curve("draw", "draw", theme.power)
        self.power.add_limit("limit", "enforced limit", theme.limit, dashed=False)
        self.util = LivePlot("Utilisation", "%", theme, y_max=100.0)
        self.util.add_curve("gpu", "GPU", theme.util)
        self.util.add_curve("mem", "memory", theme.mem_util)
        self._total_gib: float | None = None
        self._pressure_pct: float | None = None
        self._lost = False
        self._marks = PlotMarks(self.plots())
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
        self.set_lost(not sample.available)
        if not sample.available:
            return  # keep the last known total and limits: the axes stay put
        self._total_gib = _gib(sample.memory_total_mib)
        self.vram.set_limit("total", self._total_gib)
        self.vram.set_y_ceiling(self._total_gib)
        self._draw_pressure_line()
        self.temperature.set_limit("slowdown", sample.temperature_slowdown_c)
        self.power.set_limit("limit", sample.power_limit_w)

    def set_lost(self, lost: bool) -> None:
        """Grey the graphs out while the GPU does not answer; their ranges stay fixed."""
        if lost != self._lost:
            self._lost = lost
            for plot in self.plots():
                plot.set_dimmed(lost)

    @property
    def lost(self) -> bool:
        return self._lost

    def set_pressure_threshold(self, percent: float | None) -> None:
        """A dashed line where VRAM pressure begins, at ``percent`` % of the total."""
        self._pressure_pct = percent
        self._draw_pressure_line()

    def _draw_pressure_line(self) -> None:
        pct, total = self._pressure_pct, self._total_gib
        if pct is None or total is None:
            self.vram.set_limit("pressure", None)
            return
        self.vram.set_limit("pressure", total * pct / 100.0, label=f"pressure {pct:g} %")

    def add_marker(self, ts: float, text: str, level: MarkLevel) -> None:
        """Mark an event at ``ts`` (unix seconds) on all four graphs; hovering the mark
        shows ``text``."""
        self._marks.add(ts, text, level)

    def update_history(self, frame: HistoryFrame, x: FloatArray) -> None:
        def series(name: str) -> FloatArray | None:
            return frame.get(gpu_key(self.index, name))

        used = series("memory_used_mib")
        self.vram.set_curve("used", x, None if used is None else used / MIB_PER_GIB)
        self.temperature.set_curve("temp", x, series("temperature_c"))
        self.power.set_curve("draw", x, series("power_draw_w"))
        self.util.set_curve("gpu", x, series("gpu_util_pct"))
        self.util.set_curve("mem", x, series("memory_util_pct"))
        if len(frame):
            self._marks.follow(float(frame.t[-1]))


def _gib(mib: float | None) -> float | None:
    return None if mib is None else mib / MIB_PER_GIB


def seconds_ago(frame: HistoryFrame) -> FloatArray:
    """x values: seconds before the newest sample (0 = newest)."""
    if len(frame) == 0:
        return np.empty(0)
    return np.asarray(frame.t - frame.t[-1], dtype=np.float64)
