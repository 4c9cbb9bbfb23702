"""End to end: the engine service with a scenario, on a fake clock and as the real CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from gpuwarden.engine.clock import FakeClock
from gpuwarden.engine.events import Event
from gpuwarden.engine.facade import Engine, ServicePaths
from gpuwarden.engine.journal import read_journal
from gpuwarden.engine.lifecycle.config import load_config
from gpuwarden.engine.runtime import SimulateSpec, TelemetryOptions
from helpers import drive

CONFIG = """
[pressure]
vram_enter_pct = 90
vram_clear_pct = 80

[[models]]
name = "chat"
backend = "simulated"
placement = "gpu"
vram_mib = 6000
load_time_s = 1
eviction = "never"
autostart = true

[[models]]
name = "stale"
backend = "simulated"
placement = "gpu"
vram_mib = 8000
load_time_s = 1
eviction = "pressure"
autostart = true
"""

SCENARIO = """
[simulation]
gpus = 1
[[simulation.gpu]]
memory_total_mib = 24576

[[step]]
at = 60
action = "vram_grab"
owner = "blender"
mib = 9000

[[step]]
at = 70
action = "crash"
model = "chat"
exit_code = 137
"""


def write(tmp_path: Path) -> tuple[Path, Path]:
    config, scenario = tmp_path / "config.toml", tmp_path / "scenario.toml"
    config.write_text(CONFIG)
    scenario.write_text(SCENARIO)
    return config, scenario


def test_pressure_eviction_and_crash_restart_end_to_end(tmp_path: Path):
    config_path, scenario_path = write(tmp_path)
    config, problems = load_config(config_path)
    assert problems == []
    clock = FakeClock()
    engine = Engine.build(
        config, TelemetryOptions(simulate=SimulateSpec(scenario=scenario_path)),
        ServicePaths(journal=tmp_path / "events.jsonl", hints=tmp_path / "hints.json"),
        clock=clock)
    events: list[Event] = []
    engine.subscribe(events.append)
    engine.start()
    drive(engine, clock, 90.0)  # 90 s, sampled once a second
    engine.close()
    types = [e.type for e in events]

    raised = next(i for i, e in enumerate(events)
                  if e.type == "pressure.raised" and e.to_dict()["kind"] == "vram")
    relief = types.index("model.offloaded")  # warm, and the backend can run it on the CPU
    assert events[relief].to_dict() | {"ts": 0, "seq": 0} == {
        "ts": 0, "seq": 0, "type": "model.offloaded", "model": "stale", "reason": "pressure",
        "freed_vram_mib": 8000.0}  # the pinned one stays
    assert events[raised].ts == events[relief].ts  # relief inside the same sample
    assert any(e.type == "pressure.cleared" and e.to_dict()["kind"] == "vram"
               for e in events[relief:])

    crashed = types.index("model.crashed")
    assert events[crashed].to_dict()["kind"] == "oom_killed"
    scheduled = events[types.index("model.restart_scheduled")]
    assert scheduled.to_dict()["delay_s"] == 1.0
    ready_again = [e for e in events[crashed:] if e.type == "model.ready"]
    assert ready_again and ready_again[0].to_dict()["model"] == "chat"
    assert ready_again[0].ts - events[crashed].ts <= 1.0 + 1.0 + 1.0  # backoff + load + a tick

    journal = [e["type"] for e in read_journal(tmp_path / "events.jsonl")]
    assert journal == types  # every event is in the journal, in order
    assert types[-1] == "model.unloaded"  # clean shutdown at the end


def test_headless_cli_prints_events_and_stops_cleanly_on_sigterm(tmp_path: Path):
    config_path, scenario_path = write(tmp_path)
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "data")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpuwarden", "headless", "--config", str(config_path),
         "--simulate", str(scenario_path), "--events", "-"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    seen: list[dict[str, object]] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(json.loads(line))
        if sum(1 for e in seen if e["type"] == "model.ready") == 2:
            break
    proc.send_signal(signal.SIGTERM)
    rest, err = proc.communicate(timeout=30)
    seen += [json.loads(line) for line in rest.splitlines()]
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    shutdown = [e["model"] for e in seen
                if e["type"] == "model.unloaded" and e["reason"] == "shutdown"]
    assert sorted(shutdown) == ["chat", "stale"]
    assert (tmp_path / "data" / "gpuwarden" / "events.jsonl").exists()


def test_headless_refuses_a_missing_config_file(tmp_path: Path):
    proc = subprocess.run([sys.executable, "-m", "gpuwarden", "headless", "--config",
                           str(tmp_path / "nope.toml"), "--duration", "1"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "nope.toml: no such config file" in proc.stderr


def test_headless_reports_bad_entries_and_runs_the_good_ones(tmp_path: Path):
    config = tmp_path / "config.toml"
    config.write_text('[[models]]\nname = "ok"\nbackend = "simulated"\nautostart = true\n'
                      'load_time_s = 0\n\n'
                      '[[models]]\nname = "bad"\nbackend = "simulated"\nidle_timeout_s = -5\n')
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "data")}
    proc = subprocess.run([sys.executable, "-m", "gpuwarden", "headless", "--config",
                           str(config), "--simulate", "--duration", "1.5", "--events", "-"],
                          capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "config.toml:10" in proc.stderr and "idle_timeout_s" in proc.stderr
    events = [json.loads(x) for x in proc.stdout.splitlines()]
    assert [e["model"] for e in events if e["type"] == "model.ready"] == ["ok"]
    problems = [e["message"] for e in events if e["type"] == "config.problem"]
    assert any("idle_timeout_s" in m for m in problems)  # also in the event stream


def test_cpu_models_book_simulated_ram_and_ram_pressure_unloads_the_least_recent(tmp_path):
    import psutil

    from gpuwarden.engine.lifecycle.config import Config, ModelConfig

    vm = psutil.virtual_memory()
    free_mib = vm.available / 2**20
    total_mib = vm.total / 2**20
    share = 0.55 * free_mib  # two of these push RAM use over 90 %
    models = tuple(ModelConfig(name=n, backend="simulated", placement="cpu", ram_mib=share,
                               load_time_s=0.0, eviction="pressure") for n in ("old", "new"))
    clock = FakeClock()
    engine = Engine.build(Config(models=models), TelemetryOptions(simulate=SimulateSpec(count=1)),
                          ServicePaths(None, None), clock=clock)
    events: list[Event] = []
    engine.subscribe(events.append)
    engine.start()
    engine.load("old")
    drive(engine, clock, 40.0)
    engine.load("new")
    drive(engine, clock, 1.0)  # RAM pressure is seen and relieved in the next sample
    host = engine.snapshot().host
    assert host.ram_used_mib is not None and host.ram_used_mib > 0.9 * total_mib
    engine.close()
    relief = [e.to_dict() for e in events if e.type == "model.unloaded"]
    assert relief[0]["model"] == "old" and relief[0]["reason"] == "pressure"
    assert relief[0]["freed_ram_mib"] == share
    assert any(e.type == "pressure.raised" and e.to_dict()["kind"] == "ram" for e in events)
