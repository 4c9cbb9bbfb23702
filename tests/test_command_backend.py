"""The ``command`` backend: any program, supervised like llama-server (real processes)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import psutil
import pytest

from gpuwarden.engine.clock import FakeClock
from gpuwarden.engine.facade import Engine, ServicePaths
from gpuwarden.engine.lifecycle.config import Config, ModelConfig, RestartConfig, parse_config
from gpuwarden.engine.runtime import SimulateSpec, TelemetryOptions
from gpuwarden.engine.supervisor.command import CommandBackend
from gpuwarden.engine.supervisor.launch import free_port
from helpers import drive
from standin_server import STANDIN
from supervision_rig import EventWaiter, SupervisionRig, wait_until

# Writes what it was given (cwd, env) to argv[1], starts a grandchild, writes its pid to
# argv[2], then waits to be stopped.
RECORDER = """
import json, os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
with open(sys.argv[2], "w") as f:
    f.write(str(child.pid))
with open(sys.argv[1], "w") as f:
    json.dump({"cwd": os.getcwd(), "env": dict(os.environ)}, f)
time.sleep(600)
"""


def problems_of(entry: str) -> list[str]:
    _, problems = parse_config(f'[[models]]\nname = "c"\nbackend = "command"\n{entry}\n')
    return [str(p) for p in problems]


@pytest.mark.parametrize(("entry", "said"), [
    ("", "<config>:1: model 'c': missing required key 'command'"),
    ('command = "python main.py"', "<config>:4: model 'c': 'command' must be a non-empty "
                                   "array of strings, one per argument (no shell)"),
    ("command = []", "<config>:4: model 'c': 'command' must be a non-empty array"),
    ('command = ["x"]\nplacement = 20', "<config>:5: model 'c': backend \"command\" runs a "
                                        "program whole"),
    ('command = ["x"]\nhealth_url = "http://example.com/health"',
     "<config>:5: model 'c': 'health_url' must be http://127.0.0.1:PORT/path"),
    ('command = ["x"]\nenv = {A = 1}', "<config>:5: model 'c': 'env' must be a table of strings"),
])
def test_a_bad_command_entry_is_refused_with_its_line(entry, said):
    found = problems_of(entry)
    assert len(found) == 1 and found[0].startswith(said), found


def test_a_command_key_on_another_backend_is_refused():
    _, problems = parse_config('[[models]]\nname = "m"\nbackend = "simulated"\n'
                               'command = ["x"]\n')
    assert [str(p) for p in problems] == [
        "<config>:4: model 'm': 'command' is only for backend = \"command\""]


def test_a_good_entry_needs_no_model_file_and_runs_on_the_gpu_by_default(tmp_path):
    config, problems = parse_config(
        '[[models]]\nname = "comfy"\nbackend = "command"\n'
        'command = ["python", "main.py", "--port", "8188"]\n'
        'health_url = "http://127.0.0.1:8188/system_stats"\nenv = {HF_HOME = "/tmp/hf"}\n'
        'cwd = "."\n', base_dir=tmp_path)
    assert problems == []
    comfy = config.model("comfy")
    assert comfy is not None
    assert comfy.command == ("python", "main.py", "--port", "8188")
    assert (comfy.placement, comfy.env, comfy.cwd) == ("gpu", (("HF_HOME", "/tmp/hf"),),
                                                         tmp_path / ".")
    assert comfy.eviction == "pressure"  # it reports no use: "idle" would end it unused


def standin_model(tmp_path: Path, name: str = "svc", **kw: object) -> ModelConfig:
    spec = tmp_path / "spec.json"
    spec.write_text("{}")
    port = free_port()
    return ModelConfig(name, "command", placement=kw.pop("placement", "cpu"),  # type: ignore[arg-type]
                       command=(sys.executable, str(STANDIN), "--model", str(spec),
                                "--port", str(port)),
                       health_url=f"http://127.0.0.1:{port}/health", **kw)  # type: ignore[arg-type]


def test_a_command_with_a_health_url_goes_loading_then_ready_through_the_engine(tmp_path):
    clock = FakeClock()
    config = Config(models=(standin_model(tmp_path, placement="gpu", vram_mib=500.0),))
    engine = Engine.build(config, TelemetryOptions(simulate=SimulateSpec()),
                          ServicePaths(None, None, logs=tmp_path / "logs"), clock=clock)
    waiter = EventWaiter(engine)
    engine.start(watch_config=False)
    try:
        drive(engine, clock, 1.0)
        assert engine.load("svc").ok
        waiter.wait_for("model.ready", "svc", timeout=20)
        assert waiter.types("svc")[:2] == ["model.loading", "model.ready"]
        row = engine.model("svc")
        assert row is not None and row.device == "gpu"
    finally:
        engine.unload("svc")
        waiter.wait_for("model.unloaded", "svc", timeout=20)
        engine.close()


@pytest.fixture
def rigs():
    made: list[SupervisionRig] = []
    yield made
    for rig in made:
        rig.close()


def rig_for(tmp_path: Path, model: ModelConfig, rigs: list[SupervisionRig]) -> SupervisionRig:
    rig = SupervisionRig(Path("unused"), tmp_path / "logs", model, backend_cls=CommandBackend,
                         restart=RestartConfig(backoff_base_s=0.2, backoff_cap_s=1.0))
    rigs.append(rig)
    return rig


def test_kill_9_is_a_crash_and_it_is_restarted_after_a_backoff(tmp_path, rigs):
    rig = rig_for(tmp_path, standin_model(tmp_path), rigs)
    rig.manager.load("svc")
    rig.waiter.wait_for("model.ready", "svc", timeout=20)
    first = rig.backend.pid("svc")
    assert first is not None
    psutil.Process(first).kill()
    crashed = rig.waiter.wait_for("model.crashed", "svc").to_dict()
    assert crashed["kind"] in ("crash", "oom_killed")  # oom_killed: no cgroup counter here
    scheduled = rig.waiter.wait_for("model.restart_scheduled", "svc").to_dict()
    assert scheduled["delay_s"] > 0
    rig.waiter.wait_for("model.ready", "svc", count=2, timeout=20)
    assert rig.backend.pid("svc") not in (None, first)


def recorder_model(tmp_path: Path, placement: str) -> ModelConfig:
    workdir = tmp_path / "work"
    workdir.mkdir()
    return ModelConfig("rec", "command", placement=placement,  # type: ignore[arg-type]
                       command=(sys.executable, "-c", RECORDER, str(tmp_path / "seen.json"),
                                str(tmp_path / "child.pid")),
                       env=(("GW_TEST", "yes"), ("CUDA_VISIBLE_DEVICES", "0")),
                       cwd=workdir, ready_after_s=0.0)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_env_cwd_and_cpu_placement_reach_it_and_unload_ends_its_whole_group(tmp_path, rigs):
    rig = rig_for(tmp_path, recorder_model(tmp_path, "cpu"), rigs)
    rig.manager.load("rec")
    rig.waiter.wait_for("model.ready", "rec", timeout=20)
    seen_file, pid_file = tmp_path / "seen.json", tmp_path / "child.pid"
    assert wait_until(lambda: seen_file.exists() and seen_file.stat().st_size > 0, 20)
    seen = json.loads(seen_file.read_text())
    assert seen["cwd"] == str(tmp_path / "work")
    assert seen["env"]["GW_TEST"] == "yes"
    assert seen["env"]["CUDA_VISIBLE_DEVICES"] == ""  # placement wins over the config's env
    grandchild = int(pid_file.read_text())
    # its VRAM counts as the model's (descendants are read again every 5 s)
    assert wait_until(lambda: grandchild in rig.backend.pids("rec"), 10)
    rig.manager.unload("rec")
    unloaded = rig.waiter.wait_for("model.unloaded", "rec", timeout=20)
    assert "model.crashed" not in rig.waiter.types("rec"), unloaded
    assert wait_until(lambda: gone(grandchild), 10), "the grandchild outlived the unload"
    assert rig.backend.pids("rec") == ()


@pytest.mark.parametrize("leave_running", [False, True])
def test_closing_stops_a_command_and_waits_for_it_even_with_leave_running(tmp_path,
                                                                          leave_running):
    """Only llama-servers can be left for the next gpuwarden to adopt: a command is
    stopped (and waited for) on close whatever --leave-running says, never orphaned."""
    clock = FakeClock()
    engine = Engine.build(Config(models=(standin_model(tmp_path),)),
                          TelemetryOptions(simulate=SimulateSpec()),
                          ServicePaths(None, None, logs=tmp_path / "logs"), clock=clock)
    waiter = EventWaiter(engine)
    engine.start(watch_config=False)
    drive(engine, clock, 1.0)
    assert engine.load("svc").ok
    waiter.wait_for("model.ready", "svc", timeout=20)
    row = engine.model("svc")
    assert row is not None and row.pids
    pid = row.pids[0]
    engine.close(leave_running=leave_running)
    assert gone(pid)  # close returned only once it had ended
    assert "model.unloaded" in waiter.types("svc")
