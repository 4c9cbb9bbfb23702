"""The emergency stop end to end, in the real `gpuwarden headless`: a simulated GPU goes
over its hard temperature limit and that GPU's models are stopped in the same sample."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from test_config_reload import Lines, entry

INTERVAL_S = 0.25
SCENARIO = """\
# The simulated card slows down at 88 C: that is its hard limit (docs/config.md, [safety]).
[[step]]
at = 3
gpu = 0
action = "temperature"
celsius = 92
"""


def test_a_gpu_over_its_hard_limit_stops_its_models_and_only_those(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(entry("gpu-a", placement="gpu", gpu=0)
                      + entry("gpu-b", placement="gpu", gpu=0)
                      + entry("on-cpu", placement="cpu"))
    scenario = tmp_path / "hot.toml"
    scenario.write_text(SCENARIO)
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "data")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpuwarden", "--interval", str(INTERVAL_S), "headless",
         "--config", str(config), "--simulate", str(scenario), "--events", "-"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines = Lines(proc)
    try:
        for name in ("gpu-a", "gpu-b", "on-cpu"):
            lines.wait("model.ready", timeout=10, model=name)
        verdict = lines.wait("safety.verdict", timeout=10, scope="gpu", gpu=0, kind="abort")
        stop = lines.wait("safety.emergency_stop", timeout=5, gpu=0)
        unloaded = [lines.wait("model.unloaded", timeout=5, model=name)
                    for name in ("gpu-a", "gpu-b")]
        time.sleep(4 * INTERVAL_S)  # a few more samples: nothing else is stopped or restarted
        while not lines._queue.empty():
            lines.seen.append(lines._queue.get())
        after = [e for e in lines.seen if e["seq"] > stop["seq"]]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
        lines.drain()
    assert proc.stderr is not None
    assert proc.returncode == 0, proc.stderr.read()

    step = next(e for e in lines.seen if e["type"] == "scenario.step")
    assert step["action"] == "temperature"
    assert verdict["reading"] > verdict["limit"] == 88.0
    assert "hard limit 88 C" in verdict["reason"] and "card slowdown" in verdict["reason"]
    assert verdict["ts"] >= step["ts"]

    stops = [e for e in lines.seen if e["type"] == "safety.emergency_stop"]
    assert stops == [stop]
    assert stop["scope"] == "gpu" and sorted(stop["models"]) == ["gpu-a", "gpu-b"]
    for event in unloaded:
        assert event["reason"] == "safety"
        # The same sample as the stop: before the next one, nothing else emitted between.
        assert abs(event["ts"] - stop["ts"]) < INTERVAL_S / 2
    seqs = sorted(e["seq"] for e in (verdict, stop, *unloaded))
    assert seqs == list(range(seqs[0], seqs[0] + 4))

    # The CPU model was never touched: loaded until the shutdown.
    assert not [e for e in after if e.get("model") == "on-cpu"]
    assert not [e for e in after if e["type"] in ("model.loading", "model.ready")]
    stopped = {e["model"]: e["reason"] for e in lines.seen if e["type"] == "model.unloaded"}
    assert stopped == {"gpu-a": "safety", "gpu-b": "safety", "on-cpu": "shutdown"}
    host_aborts = [e for e in lines.seen if e["type"] == "safety.verdict"
                   and e["scope"] == "host" and e["kind"] == "abort"]
    assert host_aborts == []
