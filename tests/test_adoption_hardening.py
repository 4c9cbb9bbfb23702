"""Servers are never orphaned and never doubled when gpuwarden starts again, after
``--leave-running`` or a ``kill -9`` of gpuwarden itself: a model removed or renamed in
the meantime, a wrapper script as llama_server, a garbled or empty registry, changed
settings. Real llama-server processes, tiny GGUF files."""

from __future__ import annotations

import dataclasses
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from gguf_factory import write_tiny_llama
from gpuwarden.engine import paths as user_paths
from gpuwarden.engine.facade import Engine, ServicePaths
from gpuwarden.engine.lifecycle.config import Config, ModelConfig
from gpuwarden.engine.runtime import SimulateSpec, TelemetryOptions
from gpuwarden.engine.supervisor.leftovers import argv_changes, plan_takeover
from gpuwarden.engine.supervisor.registry import ServerRecord, ServerRegistry
from supervision_rig import EventWaiter, wait_until

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


@pytest.fixture
def other(tmp_path: Path, tiny: ModelConfig) -> ModelConfig:
    return dataclasses.replace(tiny, name="other",
                               path=write_tiny_llama(tmp_path / "other.gguf", seed=1))


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


def leftover_events(engine: Engine) -> list[dict[str, object]]:
    return [e.to_dict() for e in engine.events_since(0) if e.type == "server.leftover_stopped"]


def loading_reasons(engine: Engine, model: str) -> list[str]:
    return [e.to_dict()["reason"] for e in engine.events_since(0)
            if e.type == "model.loading" and e.to_dict()["model"] == model]


# -- a model removed or renamed -----------------------------------------------------------


def test_the_server_of_a_removed_model_is_stopped_and_said(tiny, other, paths):
    pids = leave_running(config_of(tiny, other), paths)

    engine, _ = start(config_of(other), paths)
    try:
        assert wait_until(lambda: gone(pids["tiny"]), timeout=DEADLINE_S)
        [said] = leftover_events(engine)
        assert (said["model"], said["pid"], said["reason"]) == ("tiny", pids["tiny"],
                                                                 "removed")
        event = next(e for e in engine.events_since(0) if e.type == "server.leftover_stopped")
        assert "tiny" in event.describe() and "stopped" in event.describe()
        assert loading_reasons(engine, "other") == ["adopted"]
        assert servers_of(other.path) == [pids["other"]]
        assert set(recorded(paths.registry)) == {"other"}
    finally:
        engine.close()


def test_a_renamed_model_has_exactly_one_server(tiny, paths):
    pids = leave_running(config_of(tiny), paths)
    renamed = dataclasses.replace(tiny, name="tiny-renamed")

    engine, events = start(config_of(renamed), paths)
    try:
        assert gone(pids["tiny"])  # stopped before anything new was started
        events.wait_for("model.ready", "tiny-renamed", timeout=DEADLINE_S)
        row = engine.model("tiny-renamed")
        assert row is not None and servers_of(tiny.path) == [row.pids[0]]
        assert [(e["model"], e["reason"]) for e in leftover_events(engine)] == \
            [("tiny", "removed")]
        assert set(recorded(paths.registry)) == {"tiny-renamed"}
    finally:
        engine.close()


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
        assert leftover_events(engine) == []
    finally:
        engine.close()
    assert gone(pids["tiny"])


# -- a garbled or empty registry ----------------------------------------------------------


@pytest.mark.parametrize("content", [b'{"version": 1, "servers": [{"mod', b""],
                         ids=["garbled", "empty"])
def test_without_a_usable_registry_servers_are_found_by_their_mark(tiny, other, paths,
                                                                    content):
    pids = leave_running(config_of(tiny, other), paths)
    assert paths.registry is not None
    paths.registry.write_bytes(content)

    engine, events = start(config_of(tiny), paths)  # other: removed meanwhile
    try:
        problems = [e.describe() for e in engine.events_since(0)
                    if "servers.json" in str(e.to_dict().get("message"))]
        assert len(problems) == 1  # one clear line, whichever event carries it
        assert "mark" in problems[0]
        events.wait_for("model.ready", "tiny", timeout=DEADLINE_S)
        assert loading_reasons(engine, "tiny") == ["adopted"]
        assert servers_of(tiny.path) == [pids["tiny"]]
        assert gone(pids["other"])
        assert [(e["model"], e["pid"], e["reason"]) for e in leftover_events(engine)] == \
            [("other", pids["other"], "removed")]
        assert recorded(paths.registry)["tiny"].pid == pids["tiny"]
    finally:
        engine.close()
    assert gone(pids["tiny"])


# -- changed settings -----------------------------------------------------------------------


def test_a_server_with_other_settings_is_restarted_with_the_new_ones(tiny, paths):
    manual = dataclasses.replace(tiny, autostart=False)  # loaded again without autostart
    engine, events = start(config_of(manual), paths)
    engine.load("tiny")
    events.wait_for("model.ready", "tiny", timeout=DEADLINE_S)
    old = engine.model("tiny").pids[0]
    engine.close(leave_running=True)

    engine, events = start(config_of(dataclasses.replace(manual, context_size=512)), paths)
    try:
        assert gone(old)
        [said] = leftover_events(engine)
        assert (said["model"], said["pid"], said["reason"]) == ("tiny", old, "changed")
        assert said["detail"] == "--ctx-size 256 -> 512"
        events.wait_for("model.ready", "tiny", timeout=DEADLINE_S)
        assert loading_reasons(engine, "tiny") == ["restart"]
        [new] = servers_of(tiny.path)
        assert new != old
        argv = psutil.Process(new).cmdline()
        assert argv[argv.index("--ctx-size") + 1] == "512"
    finally:
        engine.close()


