"""A restarted gpuwarden adopts the llama-servers it left running; a second gpuwarden
never starts a second copy of anything."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from gguf_factory import write_tiny_llama
from gpuwarden.engine.facade import Engine, ServicePaths
from gpuwarden.engine.lifecycle.config import Config, ModelConfig
from gpuwarden.engine.runtime import SimulateSpec, TelemetryOptions
from gpuwarden.engine.supervisor.registry import ServerRecord, ServerRegistry
from supervision_rig import EventWaiter


@pytest.fixture
def paths(tmp_path: Path) -> ServicePaths:
    return ServicePaths(journal=None, hints=None, logs=tmp_path / "logs",
                        registry=tmp_path / "servers.json")


@pytest.fixture
def config(tmp_path: Path, llama_server_bin: Path, monkeypatch) -> Config:
    monkeypatch.setenv("GPUWARDEN_LLAMA_SERVER", str(llama_server_bin))
    model = ModelConfig(name="tiny", backend="llama-server",
                        path=write_tiny_llama(tmp_path / "tiny.gguf"), placement="cpu",
                        context_size=256, args=("--threads", "1", "--parallel", "1"))
    return Config(models=(model,))


def start(config: Config, paths: ServicePaths) -> tuple[Engine, EventWaiter]:
    engine = Engine.build(config, TelemetryOptions(simulate=SimulateSpec()), paths)
    waiter = EventWaiter(engine)
    engine.start()
    return engine, waiter


def pid_of(engine: Engine, model: str) -> int | None:
    row = engine.model(model)
    return row.pids[0] if row is not None and row.pids else None


def servers_of(model_path: Path) -> list[int]:
    return [p.pid for p in psutil.process_iter(["cmdline"])
            if p.info["cmdline"] and str(model_path) in p.info["cmdline"]]


def test_a_server_left_running_is_adopted_not_started_twice(config, paths):
    first, events = start(config, paths)
    first.load("tiny")
    events.wait_for("model.ready", "tiny")
    pid = pid_of(first, "tiny")
    first.close(leave_running=True)
    assert psutil.pid_exists(pid)

    second, events = start(config, paths)
    try:
        assert [e.to_dict()["reason"] for e in second.events_since(0)
                if e.type == "model.loading"] == ["adopted"]
        ready = events.wait_for("model.ready", "tiny")
        assert ready.to_dict()["placement"] == "cpu"
        assert pid_of(second, "tiny") == pid
        assert second.load("tiny").message == "tiny is already cpu"
        assert servers_of(config.models[0].path) == [pid]
    finally:
        second.close()
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert ServerRegistry(paths.registry).records() == {}


def test_an_adopted_server_that_dies_is_a_crash_and_restarts(config, paths):
    first, events = start(config, paths)
    first.load("tiny")
    events.wait_for("model.ready", "tiny")
    pid = pid_of(first, "tiny")
    first.close(leave_running=True)
    second, events = start(config, paths)
    try:
        events.wait_for("model.ready", "tiny")
        psutil.Process(pid).kill()
        crashed = events.wait_for("model.crashed", "tiny").to_dict()
        assert crashed["exit_code"] is None  # not our child: the code is not known
        events.wait_for("model.restart_scheduled", "tiny")
    finally:
        second.close()


def test_records_of_dead_servers_are_cleaned_up(config, paths):
    registry = ServerRegistry(paths.registry)
    registry.load()
    registry.add(ServerRecord(model="tiny", pid=2**22 - 1, port=9, api_key="k",
                              executable=sys.executable, cmdline=(sys.executable,),
                              started_ts=1.0))
    service, _ = start(config, paths)
    try:
        assert service.model("tiny").device == "unloaded"
        assert ServerRegistry(paths.registry).records() == {}
    finally:
        service.close()


def test_a_second_gpuwarden_refuses_to_start(tmp_path: Path):
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "data")}
    first = subprocess.Popen(
        [sys.executable, "-m", "gpuwarden", "headless", "--simulate", "--events", "-"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        lock = tmp_path / "data" / "gpuwarden" / "gpuwarden.lock"
        from supervision_rig import wait_until

        assert wait_until(lambda: lock.exists() and lock.read_text().strip() == str(first.pid),
                          timeout=30)
        second = subprocess.run(
            [sys.executable, "-m", "gpuwarden", "headless", "--simulate", "--duration", "1"],
            capture_output=True, text=True, env=env, timeout=60)
        assert second.returncode == 3
        assert f"already running (pid {first.pid})" in second.stderr
    finally:
        first.terminate()
        first.communicate(timeout=30)
    assert first.returncode == 0


def test_an_unwritable_data_folder_is_a_clear_error(tmp_path: Path):
    blocker = tmp_path / "data"
    blocker.write_text("a file where the data folder should be")
    env = {**os.environ, "XDG_DATA_HOME": str(blocker)}
    proc = subprocess.run(
        [sys.executable, "-m", "gpuwarden", "headless", "--simulate", "--duration", "1"],
        capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 1
    assert "cannot create" in proc.stderr and "gpuwarden.lock" in proc.stderr
    assert "Traceback" not in proc.stderr
