"""Real llama-server processes, started, killed, stopped and hung for real."""

from __future__ import annotations

import json
import os
import signal
import socket
import urllib.request
from pathlib import Path

import psutil
import pytest

from gguf_factory import write_garbage, write_tiny_llama, write_truncated
from gpuwarden.engine.lifecycle.config import ModelConfig, RestartConfig
from supervision_rig import SupervisionRig, wait_until


def llama(name: str, path: Path, **kw: object) -> ModelConfig:
    base: dict[str, object] = {"backend": "llama-server", "path": path, "placement": "cpu",
                               "context_size": 256, "args": ("--threads", "1", "--parallel",
                                                             "1")}
    base.update(kw)
    return ModelConfig(name=name, **base)  # type: ignore[arg-type]


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return write_tiny_llama(tmp_path / "tiny.gguf")


@pytest.fixture
def rig_factory(llama_server_bin: Path, tmp_path: Path):
    made: list[SupervisionRig] = []

    def make(*models: ModelConfig, **kw: object) -> SupervisionRig:
        rig = SupervisionRig(llama_server_bin, tmp_path / "logs", *models, **kw)  # type: ignore[arg-type]
        made.append(rig)
        return rig

    yield make
    for rig in made:
        rig.close()


def complete(port: int, key: str, prompt: str = "hello") -> dict[str, object]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/completion", method="POST",
        data=json.dumps({"prompt": prompt, "n_predict": 4}).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def test_start_ready_answers_and_stops_cleanly(rig_factory, tiny):
    rig = rig_factory(llama("tiny", tiny))
    assert rig.manager.load("tiny").ok
    rig.waiter.wait_for("model.ready", "tiny")
    port, key = rig.backend.endpoint("tiny")
    assert "content" in complete(port, key)
    cmdline = psutil.Process(rig.backend.pid("tiny")).cmdline()
    assert cmdline[cmdline.index("--host") + 1] == "127.0.0.1"
    assert "--api-key" in cmdline and "--metrics" in cmdline
    assert cmdline[cmdline.index("--n-gpu-layers") + 1] == "0"
    pid = rig.backend.pid("tiny")
    assert rig.manager.unload("tiny").ok
    unloaded = rig.waiter.wait_for("model.unloaded", "tiny")
    assert unloaded.to_dict()["reason"] == "user"
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert "model.crashed" not in rig.waiter.types()


def test_kill_9_is_a_crash_restarted_after_the_backoff_one_process_only(rig_factory, tiny):
    rig = rig_factory(llama("tiny", tiny))
    rig.manager.load("tiny")
    rig.waiter.wait_for("model.ready", "tiny")
    first = rig.backend.pid("tiny")
    os.kill(first, signal.SIGKILL)
    crashed = rig.waiter.wait_for("model.crashed", "tiny")
    assert crashed.to_dict()["signal"] == signal.SIGKILL
    assert rig.waiter.wait_for("model.restart_scheduled", "tiny").to_dict()["delay_s"] == 0.2
    rig.waiter.wait_for("model.ready", "tiny", count=2)
    second = rig.backend.pid("tiny")
    assert second != first and rig.backend.running() == ["tiny"]
    servers = [p for p in psutil.process_iter(["cmdline"])
               if p.info["cmdline"] and str(tiny) in p.info["cmdline"]]
    assert [p.pid for p in servers] == [second]


def test_sigstop_is_a_hang_killed_and_restarted(rig_factory, tiny):
    rig = rig_factory(llama("tiny", tiny))
    rig.manager.load("tiny")
    rig.waiter.wait_for("model.ready", "tiny")
    frozen = rig.backend.pid("tiny")
    os.kill(frozen, signal.SIGSTOP)
    crashed = rig.waiter.wait_for("model.crashed", "tiny", timeout=30)
    assert crashed.to_dict()["kind"] == "hang"
    rig.waiter.wait_for("model.ready", "tiny", count=2)
    assert rig.backend.pid("tiny") != frozen


@pytest.mark.parametrize("writer", [write_garbage, write_truncated])
def test_a_bad_model_file_is_a_clear_load_error_without_a_restart_storm(
        rig_factory, tmp_path, writer):
    bad = writer(tmp_path / "bad.gguf")
    rig = rig_factory(llama("bad", bad))
    rig.manager.load("bad")
    crashed = rig.waiter.wait_for("model.crashed", "bad").to_dict()
    assert crashed["kind"] == "load_error" and crashed["exit_code"] == 1
    assert any("load" in line and "model" in line for line in crashed["log_tail"])
    rig.manager.tick()
    assert "model.restart_scheduled" not in rig.waiter.types("bad")
    assert rig.manager.state("bad").restart_at is None


