"""Supervision mechanisms the real CPU-only binary cannot show: a CUDA out-of-memory at
load (and the downgrade it triggers), a server that ignores SIGTERM, one that never
becomes ready, and the llama-cpp-python server kind."""

from __future__ import annotations

import json
import os
from pathlib import Path

import psutil
import pytest

from gpuwarden.engine.lifecycle.config import ModelConfig, RestartConfig
from gpuwarden.engine.supervisor.llama_cpp_python import LlamaCppPythonBackend
from gpuwarden.engine.supervisor.oom import OomWatch
from standin_server import write_executable
from supervision_rig import FAST, SupervisionRig


@pytest.fixture
def standin(tmp_path: Path) -> Path:
    """An executable that llama-server's argv can be handed to."""
    return write_executable(tmp_path)


def spec_file(tmp_path: Path, **spec: object) -> Path:
    path = tmp_path / "model.json"
    path.write_text(json.dumps(spec))
    return path


def model(name: str, path: Path, **kw: object) -> ModelConfig:
    return ModelConfig(name=name, backend=kw.pop("backend", "llama-server"), path=path,  # type: ignore[arg-type]
                       **kw)  # type: ignore[arg-type]


@pytest.fixture
def rigs():
    made: list[SupervisionRig] = []
    yield made
    for rig in made:
        rig.close()


def test_gpu_oom_at_load_downgrades_gpu_to_partial_until_it_fits(tmp_path, standin, rigs):
    path = spec_file(tmp_path, oom_above_layers=8)
    rig = SupervisionRig(standin, tmp_path / "logs",
                         model("big", path, placement="gpu", layers=32),
                         restart=RestartConfig(backoff_base_s=0.05, backoff_cap_s=0.2))
    rigs.append(rig)
    rig.manager.load("big")
    ready = rig.waiter.wait_for("model.ready", "big", timeout=30).to_dict()
    crashes = [e.to_dict() for e in rig.waiter.events if e.type == "model.crashed"]
    assert [c["kind"] for c in crashes] == ["gpu_oom", "gpu_oom"]
    assert any("cudaMalloc failed" in line for line in crashes[0]["log_tail"])
    placements = [e.to_dict()["placement"] for e in rig.waiter.events
                  if e.type == "model.restart_scheduled"]
    assert placements == ["16", "8"]
    assert ready["placement"] == "partial (8 layers on GPU)"
    cmdline = psutil.Process(rig.backend.pid("big")).cmdline()
    assert cmdline[cmdline.index("--n-gpu-layers") + 1] == "8"


def test_a_server_that_ignores_sigterm_is_killed_after_the_grace(tmp_path, standin, rigs):
    from dataclasses import replace

    rig = SupervisionRig(standin, tmp_path / "logs",
                         model("stubborn", spec_file(tmp_path, ignore_sigterm=True)),
                         settings=replace(FAST, stop_grace_s=0.5))
    rigs.append(rig)
    rig.manager.load("stubborn")
    rig.waiter.wait_for("model.ready", "stubborn")
    pid = rig.backend.pid("stubborn")
    rig.manager.unload("stubborn")
    unloaded = rig.waiter.wait_for("model.unloaded", "stubborn", timeout=15).to_dict()
    assert unloaded["reason"] == "user"
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert "model.crashed" not in rig.waiter.types()


def test_a_server_that_never_gets_ready_is_a_startup_timeout(tmp_path, standin, rigs):
    rig = SupervisionRig(standin, tmp_path / "logs",
                         model("sleepy", spec_file(tmp_path, never_ready=True)),
                         restart=RestartConfig(startup_timeout_s=1.0, backoff_base_s=60))
    rigs.append(rig)
    rig.manager.load("sleepy")
    crashed = rig.waiter.wait_for("model.crashed", "sleepy", timeout=15).to_dict()
    assert crashed["kind"] == "startup_timeout"
    assert rig.backend.running() == []


def test_the_llama_cpp_python_server_kind_runs_the_worker_ready_via_health(tmp_path, standin,
                                                                          rigs):
    rig = SupervisionRig(standin, tmp_path / "logs",
                         model("py", spec_file(tmp_path), backend="llama-cpp"),
                         backend_cls=LlamaCppPythonBackend)
    rigs.append(rig)
    rig.manager.load("py")
    rig.waiter.wait_for("model.ready", "py")
    cmdline = psutil.Process(rig.backend.pid("py")).cmdline()
    assert cmdline[cmdline.index("-m") + 1] == "gpuwarden.workers.llama_cpp_serve"
    assert "--n_gpu_layers" in cmdline and "--api_key" in cmdline
    psutil.Process(rig.backend.pid("py")).kill()
    crashed = rig.waiter.wait_for("model.crashed", "py").to_dict()
    # SIGKILL is an OOM kill unless the cgroup's counter is readable and did not move.
    readable = OomWatch.for_pid(os.getpid()).killed_since() is not None
    assert crashed["kind"] == ("crash" if readable else "oom_killed")
    rig.waiter.wait_for("model.ready", "py", count=2)  # restarted by the same policy
