"""Restart latency benchmark, end to end (not a test: run it by hand on a quiet machine).

Kills a real llama-server (a tiny generated GGUF model on the CPU) with SIGKILL and times
kill -> model.ready as the driver's reader sees it, for several sampling intervals and
restart backoffs (varied so that a wait for the next sample cannot hide behind a backoff
that happens to match it), in the two drivers of the engine:

  headless  the real `gpuwarden --interval I headless --config CFG --events -` as a
            subprocess; the time is when its JSON event line arrives on this side;
  window    an Engine under the window's EngineBridge (its own QThread, offscreen Qt);
            the time is when event_raised reaches the UI thread.

Each kill lands at a random moment of the sampling interval, after the server has been
ready longer than healthy_reset_s, so every kill is restart attempt 1 (delay = backoff).
Prints, per setting, kill -> model.ready minus the backoff (median, max) and, to tell
scheduling from the relaunch, kill -> model.loading minus the backoff.

    GPUWARDEN_LLAMA_SERVER=... QT_QPA_PLATFORM=offscreen python bench/restart.py \\
        [--kills 10] [--intervals 0.25 1 2.5] [--backoffs 0.001 0.3 1.0] \\
        [--drivers headless window]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from gguf_factory import write_tiny_llama
from gpuwarden.engine.supervisor.locate import find_llama_server

HEALTHY_RESET_S = 0.2
TARGET_MS = 100.0


class Stamps:
    """When each event arrived (time.monotonic), and a way to wait for the next one.
    ``pump``: run the caller's event loop for up to that many seconds (or until woken)
    while waiting; None: block on a condition (the events arrive on another thread)."""

    def __init__(self, pump: Callable[[float], None] | None = None) -> None:
        self.seen: list[tuple[str, float]] = []
        self._cond = threading.Condition()
        self._pump = pump

    def add(self, type_: str) -> None:
        stamp = time.monotonic()
        with self._cond:
            self.seen.append((type_, stamp))
            self._cond.notify_all()

    def find(self, type_: str, after: float) -> float | None:
        with self._cond:
            return next((t for k, t in self.seen if k == type_ and t >= after), None)

    def next(self, type_: str, after: float, timeout: float = 60.0) -> float:
        end = time.monotonic() + timeout
        while (stamp := self.find(type_, after)) is None:
            left = end - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"no {type_} within {timeout} s")
            if self._pump is not None:
                self._pump(min(left, 0.1))
            else:
                with self._cond:
                    self._cond.wait(left)
        return stamp


@dataclass
class Result:
    driver: str
    interval_s: float
    backoff_s: float
    ready_ms: list[float]  # kill -> model.ready, minus the backoff
    loading_ms: list[float]  # kill -> model.loading (the relaunch began), minus the backoff


def write_config(folder: Path, model: Path, backoff_s: float) -> Path:
    path = folder / "config.toml"
    path.write_text(f"""\
[restart]
backoff_base_s = {backoff_s}
healthy_reset_s = {HEALTHY_RESET_S}

