"""The llama-cpp backend with the real llama-cpp-python server (gpuwarden's worker around
it) and tiny real GGUF models: use while a streamed answer is in flight, placement,
crash classification and readiness, as test_llama_server.py checks them for llama-server."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from gguf_factory import write_garbage, write_tiny_llama, write_truncated
from gpuwarden.engine.clock import FakeClock
from gpuwarden.engine.events import EventBus
from gpuwarden.engine.lifecycle.backend import Footprint, Launch
from gpuwarden.engine.lifecycle.config import Config, ModelConfig
from gpuwarden.engine.lifecycle.crash import DeathReport
from gpuwarden.engine.lifecycle.manager import LifecycleManager
from gpuwarden.engine.supervisor import http
from gpuwarden.engine.supervisor.llama_cpp_python import WORKER, LlamaCppPythonBackend
from gpuwarden.engine.supervisor.oom import OomWatch
from helpers import snapshot
from llama_cpp_rig import StreamedCompletion, complete, llama_cpp, require_llama_cpp
from supervision_rig import FAST, EventWaiter, SupervisionRig, wait_until

LONG_CTX = 2048
# With 300 log-probabilities per token, ~5 MiB of events: more than the socket buffers
# hold (Linux's tcp_wmem allows 4 MiB), so a client that reads nothing holds the answer
# back mid-stream.
HELD_ANSWER_TOKENS = 1200


@pytest.fixture(autouse=True)
def _installed() -> None:
    require_llama_cpp()


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return write_tiny_llama(tmp_path / "tiny.gguf")


@pytest.fixture
def roomy(tmp_path: Path) -> Path:
    """A tiny model with room in its context for a long answer."""
    return write_tiny_llama(tmp_path / "roomy.gguf", context_length=LONG_CTX)


@pytest.fixture
def rig_factory(tmp_path: Path) -> Iterator:
    made: list[SupervisionRig] = []

    def make(*models: ModelConfig, **kw: object) -> SupervisionRig:
        rig = SupervisionRig(Path(sys.executable), tmp_path / "logs", *models,
                             backend_cls=LlamaCppPythonBackend, **kw)  # type: ignore[arg-type]
        made.append(rig)
        return rig

    yield make
    for rig in made:
        rig.close()


def wait_ready(rig: SupervisionRig, name: str, count: int = 1) -> None:
    """Wait for the ``count``-th model.ready; a failure shows each crash and its log."""
    try:
        rig.waiter.wait_for("model.ready", name, count=count)
    except AssertionError as exc:
        crashes = [e.to_dict() for e in rig.waiter.events if e.type == "model.crashed"]
        raise AssertionError(f"{exc}; crashes: {json.dumps(crashes, indent=1)}") from None


class Callbacks:
    """One backend start driven directly (no manager): what its callbacks said."""

    def __init__(self) -> None:
        self.ready = threading.Event()
        self.exited = threading.Event()
        self.footprints: list[Footprint] = []
        self.exits: list[DeathReport] = []
        self.health_at_ready: list[int | None] = []
        self.backend: LlamaCppPythonBackend | None = None
        self.name = ""

    def start(self, backend: LlamaCppPythonBackend, config: ModelConfig,
              device: str = "cpu", layers: int = 0) -> None:
        self.backend, self.name = backend, config.name
        backend.start(Launch(config, device, layers, 1), self._on_ready, self._on_exit)

    def _on_ready(self, instance: int, footprint: Footprint) -> None:
        assert self.backend is not None
        port, key = self.backend.endpoint(self.name)
        self.health_at_ready.append(http.get(port, "/health", timeout_s=2.0,
                                             api_key=key).status)
        self.footprints.append(footprint)
        self.ready.set()

    def _on_exit(self, report: DeathReport) -> None:
        self.exits.append(report)
        self.exited.set()


# -- use ------------------------------------------------------------------------------


def test_an_idle_model_is_kept_while_a_streamed_request_is_in_flight_then_unloaded(
        tmp_path, tiny):
    clock = FakeClock()  # the idle timer's time; the server runs on real time
    bus = EventBus(clock=clock)
    waiter = EventWaiter(bus)
    backend = LlamaCppPythonBackend(tmp_path / "logs", settings=FAST)
    config = llama_cpp("chat", tiny, eviction="idle", idle_timeout_s=60.0)
    manager = LifecycleManager(Config(models=(config,)), {"llama-cpp": backend}, bus=bus,
                               clock=clock)
    request = None
    try:
        assert manager.load("chat").ok
        waiter.wait_for("model.ready", "chat")
        request = StreamedCompletion(*backend.endpoint("chat"), tokens=100)
        request.send(hold_last_byte=True)  # in flight for as long as the test likes
        assert wait_until(lambda: manager.state("chat").serving, 10), \
            "the server never said it was answering"
        clock.advance(3600.0)  # an hour since its last finished request
        manager.on_snapshot(snapshot(clock.time()))
        assert manager.state("chat").loaded
        assert "model.unloaded" not in waiter.types()

        request.send_last_byte()
        events = list(request.events())
        assert events[-1] == b"[DONE]" and len(events) > 100  # the whole streamed answer
        assert wait_until(lambda: not manager.state("chat").serving, 10)
        assert manager.state("chat").access_count >= 1  # the answer counted as use
        manager.on_snapshot(snapshot(clock.time()))
        assert manager.state("chat").loaded  # just used: its idle clock started again
        clock.advance(61.0)
        manager.on_snapshot(snapshot(clock.time()))
        unloaded = waiter.wait_for("model.unloaded", "chat").to_dict()
        assert unloaded["reason"] == "idle"
    finally:
        if request is not None:
            request.close()
        manager.shutdown()
        backend.wait_stopped()


def test_health_checks_never_cut_a_streamed_answer_short(tmp_path, roomy, monkeypatch):
    """llama_cpp.server ends a stream early when another request waits for the model
    (/v1/models does): gpuwarden's /health never waits for it."""
    health_checks = []
    real_get = http.get

    def counting_get(port: int, path: str, **kw: object) -> http.Reply:
        if path == "/health":
            health_checks.append(port)
        return real_get(port, path, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(http, "get", counting_get)
    calls = Callbacks()
    backend = LlamaCppPythonBackend(tmp_path / "logs", settings=FAST)
    calls.start(backend, llama_cpp("chat", roomy, context_size=LONG_CTX))
    answer = None
    try:
        assert calls.ready.wait(30), calls.exits
        tokens = HELD_ANSWER_TOKENS
        answer = StreamedCompletion(*backend.endpoint("chat"), tokens=tokens, logprobs=300,
                                    small_window=True)
        answer.send()
        events = answer.events()
        first = next(events)
        asked = len(health_checks)
        assert wait_until(lambda: len(health_checks) >= asked + 3, 10)
        port, key = backend.endpoint("chat")
        busy = http.parse_metrics(http.get(port, "/metrics", timeout_s=2.0, api_key=key).body)
        assert busy["requests_processing"] == 1, \
            "the answer was not in flight during the health checks (cut short, or buffered whole)"
        answer.read_faster()
        rest = list(events)
        assert rest[-1] == b"[DONE]"
        assert [json.loads(e)["choices"][0]["finish_reason"] for e in (first, *rest[:-1])] \
            == [None] * tokens + ["length"]
        assert calls.exits == []
    finally:
        if answer is not None:
            answer.close()
        backend.stop("chat", 1)
        backend.wait_stopped()


# -- placement ------------------------------------------------------------------------


@pytest.mark.parametrize(("device", "layers", "ngl"),
                         [("cpu", 0, "0"), ("partial", 1, "1"), ("gpu", 2, "-1")])
def test_the_placement_becomes_n_gpu_layers(tmp_path, tiny, device, layers, ngl):
    """The CPU build runs every placement on the CPU; the command line says what was asked."""
    calls = Callbacks()
    backend = LlamaCppPythonBackend(tmp_path / "logs", settings=FAST)
    calls.start(backend, llama_cpp("tiny", tiny, layers=2), device, layers)
    try:
        assert calls.ready.wait(30), calls.exits
        cmdline = psutil.Process(backend.pid("tiny")).cmdline()
        assert cmdline[1:3] == ["-m", WORKER]
        assert cmdline[cmdline.index("--n_gpu_layers") + 1] == ngl
        assert cmdline[cmdline.index("--host") + 1] == "127.0.0.1"
        assert "--api_key" in cmdline
    finally:
        backend.stop("tiny", 1)
        backend.wait_stopped()


# -- readiness ------------------------------------------------------------------------


def test_ready_only_once_health_answers_and_then_it_serves(tmp_path, tiny):
    calls = Callbacks()
    backend = LlamaCppPythonBackend(tmp_path / "logs", settings=FAST)
    calls.start(backend, llama_cpp("tiny", tiny))
    try:
        assert calls.ready.wait(30), calls.exits
        assert calls.health_at_ready == [200]
        port, key = backend.endpoint("tiny")
        assert complete(port, key)["choices"]  # a model called ready answers at once
        unauthorised = http.get(port, "/metrics", timeout_s=2.0, api_key="wrong")
        assert unauthorised.status == 401
    finally:
        backend.stop("tiny", 1)
        backend.wait_stopped()


def test_a_missing_server_extra_is_a_launch_failure_that_says_how_to_install_it(
        tmp_path, tiny, monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "uvicorn" else real_find_spec(name, *a))
    rig = SupervisionRig(None, tmp_path / "logs", llama_cpp("tiny", tiny),  # type: ignore[arg-type]
                         backend_cls=LlamaCppPythonBackend)
    try:
        rig.manager.load("tiny")
        crashed = rig.waiter.wait_for("model.crashed", "tiny").to_dict()
        assert crashed["kind"] == "launch_failed"
        assert "no uvicorn" in crashed["log_tail"][0]
        assert "gpuwarden setup llama-cpp-python" in crashed["log_tail"][0]
        assert "model.restart_scheduled" not in rig.waiter.types()
    finally:
        rig.close()


# -- crashes --------------------------------------------------------------------------


def test_kill_9_is_a_crash_and_restarted(rig_factory, tiny):
    """How soon the crash is seen is measured by bench/runtimes.py, not asserted here (a
    shared machine's scheduling is no property of gpuwarden's)."""
    rig = rig_factory(llama_cpp("tiny", tiny))
    rig.manager.load("tiny")
    wait_ready(rig, "tiny")
    first = rig.backend.pid("tiny")
    os.kill(first, signal.SIGKILL)
    crashed = rig.waiter.wait_for("model.crashed", "tiny")
    # SIGKILL is an OOM kill unless the cgroup's counter is readable and did not move.
    readable = OomWatch.for_pid(os.getpid()).killed_since() is not None
    assert crashed.to_dict()["kind"] == ("crash" if readable else "oom_killed")
    assert crashed.to_dict()["signal"] == signal.SIGKILL
    wait_ready(rig, "tiny", count=2)
    assert rig.backend.pid("tiny") not in (None, first)


@pytest.mark.parametrize("writer", [write_garbage, write_truncated])
def test_a_bad_model_file_is_a_load_error_that_says_so_without_a_restart(
        rig_factory, tmp_path, writer):
    bad = writer(tmp_path / "bad.gguf")
    rig = rig_factory(llama_cpp("bad", bad))
    rig.manager.load("bad")
    crashed = rig.waiter.wait_for("model.crashed", "bad").to_dict()
    assert crashed["kind"] == "load_error" and crashed["exit_code"] == 1
    assert f"llama_cpp_serve: Failed to load model from file: {bad}" in crashed["log_tail"]
    assert any("error loading model" in line for line in crashed["log_tail"])
    rig.manager.tick()
    assert "model.restart_scheduled" not in rig.waiter.types("bad")


def test_an_argument_it_does_not_know_is_a_load_error_not_a_restart_storm(rig_factory, tiny):
    rig = rig_factory(llama_cpp("tiny", tiny, args=("--n_ctx_typo", "512")))
    rig.manager.load("tiny")
    crashed = rig.waiter.wait_for("model.crashed", "tiny").to_dict()
    assert crashed["kind"] == "load_error" and crashed["exit_code"] == 2
    assert any("invalid argument: unrecognized arguments: --n_ctx_typo 512" in line
               for line in crashed["log_tail"]), json.dumps(crashed["log_tail"])
    rig.manager.tick()
    assert "model.restart_scheduled" not in rig.waiter.types("tiny")
