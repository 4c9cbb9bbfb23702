"""One contract, every backend (in the style of Dangerzone's isolation-provider tests): the
lifecycle manager relies on the same callbacks in the same order from each of them.

:class:`BackendContract` holds the tests; each ``Test*`` subclass only knows how to make
its backend and a model it can load, and says which parts of the contract cannot apply.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import sys
from pathlib import Path

import pytest

from backend_contract_rig import ContractRig
from gguf_factory import write_tiny_llama
from gpuwarden.engine.clock import FakeClock
from gpuwarden.engine.lifecycle.config import ModelConfig
from gpuwarden.engine.lifecycle.crash import classify
from gpuwarden.engine.lifecycle.simulated_backend import SimulatedBackend
from gpuwarden.engine.supervisor.command import CommandBackend
from gpuwarden.engine.supervisor.launch import free_port
from gpuwarden.engine.supervisor.llama_cpp_python import LlamaCppPythonBackend
from gpuwarden.engine.supervisor.llama_server import LlamaServerBackend
from gpuwarden.engine.telemetry.simulated import SimulatedProbe
from llama_cpp_rig import complete, llama_cpp, require_llama_cpp
from standin_server import STANDIN, write_executable
from supervision_rig import FAST

INSTANCE = 5
NAME = "tiny"


class BackendContract:
    """The contract. Subclasses set the class attributes and implement :meth:`make`."""

    # Why a part of the contract cannot be checked on this backend; None: it is checked.
    no_activity: str | None = None
    no_model_file: str | None = None
    no_process: str | None = None  # nothing to kill or stop

    def make(self, tmp_path: Path) -> tuple[ContractRig, ModelConfig]:
        raise NotImplementedError

    @pytest.fixture
    def rig(self, tmp_path: Path):
        rig, self.config = self.make(tmp_path)
        yield rig
        problems = rig.close()
        assert not problems, problems
        assert rig.backend.pids(NAME) == ()

    # -- helpers ------------------------------------------------------------------------

    def start_ready(self, rig: ContractRig, instance: int = INSTANCE, **changes: object):
        config = self.config if not changes else _replace(self.config, **changes)
        calls = rig.start(config, instance)
        assert rig.wait(lambda: calls.settled), f"neither ready nor exit for #{instance}"
        assert not calls.exits, f"exited instead of ready: {calls.exits}"
        assert len(calls.ready) == 1
        return calls

    def stop_and_wait(self, rig: ContractRig, calls) -> None:
        rig.backend.stop(calls.model, calls.instance)
        assert rig.wait(lambda: bool(calls.exits)), "no on_exit after stop()"
        rig.quiet()
        assert len(calls.exits) == 1, f"more than one on_exit: {calls.exits}"

    # -- the contract -------------------------------------------------------------------

    def test_a_start_that_loads_is_ready_exactly_once(self, rig):
        calls = self.start_ready(rig)
        rig.quiet()
        assert len(calls.ready) == 1 and calls.exits == []
        instance, footprint = calls.ready[0]
        assert instance == INSTANCE
        # on the CPU: no VRAM and not on the GPU; a process holds memory of its own
        assert footprint.vram_mib == 0 and footprint.on_gpu is not True
        assert self.no_process or footprint.ram_mib > 0, footprint

    def test_stop_gives_one_expected_exit(self, rig):
        calls = self.start_ready(rig)
        self.stop_and_wait(rig, calls)
        report = calls.exits[0]
        assert (report.model, report.instance) == (NAME, INSTANCE)
        assert report.expected is True
        assert classify(report) is None, report
        assert len(calls.ready) == 1

    def test_pids_while_running_and_none_after_the_exit(self, rig):
        calls = self.start_ready(rig)
        assert rig.backend.pids(NAME) != ()
        self.stop_and_wait(rig, calls)
        assert rig.backend.pids(NAME) == ()

    @pytest.mark.parametrize("stale", [INSTANCE - 1, INSTANCE + 7], ids=["older", "never"])
    def test_a_stop_for_another_instance_does_nothing(self, rig, stale):
        calls = self.start_ready(rig)
        pids = rig.backend.pids(NAME)
        rig.backend.stop(NAME, stale)
        rig.backend.stop("never-started", INSTANCE)
        rig.quiet()
        assert calls.exits == [], f"a stale stop ended the running instance: {calls.exits}"
        assert rig.backend.pids(NAME) == pids != ()
        self.stop_and_wait(rig, calls)  # the right instance still stops

    def test_a_new_instance_after_an_exit_is_its_own(self, rig):
        first = self.start_ready(rig)
        self.stop_and_wait(rig, first)
        second = self.start_ready(rig, INSTANCE + 1)
        assert second.ready[0][0] == INSTANCE + 1
        rig.backend.stop(NAME, INSTANCE)  # the old instance: no effect on the new one
        rig.quiet()
        assert second.exits == []
        self.stop_and_wait(rig, second)
        assert second.exits[0].instance == INSTANCE + 1 and second.exits[0].expected
        assert len(first.exits) == 1 and len(first.ready) == 1
        assert first.foreign() == [] and second.foreign() == []

    def test_a_request_is_reported_as_activity(self, rig):
        if self.no_activity:
            pytest.skip(self.no_activity)
        calls = self.start_ready(rig)
        self.request(rig)
        assert rig.wait(lambda: any(used for _, used, _ in calls.activity), 30), \
            f"no on_activity(used=True) after a request; saw {calls.activity}"
        assert all(i == INSTANCE for i, _, _ in calls.activity)

    def request(self, rig: ContractRig) -> None:
        """A completion through the server's own API, as any client would ask."""
        port, key = rig.backend.endpoint(NAME)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            conn.request("POST", "/completion", json.dumps({"prompt": "hi", "n_predict": 1}),
                         {"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
            assert conn.getresponse().status == 200
        finally:
            conn.close()

    def test_kill_9_is_one_crash_of_that_instance(self, rig):
        """How soon it is seen (milliseconds) is measured by bench/runtimes.py."""
        if self.no_process:
            pytest.skip(self.no_process)
        calls = self.start_ready(rig)
        os.kill(rig.backend.pids(NAME)[0], signal.SIGKILL)
        assert rig.wait(lambda: bool(calls.exits), 10), "no on_exit after kill -9"
        rig.quiet()
        assert len(calls.exits) == 1, calls.exits
        report = calls.exits[0]
        assert (report.instance, report.expected, report.signal) == \
            (INSTANCE, False, signal.SIGKILL)
        assert classify(report) in ("crash", "oom_killed"), report
        assert rig.backend.pids(NAME) == ()

    def test_a_hang_is_detected_and_the_process_ended(self, rig):
        """SIGSTOP: alive but answering nothing; FAST settings call it hung in ~3 s."""
        if self.no_process:
            pytest.skip(self.no_process)
        calls = self.start_ready(rig)
        pid = rig.backend.pids(NAME)[0]
        os.kill(pid, signal.SIGSTOP)
        try:
            assert rig.wait(lambda: bool(calls.exits), 30), "a stopped process was not found hung"
        finally:
            with contextlib.suppress(ProcessLookupError):  # killed as hung: gone
                os.kill(pid, signal.SIGCONT)
        assert classify(calls.exits[0]) == "hang", calls.exits[0]
        assert rig.backend.pids(NAME) == ()

    def test_a_missing_model_file_is_one_failed_exit(self, rig, tmp_path):
        if self.no_model_file:
            pytest.skip(self.no_model_file)
        calls = rig.start(_replace(self.config, path=tmp_path / "absent.gguf"), INSTANCE)
        assert rig.wait(lambda: calls.settled), "nothing followed a start of a missing file"
        rig.quiet()
        assert calls.ready == []
        assert len(calls.exits) == 1, calls.exits
        assert classify(calls.exits[0]) in ("launch_failed", "load_error"), calls.exits[0]
        assert calls.exits[0].instance == INSTANCE
        assert rig.backend.pids(NAME) == ()


def _replace(config: ModelConfig, **changes: object) -> ModelConfig:
    from dataclasses import replace

    return replace(config, **changes)  # type: ignore[arg-type]


def _spec(tmp_path: Path) -> Path:
    path = tmp_path / "model.json"
    path.write_text("{}")
    return path


class TestSimulated(BackendContract):
    no_activity = "the simulated backend serves no requests: it never calls on_activity"
    no_model_file = "the simulated backend loads no file (ModelConfig.path may be None)"
    no_process = "the simulated backend runs no process"

    def make(self, tmp_path):
        clock = FakeClock()
        backend = SimulatedBackend(SimulatedProbe(count=1), clock)

        def pump(seconds: float) -> None:
            clock.advance(seconds)
            backend.poll(clock.time())

        return ContractRig(backend, pump), ModelConfig(NAME, "simulated", load_time_s=1.0)


class TestLlamaServer(BackendContract):
    """The real llama-server binary and a tiny real GGUF, on the CPU."""

    @pytest.fixture(autouse=True)
    def _binary(self, llama_server_bin: Path) -> None:
        self.binary = llama_server_bin

    def make(self, tmp_path):
        backend = LlamaServerBackend(tmp_path / "logs", binary=self.binary, settings=FAST)
        config = ModelConfig(NAME, "llama-server", path=write_tiny_llama(tmp_path / "t.gguf"),
                             context_size=256, placement="cpu",
                             args=("--threads", "1", "--parallel", "1"))
        return ContractRig(backend), config


class TestLlamaCppPython(BackendContract):
    """The real llama-cpp-python server, run as gpuwarden's worker
    (gpuwarden.workers.llama_cpp_serve), and a tiny real GGUF, on the CPU."""

    @pytest.fixture(autouse=True)
    def _installed(self) -> None:
        require_llama_cpp()

    def make(self, tmp_path):
        backend = LlamaCppPythonBackend(tmp_path / "logs", settings=FAST)
        return ContractRig(backend), llama_cpp(NAME, write_tiny_llama(tmp_path / "t.gguf"))

    def request(self, rig: ContractRig) -> None:
        port, key = rig.backend.endpoint(NAME)
        assert complete(port, key)["choices"]


class TestLlamaServerStandin(BackendContract):
    """llama-server's supervision against tests/standin_server.py."""

    backend_cls: type[LlamaServerBackend] = LlamaServerBackend
    kind = "llama-server"

    def make(self, tmp_path):
        backend = self.backend_cls(tmp_path / "logs", binary=write_executable(tmp_path),
                                   settings=FAST)
        return ContractRig(backend), ModelConfig(NAME, self.kind, path=_spec(tmp_path),  # type: ignore[arg-type]
                                                 placement="cpu")


class TestLlamaCppPythonStandin(TestLlamaServerStandin):
    """The llama-cpp-python server kind, its `python -m gpuwarden.workers.llama_cpp_serve`
    argv handed to the stand-in."""

    backend_cls = LlamaCppPythonBackend
    kind = "llama-cpp"


class TestCommand(BackendContract):
    """Any command line: tests/standin_server.py run as a plain program with a health URL."""

    no_activity = "a command has no request counters: it never calls on_activity"
    no_model_file = "a command runs a program, not a model file"

    def make(self, tmp_path):
        port = free_port()
        command = (sys.executable, str(STANDIN), "--model", str(_spec(tmp_path)),
                   "--port", str(port))
        config = ModelConfig(NAME, "command", command=command, placement="cpu",
                             health_url=f"http://127.0.0.1:{port}/health")
        return ContractRig(CommandBackend(tmp_path / "logs", settings=FAST)), config
