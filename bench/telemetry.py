"""Telemetry benchmark (not a test: run it by hand on a quiet machine).

Prints:
  1. CPU time of one full sample (simulated GPU + host via psutil) per tick;
  2. UI time to redraw all graphs of one GPU with a full hour of history, without and
     with 50 event marks;
  3. the app's idle CPU use and RSS after running `gpuwarden --simulate` at 1 Hz.

    QT_QPA_PLATFORM=offscreen python bench/telemetry.py [--idle-seconds 60]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psutil

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from gpuwarden.engine.clock import FakeClock
from gpuwarden.engine.telemetry.host import PsutilHostProbe
from gpuwarden.engine.telemetry.sampler import Sampler
from gpuwarden.engine.telemetry.simulated import SimulatedProbe

HOUR_S = 3600


def sample_cost(ticks: int) -> dict[str, float]:
    """CPU seconds per tick, simulated GPU + real host probe, fake clock at 1 s."""
    clock = FakeClock()
    sampler = Sampler(SimulatedProbe(count=1), PsutilHostProbe([Path.home()]), clock=clock)
    for _ in range(50):  # warm caches
        sampler.tick()
        clock.advance(1.0)
    per_tick = []
    for _ in range(ticks):
        start = time.process_time()
        sampler.tick()
        per_tick.append(time.process_time() - start)
        clock.advance(1.0)
    total = sum(per_tick)
    return {"mean_ms": 1000 * total / ticks, "p95_ms": 1000 * _pct(per_tick, 95)}


def redraw_cost(repeats: int, marks: int = 0) -> dict[str, float]:
    """Wall time to hand a full hour to one GPU's four graphs and repaint them, with
    ``marks`` event marks spread over the hour (all visible, every level)."""
    from PySide6.QtWidgets import QApplication

    from gpuwarden.widgets.gpu_panel import GpuPanel, seconds_ago
    from gpuwarden.widgets.theme import DARK

    app = QApplication.instance() or QApplication([])
    clock = FakeClock()
    probe = SimulatedProbe(count=1, seed=1)
    probe.gpu(0).set_load(60)
    sampler = Sampler(probe, PsutilHostProbe(), clock=clock)
    for _ in range(HOUR_S):
        sampler.tick()
        clock.advance(1.0)
    frame = sampler.history.frame()
    x = seconds_ago(frame)
    panel = GpuPanel(0, DARK)
    panel.resize(1400, 700)
    panel.set_window(HOUR_S)
    panel.show()
    app.processEvents()
    last = sampler.last
    assert last is not None
    levels = ("info", "warning", "error")
    for i in range(marks):
        ts = float(frame.t[0]) + (i + 0.5) * HOUR_S / marks
        panel.add_marker(ts, f"event {i}", levels[i % 3])
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        panel.update_sample(last.gpus[0])
        panel.update_history(frame, x)
        app.processEvents()  # runs the scene updates pyqtgraph queued
        panel.repaint()  # and paints everything now, synchronously
        times.append(time.perf_counter() - start)
    shown = len(panel.vram.marks.merged())
    panel.close()
    return {"points": float(len(frame)), "median_ms": 1000 * statistics.median(times),
            "max_ms": 1000 * max(times), "marks_drawn": float(shown)}


def idle_cost(seconds: float, settle_s: float = 5.0,
              args: tuple[str, ...] = ("--simulate",)) -> dict[str, float]:
    """Run the real app (offscreen) with ``args`` (a simulated GPU) at 1 Hz and measure
    it from outside."""
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    cmd = [sys.executable, "-m", "gpuwarden", *args, "--interval", "1",
           "--quit-after", str(settle_s + seconds + 5)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        ps = psutil.Process(proc.pid)
        time.sleep(settle_s)  # start-up (imports, first paint) is not idle
        c0, t0 = ps.cpu_times(), time.monotonic()
        time.sleep(seconds)
        c1, t1 = ps.cpu_times(), time.monotonic()
        rss = ps.memory_info().rss
    finally:
        proc.terminate()
        proc.wait(30)
    cpu = (c1.user + c1.system) - (c0.user + c0.system)
    return {"seconds": t1 - t0, "cpu_pct_of_one_core": 100 * cpu / (t1 - t0),
            "rss_mib": rss / 2**20}


def _pct(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    args = parser.parse_args()
    s = sample_cost(args.ticks)
    print(f"sample (simulated GPU + host), CPU per tick: mean {s['mean_ms']:.3f} ms, "
          f"p95 {s['p95_ms']:.3f} ms   [target < 1 ms]")
    r = redraw_cost(args.repeats)
    print(f"redraw one GPU's 4 graphs, {r['points']:.0f} points each: median "
          f"{r['median_ms']:.2f} ms, max {r['max_ms']:.2f} ms   [target < 10 ms]")
    m = redraw_cost(args.repeats, marks=50)
    print(f"the same with 50 event marks ({m['marks_drawn']:.0f} drawn): median "
          f"{m['median_ms']:.2f} ms, max {m['max_ms']:.2f} ms   "
          "[target: < 1 ms more than without]")
    i = idle_cost(args.idle_seconds)
    print(f"idle app (--simulate, 1 Hz) over {i['seconds']:.0f} s: CPU "
          f"{i['cpu_pct_of_one_core']:.2f} % of one core, RSS {i['rss_mib']:.0f} MiB   "
          "[targets < 2 %, < 250 MB]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