[[models]]
name = "tiny"
backend = "llama-server"
path = "{model}"
placement = "cpu"
context_size = 256
threads = 1
args = ["--parallel", "1"]
autostart = true
""", encoding="utf-8")
    return path


def server_pid(parent: int, model: Path) -> int:
    """The llama-server under ``parent`` that serves ``model``."""
    for child in psutil.Process(parent).children(recursive=True):
        try:
            if str(model) in " ".join(child.cmdline()) and child.status() != "zombie":
                return child.pid
        except psutil.NoSuchProcess:
            continue
    raise RuntimeError(f"no llama-server for {model} under pid {parent}")


def kill_loop(stamps: Stamps, pid_of: Callable[[], int], interval_s: float, backoff_s: float,
              kills: int, sleep: Callable[[float], None], rng: random.Random,
              driver: str) -> Result:
    stamps.next("model.ready", 0.0)
    result = Result(driver, interval_s, backoff_s, [], [])
    for _ in range(kills):
        # healthy past healthy_reset_s (attempt 1 again), then a random phase of the interval
        sleep(HEALTHY_RESET_S + 0.1 + rng.random() * interval_s)
        pid = pid_of()
        killed = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        ready = stamps.next("model.ready", killed)
        loading = stamps.next("model.loading", killed)
        result.ready_ms.append(1000 * (ready - killed - backoff_s))
        result.loading_ms.append(1000 * (loading - killed - backoff_s))
    return result


def start_headless(folder: Path, config: Path, *options: str
                   ) -> tuple[subprocess.Popen[str], Stamps]:
    """The real `gpuwarden [OPTIONS] headless --config CONFIG --events -` with its data in
    ``folder``, and the arrival time of each event line it prints."""
    env = dict(os.environ, XDG_DATA_HOME=str(folder / "data"),
               XDG_CONFIG_HOME=str(folder / "config"), XDG_STATE_HOME=str(folder / "state"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpuwarden", *options, "headless", "--config", str(config),
         "--events", "-"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)
    stamps = Stamps()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            stamps.add(json.loads(line).get("type", ""))

    threading.Thread(target=read, daemon=True).start()
    return proc, stamps


def stop_headless(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_headless(tmp: Path, model: Path, interval_s: float, backoff_s: float, kills: int,
                 rng: random.Random) -> Result:
    folder = Path(tempfile.mkdtemp(prefix="headless-", dir=tmp))
    config = write_config(folder, model, backoff_s)
    proc, stamps = start_headless(folder, config, "--interval", str(interval_s))
    try:
        return kill_loop(stamps, lambda: server_pid(proc.pid, model), interval_s, backoff_s,
                         kills, time.sleep, rng, "headless")
    finally:
        stop_headless(proc)


def run_window(tmp: Path, model: Path, interval_s: float, backoff_s: float, kills: int,
               rng: random.Random) -> Result:
    from PySide6.QtCore import QEventLoop, QTimer
    from PySide6.QtWidgets import QApplication

    from gpuwarden.app.bridge import EngineBridge
    from gpuwarden.engine.facade import Engine, ServicePaths
    from gpuwarden.engine.lifecycle.config import load_config
    from gpuwarden.engine.runtime import SimulateSpec, TelemetryOptions

    app = QApplication.instance() or QApplication(sys.argv[:1])
    folder = Path(tempfile.mkdtemp(prefix="window-", dir=tmp))
    config, problems = load_config(write_config(folder, model, backoff_s))
    assert not problems, problems
    engine = Engine.build(config, TelemetryOptions(simulate=SimulateSpec(),
                                                   interval_s=interval_s),
                          ServicePaths(journal=folder / "events.jsonl",
                                       hints=folder / "hints.json", logs=folder / "logs"))
    bridge = EngineBridge(engine)
    waiting = QEventLoop()
    guard = QTimer()
    guard.setSingleShot(True)
    guard.timeout.connect(waiting.quit)

    def pump(seconds: float) -> None:  # until an event arrives or the time is up
        guard.start(round(1000 * seconds))
        waiting.exec()
        guard.stop()

    def spin(seconds: float) -> None:  # the UI thread's sleep: its event loop keeps going
        loop = QEventLoop()
        QTimer.singleShot(round(1000 * seconds), loop.quit)
        loop.exec()

    stamps = Stamps(pump)
    bridge.event_raised.connect(lambda event: (stamps.add(event.type), waiting.quit()))
    bridge.start()
    try:
        return kill_loop(stamps, lambda: server_pid(os.getpid(), model), interval_s,
                         backoff_s, kills, spin, rng, "window")
    finally:
        bridge.stop()
        app.processEvents()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--intervals", type=float, nargs="+", default=[0.25, 1.0, 2.5])
    parser.add_argument("--backoffs", type=float, nargs="+", default=[0.001, 0.3, 1.0])
    parser.add_argument("--drivers", nargs="+", choices=("headless", "window"),
                        default=["headless", "window"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    binary_env = os.environ.get("GPUWARDEN_LLAMA_SERVER")
    binary = find_llama_server(Path(binary_env) if binary_env else None)
    os.environ["GPUWARDEN_LLAMA_SERVER"] = str(binary)
    tmp = Path(tempfile.mkdtemp(prefix="gpuwarden-bench-"))
    model = write_tiny_llama(tmp / "tiny.gguf")
    rng = random.Random(args.seed)
    runners = {"headless": run_headless, "window": run_window}
    print(f"llama-server {binary}; {args.kills} SIGKILLs per setting; kill -> model.ready "
          f"minus backoff   [target < {TARGET_MS:.0f} ms at every setting]")
    print(f"{'driver':<9} {'interval':>8} {'backoff':>8}  {'ready-backoff median':>20} "
          f"{'max':>8}  {'loading-backoff median':>22} {'max':>8}")
    misses = 0
    for driver in args.drivers:
        for interval in args.intervals:
            for backoff in args.backoffs:
                r = runners[driver](tmp, model, interval, backoff, args.kills, rng)
                worst = max(r.ready_ms)
                misses += worst >= TARGET_MS
                print(f"{driver:<9} {interval:>7g}s {backoff:>7g}s  "
                      f"{statistics.median(r.ready_ms):>17.1f} ms {worst:>5.1f} ms  "
                      f"{statistics.median(r.loading_ms):>19.1f} ms "
                      f"{max(r.loading_ms):>5.1f} ms" + ("   MISSED" if worst >= TARGET_MS
                                                         else ""), flush=True)
    print(f"{misses} setting(s) with a kill -> ready over backoff + {TARGET_MS:.0f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
