"""What the tray icon shows: the app's icon with a dot in the health's colour (none when
all is well, amber for a warning, red for an error), and a tooltip with each GPU's VRAM,
temperature and power."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PySide6.QtCore import QByteArray, QRectF, Qt
from PySide6.QtGui import QColor, QIcon, QPainter, QPen, QPixmap
from PySide6.QtSvg import QSvgRenderer

from gpuwarden.engine.alerts import Alert, Health
from gpuwarden.engine.telemetry.snapshot import GpuSample, Snapshot
from gpuwarden.engine.views import ModelRow

ICON = Path(__file__).resolve().parent.parent / "resources" / "gpuwarden.svg"
SIZES = (16, 22, 24, 32, 48, 64)
# Strong colours that read on a dark and on a light panel (each dot has a dark rim).
DOT_COLOURS: dict[Health, str] = {"warning": "#ffb300", "error": "#e53935"}
DOT_SHARE = 0.5  # the dot's diameter, as a share of the icon's side


def health_icon(health: Health) -> QIcon:
    """The app's icon, with a dot at the bottom right for a warning or an error."""
    renderer = QSvgRenderer(QByteArray(ICON.read_bytes()))
    icon = QIcon()
    for size in SIZES:
        pixmap = QPixmap(size, size)
        pixmap.fill(Qt.GlobalColor.transparent)
        painter = QPainter(pixmap)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        renderer.render(painter)
        colour = DOT_COLOURS.get(health)
        if colour is not None:
            side = size * DOT_SHARE
            rim = max(1.0, size / 16)
            painter.setPen(QPen(QColor("#101010"), rim))
            painter.setBrush(QColor(colour))
            painter.drawEllipse(QRectF(size - side - rim / 2, size - side - rim / 2,
                                       side, side))
        painter.end()
        icon.addPixmap(pixmap)
    return icon


def dot_centre(size: int) -> tuple[int, int]:
    """Where the health dot's centre is on a ``size`` px icon (tests read its colour)."""
    at = round(size - size * DOT_SHARE / 2 - max(1.0, size / 16) / 2)
    return at, at


def tooltip(snap: Snapshot | None, rows: Sequence[ModelRow],
            alerts: Sequence[Alert]) -> str:
    """``gpuwarden · 2 of 3 models ready``, a line per GPU, and the worst alert."""
    ready = sum(1 for r in rows if r.state == "ready")
    lines = [f"gpuwarden · {ready} of {len(rows)} models ready" if rows
             else "gpuwarden · no models configured"]
    if snap is not None:
        lines += [_gpu_line(g) for g in snap.gpus]
        if not snap.gpus:
            lines.append(snap.gpu_note or "no GPU")
    if alerts:
        more = f" (+{len(alerts) - 1} more)" if len(alerts) > 1 else ""
        lines.append(f"{alerts[0].title}{more}")
    return "\n".join(lines)


def _gpu_line(g: GpuSample) -> str:
    if not g.available:
        return f"GPU {g.index}: lost"
    used, total = g.memory_used_mib, g.memory_total_mib
    vram = f"{used / 1024:.1f} / {total / 1024:.1f} GiB" if used is not None and \
        total is not None else "VRAM n/a"
    temp = f"{g.temperature_c:.0f} °C" if g.temperature_c is not None else "n/a °C"
    power = f"{g.power_draw_w:.0f} W" if g.power_draw_w is not None else "n/a W"
    return f"GPU {g.index}: {vram} · {temp} · {power}"
