"""One live time-series plot: curves updated in place, limit lines, a 'seconds ago' axis."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pyqtgraph as pg
from PySide6.QtCore import Qt

from gpuwarden.widgets.theme import Theme

FloatArray = npt.NDArray[np.float64]

DOWNSAMPLE_FACTOR = 0.5

WINDOWS_S: tuple[tuple[str, float], ...] = (("1 min", 60.0), ("10 min", 600.0), ("1 h", 3600.0))


# Tick spacings that read well on a clock: seconds, then whole minutes.
_NICE_SPACINGS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600)


def nice_spacing(span_s: float, max_ticks: int = 7) -> float:
    """The smallest clock-friendly tick spacing that keeps at most ``max_ticks`` ticks."""
    for spacing in _NICE_SPACINGS_S:
        if span_s / spacing <= max_ticks:
            return float(spacing)
    return float(_NICE_SPACINGS_S[-1])


def format_ago(seconds_ago: float, spacing: float) -> str:
    """Axis label for a time ``seconds_ago`` (<= 0) before the newest sample."""
    ago = -seconds_ago
    if abs(ago) < 0.5:
        return "now"
    if spacing < 60:
        return f"-{ago:.0f} s"
    return f"-{ago / 60:.0f} min"


class SecondsAgoAxis(pg.AxisItem):
    """Bottom axis in 'seconds ago' with ticks on whole seconds or minutes."""

    def tickSpacing(self, minVal: float, maxVal: float, size: float) -> list[tuple[float, float]]:
        major = nice_spacing(maxVal - minVal)
        return [(major, 0.0), (major / 2, 0.0)]

    def tickStrings(self, values: Sequence[float], scale: float, spacing: float) -> list[str]:
        return [format_ago(v, spacing) for v in values]


class LivePlot(pg.PlotWidget):
    """A small plot for one quantity over time.

    Curves and limit lines are created once and then only get new data, so a
    redraw is cheap even with an hour of history (clip-to-view + peak downsampling).
    """

    def __init__(self, title: str, unit: str, theme: Theme,
                 y_range: tuple[float, float] | None = None) -> None:
        super().__init__(background=theme.background,
                         axisItems={"bottom": SecondsAgoAxis(orientation="bottom")})
        self._theme = theme
        self._curves: dict[str, pg.PlotDataItem] = {}
        self._limits: dict[str, pg.InfiniteLine] = {}
        item = self.getPlotItem()
        item.setTitle(title, color=theme.foreground, size="10pt")
        item.setLabel("left", unit, color=theme.foreground)
        item.setClipToView(True)
        item.setDownsampling(auto=True, mode="peak")
        # No grid: pyqtgraph paints grid lines through the axes, ~9 ms a plot a frame.
        item.hideButtons()
        item.setMenuEnabled(False)
        item.setMouseEnabled(x=False, y=False)
        for axis in ("left", "bottom"):
            item.getAxis(axis).setTextPen(theme.foreground)
            item.getAxis(axis).setPen(theme.foreground)
        self._legend = item.addLegend(offset=(8, 8), labelTextColor=theme.foreground)
        legend_bg = pg.mkColor(theme.background)
        legend_bg.setAlpha(200)
        self._legend.setBrush(pg.mkBrush(legend_bg))
        if y_range is not None:
            item.setYRange(*y_range, padding=0.02)
        else:
            item.enableAutoRange(axis="y")
        self.set_window(60.0)

    def add_curve(self, key: str, label: str, color: str) -> None:
        # No fill under the curve: filling a 1000-point polygon costs ~5 ms a plot.
        curve = self.plot([], [], pen=pg.mkPen(color=color, width=2), name=label,
                          connect="finite")
        # About one point per two pixels before peak downsampling (which keeps the min and
        # max of each bin): an hour of samples then costs what a minute does.
        curve.opts["autoDownsampleFactor"] = DOWNSAMPLE_FACTOR
        self._curves[key] = curve

    def add_limit(self, key: str, label: str, color: str) -> None:
        line = pg.InfiniteLine(
            angle=0, movable=False,
            pen=pg.mkPen(color=color, width=1.5, style=Qt.PenStyle.DashLine),
            label=label, labelOpts={"position": 0.98, "color": color, "anchors": [(1, 0), (1, 0)]},
        )
        line.setVisible(False)
        self.addItem(line, ignoreBounds=False)
        self._limits[key] = line

    def set_curve(self, key: str, x: FloatArray, y: FloatArray | None) -> None:
        curve = self._curves[key]
        if y is None or x.shape != y.shape:
            curve.setData([], [])
            return
        curve.setData(x, y, connect="finite")

    def set_limit(self, key: str, value: float | None) -> None:
        line = self._limits[key]
        if value is None or np.isnan(value):
            line.setVisible(False)
            return
        line.setValue(value)
        line.setVisible(True)

    def set_window(self, seconds: float) -> None:
        self.getPlotItem().setXRange(-seconds, 0, padding=0)

    def set_y_ceiling(self, value: float | None) -> None:
        """Fix the y range to 0..value (plus headroom), e.g. memory used vs total."""
        item = self.getPlotItem()
        if value is None or np.isnan(value) or value <= 0:
            item.enableAutoRange(axis="y")
            return
        item.setYRange(0, value * 1.08, padding=0)

    def curve_data(self, key: str) -> tuple[FloatArray, FloatArray]:
        """What a curve currently shows (for tests and the benchmark)."""
        curve = self._curves[key]
        x, y = curve.xData, curve.yData
        if x is None or y is None:
            return np.empty(0), np.empty(0)
        return np.asarray(x, dtype=float), np.asarray(y, dtype=float)

    def limit_value(self, key: str) -> float | None:
        line = self._limits[key]
        return float(line.value()) if line.isVisible() else None
