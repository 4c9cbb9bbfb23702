"""Plain-text rendering of a snapshot for the terminal (`gpuwarden status`)."""

from __future__ import annotations

import time

from gpuwarden import __version__
from gpuwarden.engine.telemetry.snapshot import GpuSample, HostSample, Snapshot, fmt, fmt_mib

_GPU_COLUMNS = ("GPU", "Name", "VRAM used / total", "Util", "Temp (slowdown)", "Power / limit",
                "Fan", "SM / mem clock", "Throttle")


def render_status(snap: Snapshot) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(snap.ts))
    lines = [f"gpuwarden {__version__} — snapshot at {stamp}", ""]
    if snap.gpu_note:
        lines += [snap.gpu_note, ""]
    if snap.gpus:
        lines += table([_GPU_COLUMNS, *(_gpu_row(g) for g in snap.gpus)])
        lines += _processes(snap.gpus)
        lines.append("")
    lines += _host(snap.host)
    return "\n".join(lines)


def _gpu_row(g: GpuSample) -> tuple[str, ...]:
    if not g.available:
        return (str(g.index), g.name, "GPU lost — waiting for it to come back", "", "", "", "",
                "", "")
    vram = f"{fmt_mib(g.memory_used_mib)} / {fmt_mib(g.memory_total_mib)}"
    temp = f"{fmt(g.temperature_c, '°C')} ({fmt(g.temperature_slowdown_c, '°C')})"
    power = f"{fmt(g.power_draw_w)} / {fmt(g.power_limit_w, 'W')}"
    clocks = f"{fmt(g.sm_clock_mhz)} / {fmt(g.mem_clock_mhz, 'MHz')}"
    throttle = "n/a" if g.throttle_reasons is None else (", ".join(g.throttle_reasons) or "none")
    util = f"{fmt(g.gpu_util_pct, '%')}"
    return (str(g.index), g.name, vram, util, temp, power, fmt(g.fan_speed_pct, "%"), clocks,
            throttle)


def _processes(gpus: tuple[GpuSample, ...]) -> list[str]:
    lines: list[str] = []
    for g in gpus:
        for p in g.processes or ():
            lines.append(f"  GPU {g.index}  pid {p.pid:>7}  {fmt_mib(p.used_memory_mib):>10}  "
                         f"{p.kind:<8}  {p.name}")
    return ["", "Processes on the GPU(s):", *lines] if lines else []


def _host(h: HostSample) -> list[str]:
    lines = [
        f"Host  CPU {fmt(h.cpu_pct, '%')}   RAM {fmt_mib(h.ram_used_mib)} / "
        f"{fmt_mib(h.ram_total_mib)}   swap {fmt_mib(h.swap_used_mib)} / "
        f"{fmt_mib(h.swap_total_mib)}   CPU temp {fmt(h.cpu_temp_c, '°C')}"
    ]
    if h.per_core_pct:
        lines.append("      cores " + " ".join(f"{c:.0f}%" for c in h.per_core_pct))
    for d in h.disks:
        lines.append(f"Disk  {d.path}: {fmt(d.free_gib, 'GiB', 1)} free of "
                     f"{fmt(d.total_gib, 'GiB', 1)}")
    return lines


def table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
            for r in rows]