def test_unchanged_settings_are_adopted_whatever_each_launch_picked(tiny):
    base = ["/bin/llama-server", "--model", "/m.gguf", "--port", "1234", "--api-key", "k1",
            "--n-gpu-layers", "all", "--ctx-size", "256", "--alias", "tiny"]
    other_launch = [*base[:4], "999", "--api-key", "k2", "--n-gpu-layers", "3", *base[9:]]
    assert argv_changes(other_launch, base) == ""
    assert argv_changes([*base, "--parallel", "2", "--kv-unified"], base) == ""  # throttled
    assert argv_changes(["/bin/llama-server", *base[1:], "-fa"], base) == "-fa -> (nothing)"
    changed_key = argv_changes([*base[:5], "--api-key", "secret", *base[7:10], "512",
                                *base[11:]], base)
    assert "secret" not in changed_key and changed_key == "--ctx-size 512 -> 256"


def test_a_second_server_for_one_model_is_a_duplicate(tiny):
    def record(pid: int) -> ServerRecord:
        return ServerRecord(model="tiny", pid=pid, port=8000 + pid, api_key="k",
                            executable="/bin/llama-server", cmdline=("/bin/llama-server",),
                            started_ts=float(pid))

    plan = plan_takeover([record(1), record(2)], config_of(tiny), "llama-server",
                         changes=lambda _r, _m: "", answers=lambda _r: True)
    assert [r.pid for r in plan.adopt] == [1]
    assert [(s.record.pid, s.reason) for s in plan.stop] == [(2, "duplicate")]


# -- gpuwarden itself killed with kill -9 ---------------------------------------------------


def headless_config(tmp_path: Path, model: ModelConfig, binary: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        f'llama_server = {json.dumps(str(binary))}\n\n[[models]]\nname = "{model.name}"\n'
        f'backend = "llama-server"\npath = {json.dumps(str(model.path))}\n'
        f'placement = "cpu"\ncontext_size = {model.context_size}\n'
        f'args = {json.dumps(list(model.args))}\nautostart = true\n')
    return path


def ready_then_kill_9(config: Path, model: str, stderr: Path) -> int:
    """Run `gpuwarden headless` until ``model`` is ready, then kill -9 it; returns the
    server's pid (from the registry it wrote)."""
    with stderr.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gpuwarden", "headless", "--simulate", "--config",
             str(config), "--events", "-"], stdout=subprocess.PIPE, stderr=err, text=True)
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        for line in proc.stdout or ():
            lines.put(line)
        lines.put(None)  # it ended

    threading.Thread(target=read, daemon=True).start()
    try:
        while (line := lines.get(timeout=DEADLINE_S)) is not None:
            event = json.loads(line)
            if (event["type"], event.get("model")) == ("model.ready", model):
                break
        else:
            pytest.fail(f"gpuwarden headless ended first: {stderr.read_text()}")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=DEADLINE_S)
    return recorded(user_paths.data_dir() / "servers.json")[model].pid


def test_after_a_kill_9_the_server_of_a_removed_model_is_stopped(tiny, other, tmp_path,
                                                                 llama_server_bin):
    data = ServicePaths(journal=None, hints=None, logs=tmp_path / "logs",
                        registry=user_paths.data_dir() / "servers.json")
    pid = ready_then_kill_9(headless_config(tmp_path, tiny, llama_server_bin), "tiny",
                            tmp_path / "stderr.txt")
    assert not gone(pid)

    engine, events = start(config_of(other, binary=llama_server_bin), data)
    try:
        assert gone(pid)
        assert [(e["model"], e["pid"], e["reason"]) for e in leftover_events(engine)] == \
            [("tiny", pid, "removed")]
        events.wait_for("model.ready", "other", timeout=DEADLINE_S)
        assert set(recorded(data.registry)) == {"other"}
    finally:
        engine.close()


def test_a_start_with_an_unusable_config_leaves_the_servers_until_it_can_be_read(
        tmp_path: Path, tiny: ModelConfig, paths: ServicePaths):
    """The window starts when nothing in the config file can be used: every model would
    look removed, so the servers left running are neither adopted nor stopped; once the
    file is fixed they are adopted, never started twice."""
    from gpuwarden.engine.lifecycle.config import load_config

    pid = leave_running(config_of(tiny), paths)["tiny"]
    config_file = tmp_path / "gpuwarden.toml"
    config_file.write_text("[[models]\nname = \"tiny\"\n")  # a syntax error
    broken, problems = load_config(config_file)
    assert problems and problems[0].whole_file
    engine = Engine.build(broken, TelemetryOptions(simulate=SimulateSpec()), paths,
                          problems=problems, config_path=config_file)
    events = EventWaiter(engine)
    engine.start(watch_config=False)
    try:
        assert not gone(pid) and leftover_events(engine) == []
        note = [e.describe() for e in engine.events_since(0) if e.type == "config.problem"]
        assert any("left alone until the config file can be read" in n for n in note)
        config_file.write_text(
            f'[[models]]\nname = "tiny"\nbackend = "llama-server"\npath = "{tiny.path}"\n'
            'placement = "cpu"\ncontext_size = 256\nargs = ["--threads", "1", "--parallel", '
            '"1"]\nautostart = true\n')
        assert engine.reload_config().ok
        events.wait_for("model.ready", "tiny", timeout=DEADLINE_S)
        row = engine.model("tiny")
        assert row is not None and row.pids == (pid,)  # adopted, not a second copy
        assert servers_of(tiny.path) == [pid]
    finally:
        engine.close()
    assert wait_until(lambda: gone(pid), DEADLINE_S)