def test_a_taken_port_moves_to_another(rig_factory, tiny, monkeypatch):
    import gpuwarden.engine.supervisor.llama_server as ls

    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    taken = squatter.getsockname()[1]
    ports = iter([taken])
    real_free_port = ls.free_port
    monkeypatch.setattr(ls, "free_port", lambda: next(ports, None) or real_free_port())
    try:
        rig = rig_factory(llama("tiny", tiny))
        rig.manager.load("tiny")
        rig.waiter.wait_for("model.ready", "tiny")
        port, _ = rig.backend.endpoint("tiny")
        assert port != taken
        assert "model.crashed" not in rig.waiter.types()
    finally:
        squatter.close()


def test_a_missing_binary_says_how_to_get_one(tmp_path, tiny):
    rig = SupervisionRig(tmp_path / "no-such-llama-server", tmp_path / "logs",
                         llama("tiny", tiny))
    try:
        import gpuwarden.engine.supervisor.locate as locate

        if locate.shutil.which("llama-server"):
            pytest.skip("a llama-server on PATH would be found instead")
        rig.manager.load("tiny")
        crashed = rig.waiter.wait_for("model.crashed", "tiny").to_dict()
        assert crashed["kind"] == "launch_failed"
        assert "gpuwarden setup llama-server" in crashed["log_tail"][0]
        assert "model.restart_scheduled" not in rig.waiter.types()
    finally:
        rig.close()


def test_requests_from_any_client_count_as_use(rig_factory, tiny):
    rig = rig_factory(llama("tiny", tiny))
    rig.manager.load("tiny")
    rig.waiter.wait_for("model.ready", "tiny")
    before = rig.manager.state("tiny").access_count
    port, key = rig.backend.endpoint("tiny")
    complete(port, key)  # straight to the server, not through gpuwarden
    assert wait_until(lambda: rig.manager.state("tiny").access_count > before, timeout=10)


def test_restart_policy_applies_to_real_crashes(rig_factory, tiny):
    rig = rig_factory(llama("tiny", tiny), restart=RestartConfig(backoff_base_s=0.1,
                                                                  max_consecutive=2))
    rig.manager.load("tiny")
    rig.waiter.wait_for("model.ready", "tiny")
    os.kill(rig.backend.pid("tiny"), signal.SIGKILL)
    rig.waiter.wait_for("model.ready", "tiny", count=2)
    os.kill(rig.backend.pid("tiny"), signal.SIGKILL)
    exhausted = rig.waiter.wait_for("model.restart_exhausted", "tiny").to_dict()
    assert exhausted["attempts"] == 2


def test_a_binary_that_cannot_be_executed_is_a_launch_failure_not_a_stuck_model(tmp_path, tiny):
    broken = tmp_path / "llama-server"
    broken.write_text("this is not a program\n")  # executable bit, but no format: ENOEXEC
    broken.chmod(0o755)
    rig = SupervisionRig(broken, tmp_path / "logs", llama("tiny", tiny))
    try:
        assert rig.manager.load("tiny").ok
        crashed = rig.waiter.wait_for("model.crashed", "tiny").to_dict()
        assert crashed["kind"] == "launch_failed"
        assert crashed["log_tail"][0] == (
            f"llama-server at {broken} cannot be run: it is not a program (Exec format error: "
            "a script without #!?)")
        assert rig.manager.state("tiny").device == "crashed"  # not stuck in "loading"
    finally:
        rig.close()


def test_supervision_goes_on_when_the_registry_cannot_be_written(llama_server_bin, tmp_path,
                                                                 tiny):
    from gpuwarden.engine.supervisor.registry import ServerRegistry

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    registry = ServerRegistry(blocker / "servers.json")  # its folder cannot be made
    rig = SupervisionRig(llama_server_bin, tmp_path / "logs", llama("tiny", tiny),
                         registry=registry)
    try:
        rig.manager.load("tiny")
        rig.waiter.wait_for("model.ready", "tiny")
        os.kill(rig.backend.pid("tiny"), signal.SIGKILL)
        rig.waiter.wait_for("model.crashed", "tiny")
        rig.waiter.wait_for("model.ready", "tiny", count=2)
    finally:
        rig.close()
