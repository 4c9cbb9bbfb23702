"""The lifecycle end to end in the real `gpuwarden headless`, in real time, on two
simulated GPUs: on GPU 0 a model that pressure moved to the CPU goes back once the other
program has gone; on GPU 1 pressure is relieved by what models really hold (one holds
three times its estimate), not by the estimates. About 40 s: relief spares models used in
the last 30 s, so the pressure starts after that."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from test_config_reload import Lines, entry

SCENARIO = """
[simulation]
gpus = 2
[[simulation.gpu]]
memory_total_mib = 24576
[[simulation.gpu]]
memory_total_mib = 24576

[[simulation.model]]
name = "greedy"
vram_scale = 3.0

[[step]]
at = 33
action = "vram_grab"
owner = "game"
mib = 15000

[[step]]
at = 33
gpu = 1
action = "vram_grab"
owner = "render"
mib = 11900

[[step]]
at = 36
action = "vram_free"
owner = "game"
"""


def test_pressure_moves_a_model_off_and_back_and_counts_what_models_really_hold(
        tmp_path: Path):
    config = tmp_path / "config.toml"
    config.write_text(
        "[pressure]\nreturn_wait_s = 1\n\n"
        + entry("m", vram_mib=8000, placement="gpu", eviction="pressure")
        + entry("greedy", vram_mib=3000, placement="gpu", gpu=1, eviction="pressure",
                priority=-1)
        + entry("honest", vram_mib=3000, placement="gpu", gpu=1, eviction="pressure"))
    scenario = tmp_path / "scenario.toml"
    scenario.write_text(SCENARIO)
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "data")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpuwarden", "--interval", "0.25", "headless", "--config",
         str(config), "--simulate", str(scenario), "--events", "-"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines = Lines(proc)
    try:
        ready = lines.wait("model.ready", model="greedy")
        assert (ready["vram_est_mib"], ready["vram_mib"]) == (3000.0, 9000.0)
        assert lines.wait("model.offloaded", timeout=60, model="m")["reason"] == "pressure"
        back = lines.wait("model.loading", timeout=30, model="m", reason="restore")
        assert back["placement"] == "gpu"
        lines.wait("model.ready", model="m", placement="gpu")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        lines.drain()
    assert proc.returncode == 0
    moved = [(e["model"], e["freed_vram_mib"]) for e in lines.seen
             if e["type"] == "model.offloaded"]
    assert ("greedy", 9000.0) in moved and not any(name == "honest" for name, _ in moved)
