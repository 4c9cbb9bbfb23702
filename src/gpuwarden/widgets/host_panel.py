"""Host graphs: CPU use and RAM (with swap), plus disk free of the watched folders, with
event marks (RAM, CPU and disk pressure, the host's safety verdicts)."""

from __future__ import annotations

from PySide6.QtWidgets import QGridLayout, QLabel, QVBoxLayout, QWidget

from gpuwarden.engine.telemetry.snapshot import HistoryFrame, HostSample, fmt, host_key
from gpuwarden.widgets.gpu_panel import MIB_PER_GIB, fmt_mib_of
from gpuwarden.widgets.plot import FloatArray, LivePlot, PlotMarks
from gpuwarden.widgets.plot_marks import MarkLevel
from gpuwarden.widgets.theme import Theme


def host_summary(h: HostSample) -> str:
    parts = [
        f"CPU {fmt(h.cpu_pct, '%')}",
        f"RAM {fmt_mib_of(h.ram_used_mib, h.ram_total_mib)}",
        f"swap {fmt_mib_of(h.swap_used_mib, h.swap_total_mib)}",
        f"CPU temp {fmt(h.cpu_temp_c, '°C')}",
    ]
    parts += [f"disk {d.path}: {fmt(d.free_gib, 'GiB', 1)} free" for d in h.disks]
    return "Host — " + " · ".join(parts)


class HostPanel(QWidget):
    def __init__(self, theme: Theme) -> None:
        super().__init__()
        self.summary = QLabel("Host")
        self.summary.setWordWrap(True)
        self.cpu = LivePlot("CPU", "%", theme, y_max=100.0)
        self.cpu.add_curve("cpu", "all cores", theme.cpu)
        self.ram = LivePlot("RAM", "GiB", theme, digits=1)
        self.ram.add_curve("used", "used", theme.ram)
        self.ram.add_curve("swap", "swap used", theme.swap)
        self.ram.add_limit("total", "total", theme.limit, dashed=False)
        self._marks = PlotMarks(self.plots())
        grid = QGridLayout()
        grid.addWidget(self.cpu, 0, 0)
        grid.addWidget(self.ram, 0, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.summary)
        layout.addLayout(grid)

    def plots(self) -> tuple[LivePlot, ...]:
        return (self.cpu, self.ram)

    def set_window(self, seconds: float) -> None:
        for plot in self.plots():
            plot.set_window(seconds)

    def update_sample(self, sample: HostSample) -> None:
        self.summary.setText(host_summary(sample))
        total = None if sample.ram_total_mib is None else sample.ram_total_mib / MIB_PER_GIB
        self.ram.set_limit("total", total)
        self.ram.set_y_ceiling(total)

    def add_marker(self, ts: float, text: str, level: MarkLevel) -> None:
        """Mark a host event at ``ts`` (unix seconds) on both graphs; hovering the mark
        shows ``text``."""
        self._marks.add(ts, text, level)

    def update_history(self, frame: HistoryFrame, x: FloatArray) -> None:
        self.cpu.set_curve("cpu", x, frame.get(host_key("cpu_pct")))
        for curve, name in (("used", "ram_used_mib"), ("swap", "swap_used_mib")):
            values = frame.get(host_key(name))
            self.ram.set_curve(curve, x, None if values is None else values / MIB_PER_GIB)
        if len(frame):
            self._marks.follow(float(frame.t[-1]))
