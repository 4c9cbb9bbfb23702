"""Servers are never orphaned and never doubled when gpuwarden starts again, after
``--leave-running``: a wrapper script as llama_server. Real llama-server processes, tiny
GGUF files."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from gguf_factory import write_tiny_llama
from gpuwarden.engine.facade import Engine, ServicePaths
from gpuwarden.engine.lifecycle.config import Config, ModelConfig
from gpuwarden.engine.runtime import SimulateSpec, TelemetryOptions
from gpuwarden.engine.supervisor.registry import ServerRecord, ServerRegistry
from supervision_rig import EventWaiter

DEADLINE_S = 30.0


@pytest.fixture
def paths(tmp_path: Path) -> ServicePaths:
    return ServicePaths(journal=None, hints=None, logs=tmp_path / "logs",
                        registry=tmp_path / "servers.json")


@pytest.fixture
def tiny(tmp_path: Path, llama_server_bin: Path) -> ModelConfig:
    return ModelConfig(name="tiny", backend="llama-server",
                       path=write_tiny_llama(tmp_path / "tiny.gguf"), placement="cpu",
                       context_size=256, args=("--threads", "1", "--parallel", "1"),
                       autostart=True)


def marked_servers(tmp_path: Path) -> list[int]:
    """Running processes carrying gpuwarden's mark whose command line names this test's
    files: what a test leaves behind."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if "GPUWARDEN_SERVER" in proc.environ() and \
                    any(str(tmp_path) in arg for arg in proc.info["cmdline"] or ()):
                found.append(proc.pid)
        except psutil.Error:
            continue
    return found


@pytest.fixture(autouse=True)
def nothing_left_behind(tmp_path: Path) -> Iterator[None]:
    yield
    left = marked_servers(tmp_path)
    for pid in left:
        psutil.Process(pid).kill()
    assert left == [], "servers left running after the test"


def config_of(*models: ModelConfig, binary: Path | None = None) -> Config:
    return Config(models=models, llama_server=binary)


def start(config: Config, paths: ServicePaths) -> tuple[Engine, EventWaiter]:
    engine = Engine.build(config, TelemetryOptions(simulate=SimulateSpec()), paths)
    waiter = EventWaiter(engine)
    engine.start()
    return engine, waiter


def leave_running(config: Config, paths: ServicePaths) -> dict[str, int]:
    """A gpuwarden that loads its autostart models, then quits with --leave-running;
    returns each model's server pid."""
    engine, events = start(config, paths)
    pids = {}
    for model in config.models:
        events.wait_for("model.ready", model.name, timeout=DEADLINE_S)
        row = engine.model(model.name)
        assert row is not None and row.pids
        pids[model.name] = row.pids[0]
    engine.close(leave_running=True)
    return pids


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def servers_of(model_path: Path) -> list[int]:
    return [p.pid for p in psutil.process_iter(["cmdline", "status"])
            if p.info["status"] != psutil.STATUS_ZOMBIE and p.info["cmdline"]
            and str(model_path) in p.info["cmdline"]]


def recorded(path: Path | None) -> dict[str, ServerRecord]:
    """What the registry file holds now."""
    assert path is not None
    registry = ServerRegistry(path)
    registry.load()
    return registry.records()


def loading_reasons(engine: Engine, model: str) -> list[str]:
    return [e.to_dict()["reason"] for e in engine.events_since(0)
            if e.type == "model.loading" and e.to_dict()["model"] == model]


# -- a wrapper script as llama_server -------------------------------------------------------


def test_a_server_behind_a_wrapper_script_is_adopted_once(tiny, paths, tmp_path,
                                                           llama_server_bin):
    wrapper = tmp_path / "llama-wrapper"
    wrapper.write_text(f'#!/bin/sh\nexec {llama_server_bin} "$@"\n')
    wrapper.chmod(0o755)
    config = config_of(tiny, binary=wrapper)
    pids = leave_running(config, paths)
    assert psutil.Process(pids["tiny"]).exe() == os.path.realpath(llama_server_bin)

    engine, events = start(config, paths)
    try:
        events.wait_for("model.ready", "tiny", timeout=DEADLINE_S)
        assert loading_reasons(engine, "tiny") == ["adopted"]
        assert servers_of(tiny.path) == [pids["tiny"]]
        assert recorded(paths.registry)["tiny"].pid == pids["tiny"]
    finally:
        engine.close()
    assert gone(pids["tiny"])


