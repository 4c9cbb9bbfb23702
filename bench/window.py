"""The control panel at scale (not a test: run it by hand on a quiet machine).

50 configured models (20 of them loaded, spread over the GPUs) and 4 simulated GPUs,
sampled at 1 Hz:

  1. the real app (`gpuwarden --simulate 4 --config <that config>`, offscreen), measured
     from outside: CPU while idle, as a share of one core, and its RSS;
  2. the real window in this process, driven by the real bridge and engine thread: the
     UI thread's CPU time per sample (every slot the sample triggers and Qt's repaint of
     what changed), median and worst; and, for scale, a forced repaint of the whole
     window.

    QT_QPA_PLATFORM=offscreen python bench/window.py [--seconds 60]
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from telemetry import idle_cost

MODELS, LOADED, GPUS = 50, 20, 4


def config_text(models: int = MODELS, loaded: int = LOADED, gpus: int = GPUS) -> str:
    """Simulated models of 1 GiB; the first ``loaded`` start with the app."""
    entries = []
    for i in range(models):
        entries.append(
            f'[[models]]\nname = "model-{i:02d}"\nbackend = "simulated"\n'
            f"gpu = {i % gpus}\nvram_mib = 1024\nload_time_s = 0.2\n"
            f"autostart = {'true' if i < loaded else 'false'}\n")
    return "\n".join(entries)


def redraw_cost(config: Path, seconds: float) -> dict[str, float]:
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from gpuwarden.app.bridge import EngineBridge
    from gpuwarden.app.window import MainWindow
    from gpuwarden.engine.facade import Engine, ServicePaths
    from gpuwarden.engine.lifecycle.config import load_config
    from gpuwarden.engine.runtime import SimulateSpec, TelemetryOptions
    from gpuwarden.widgets.theme import DARK

    app = QApplication.instance() or QApplication([])
    cfg, _ = load_config(config)
    engine = Engine.build(cfg, TelemetryOptions(simulate=SimulateSpec(count=GPUS),
                                                interval_s=1.0),
                          ServicePaths(None, None), config_path=config)
    bridge = EngineBridge(engine)
    window = MainWindow(bridge, DARK)
    window.resize(1600, 1000)
    window.show()
    marks: list[float] = []  # the UI thread's CPU clock at each sample
    full: list[float] = []

    def on_frame(_: object) -> None:
        marks.append(time.thread_time())
        if len(marks) % 5 == 0:  # now and then, for scale: every widget painted again
            start = time.thread_time()
            window.repaint()
            full.append(time.thread_time() - start)

    bridge.history_ready.connect(on_frame)
    bridge.start()
    QTimer.singleShot(round((seconds + 5) * 1000), app.quit)
    app.exec()
    bridge.stop()
    window.close()
    loaded = sum(r.state == "ready" for r in bridge.rows)
    # The UI thread's CPU from one sample to the next: every slot the sample triggers and
    # Qt's repaint of what changed (the forced repaints taken out). The first samples
    # build the tabs and load the models.
    ticks = [b - a for a, b in itertools.pairwise(marks)]
    for i, cost in zip(range(4, len(ticks), 5), full, strict=False):
        ticks[i] -= cost
    steady = ticks[5:]
    return {"ticks": float(len(steady)), "median_ms": 1000 * statistics.median(steady),
            "max_ms": 1000 * max(steady), "loaded": float(loaded),
            "full_median_ms": 1000 * statistics.median(full)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "gpuwarden.toml"
        config.write_text(config_text())
        r = redraw_cost(config, min(args.seconds, 30.0))
        print(f"UI thread per sample ({MODELS} models, {r['loaded']:.0f} loaded, {GPUS} GPUs, "
              f"{r['ticks']:.0f} samples): median {r['median_ms']:.1f} ms, worst "
              f"{r['max_ms']:.1f} ms   [target < 10 ms]; a forced repaint of the whole "
              f"window: median {r['full_median_ms']:.1f} ms")
        i = idle_cost(args.seconds, settle_s=10.0,  # start-up and the autostart loads
                      args=("--simulate", str(GPUS), "--config", str(config)))
        print(f"the app idle at 1 Hz over {i['seconds']:.0f} s: CPU "
              f"{i['cpu_pct_of_one_core']:.2f} % of one core, RSS {i['rss_mib']:.0f} MiB   "
              "[target < 2 %]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
