"""What a loaded model holds is measured by pid in the GPU's process list: the pure sum
(measured_vram_mib), the simulated model's fake pid and booking, the scenario's
vram_scale knob that makes the booking differ from the estimate, and the real backend's
pids."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from pathlib import Path

import psutil
import pytest

from gpuwarden.engine.clock import FakeClock
from gpuwarden.engine.lifecycle.backend import Footprint, Launch
from gpuwarden.engine.lifecycle.crash import DeathReport
from gpuwarden.engine.lifecycle.simulated_backend import (
    PID_BASE,
    SimulatedBackend,
    footprint,
    owner,
)
from gpuwarden.engine.supervisor import llama_server
from gpuwarden.engine.supervisor.llama_server import LlamaServerBackend, _Server
from gpuwarden.engine.supervisor.process import ServerProcess
from gpuwarden.engine.telemetry.scenario import (
    Scenario,
    ScenarioError,
    SimulatedModel,
    parse_scenario,
)
from gpuwarden.engine.telemetry.simulated import SimulatedGpu, SimulatedProbe
from gpuwarden.engine.telemetry.snapshot import (
    GpuProcess,
    GpuSample,
    HostSample,
    Snapshot,
    measured_vram_mib,
)
from lifecycle_helpers import model

# --- measured_vram_mib ---------------------------------------------------------------


def proc(pid: int, mib: float | None) -> GpuProcess:
    return GpuProcess(pid, f"p{pid}", mib, "compute")


def gpu(index: int, processes: tuple[GpuProcess, ...] | None,
        available: bool = True) -> GpuSample:
    return GpuSample(index, f"GPU {index}", f"GPU-{index}", available=available,
                     processes=processes)


def snap(*gpus: GpuSample) -> Snapshot:
    return Snapshot(ts=0.0, seq=1, gpu_source="nvml", gpus=gpus, host=HostSample())


TWO = snap(gpu(0, (proc(10, 1000.0), proc(11, 250.0), proc(99, 7000.0))),
           gpu(1, (proc(10, 500.0), proc(12, None))))


def test_no_snapshot_is_not_known() -> None:
    assert measured_vram_mib(None, [10]) is None
    assert measured_vram_mib(None, [10], gpu=0) is None


def test_sums_the_pids_over_every_gpu() -> None:
    assert measured_vram_mib(TWO, [10]) == 1500.0
    assert measured_vram_mib(TWO, {10, 11}) == 1750.0
    assert measured_vram_mib(TWO, (10, 11, 12)) == 1750.0  # 12's memory is not reported


def test_only_the_named_gpu() -> None:
    assert measured_vram_mib(TWO, [10, 11], gpu=0) == 1250.0
    assert measured_vram_mib(TWO, [10, 11], gpu=1) == 500.0
    assert measured_vram_mib(TWO, [10], gpu=5) is None  # no such GPU: nothing considered


def test_known_lists_without_the_pids_read_zero() -> None:
    assert measured_vram_mib(TWO, [12345]) == 0.0
    assert measured_vram_mib(TWO, []) == 0.0
    assert measured_vram_mib(snap(gpu(0, ())), [10]) == 0.0


def test_unknown_lists_are_not_known() -> None:
    blind = snap(gpu(0, None), gpu(1, None))
    assert measured_vram_mib(blind, [10]) is None
    assert measured_vram_mib(snap(), [10]) is None  # no GPU at all
    mixed = snap(gpu(0, None), gpu(1, (proc(10, 300.0),)))
    assert measured_vram_mib(mixed, [10]) == 300.0
    assert measured_vram_mib(mixed, [10], gpu=0) is None
    assert measured_vram_mib(mixed, [10], gpu=1) == 300.0


def test_unavailable_gpus_are_not_considered() -> None:
    lost = snap(gpu(0, (proc(10, 800.0),), available=False), gpu(1, (proc(10, 200.0),)))
    assert measured_vram_mib(lost, [10]) == 200.0
    assert measured_vram_mib(lost, [10], gpu=0) is None


def test_unreported_memory_counts_zero() -> None:
    assert measured_vram_mib(snap(gpu(0, (proc(10, None),))), [10]) == 0.0
    assert measured_vram_mib(snap(gpu(0, (proc(10, float("nan")),))), [10]) == 0.0


# --- the simulated GPU: a booking under the caller's pid -----------------------------------


def test_allocate_with_a_pid_shows_under_that_pid() -> None:
    g = SimulatedGpu(0)
    g.allocate("model:chat", 3000, pid=50001)
    g.allocate("other", 1000)
    procs = g.sample().processes
    assert procs is not None
    assert {p.name: (p.pid, p.used_memory_mib) for p in procs} == {
        "model:chat": (50001, 3000.0), "other": (4001, 1000.0)}
    g.allocate("model:chat", 2000)  # no pid: keeps the one it was given
    g.allocate("other", 1500, pid=60000)  # a new pid replaces the GPU's own
    procs = g.sample().processes
    assert procs is not None
    assert {p.name: (p.pid, p.used_memory_mib) for p in procs} == {
        "model:chat": (50001, 2000.0), "other": (60000, 1500.0)}


@pytest.mark.parametrize("bad", [0, -5, True])
def test_allocate_refuses_a_bad_pid(bad: int) -> None:
    g = SimulatedGpu(0)
    with pytest.raises(ValueError, match="pid"):
        g.allocate("x", 100, pid=bad)
    assert dict(g.allocations()) == {}


# --- the simulated backend -------------------------------------------------------------


class Calls:
    def __init__(self) -> None:
        self.ready: list[tuple[int, Footprint]] = []
        self.exits: list[DeathReport] = []

    def on_ready(self, instance: int, fp: Footprint) -> None:
        self.ready.append((instance, fp))

    def on_exit(self, report: DeathReport) -> None:
        self.exits.append(report)


def sim(scenario: Scenario | None = None) -> tuple[SimulatedProbe, SimulatedBackend, FakeClock]:
    probe = SimulatedProbe(scenario=scenario or Scenario())
    clock = FakeClock()
    return probe, SimulatedBackend(probe, clock), clock


def launch(name: str, instance: int, gpu_layers: int = 32, **kw: object) -> Launch:
    cfg = model(name, vram_mib=4000.0, layers=32, **kw)
    return Launch(cfg, "gpu" if gpu_layers == 32 else "partial", gpu_layers, instance)


def snapshot_of(probe: SimulatedProbe, clock: FakeClock) -> Snapshot:
    reading = probe.sample(clock.monotonic())
    return Snapshot(ts=clock.time(), seq=1, gpu_source="simulated", gpus=reading.gpus,
                    host=HostSample())


def test_a_simulated_model_shows_under_its_pid_with_what_it_booked() -> None:
    probe, backend, clock = sim()
    calls = Calls()
    assert backend.pids("chat") == ()
    backend.start(launch("chat", 3, gpu_layers=16), calls.on_ready, calls.on_exit)
    backend.start(launch("code", 4), calls.on_ready, calls.on_exit)
    assert backend.pids("chat") == (PID_BASE + 3,)  # already while loading
    assert backend.pids("code") == (PID_BASE + 4,)
    s = snapshot_of(probe, clock)
    procs = {p.pid: p for p in s.gpus[0].processes or ()}
    assert procs[PID_BASE + 3].name == owner("chat")
    assert procs[PID_BASE + 3].used_memory_mib == 2000.0  # half the layers on the GPU
    assert procs[PID_BASE + 4].used_memory_mib == 4000.0
    assert measured_vram_mib(s, backend.pids("chat")) == 2000.0
    assert measured_vram_mib(s, backend.pids("chat"), gpu=0) == 2000.0
    backend.poll(clock.time())
    assert calls.ready == [(3, Footprint(2000.0, 2000.0)), (4, Footprint(4000.0, 0.0))]
    backend.stop("chat", 3)
    assert backend.pids("chat") == ()
    assert measured_vram_mib(snapshot_of(probe, clock), [PID_BASE + 3]) == 0.0


def test_a_crashed_model_has_no_pids_and_a_relaunch_gets_a_new_one() -> None:
    probe, backend, clock = sim()
    calls = Calls()
    backend.start(launch("chat", 1), calls.on_ready, calls.on_exit)
    assert backend.crash("chat")
    assert backend.pids("chat") == ()
    backend.start(launch("chat", 2), calls.on_ready, calls.on_exit)
    assert backend.pids("chat") == (PID_BASE + 2,)
    s = snapshot_of(probe, clock)
    assert measured_vram_mib(s, [PID_BASE + 1]) == 0.0
    assert measured_vram_mib(s, [PID_BASE + 2]) == 4000.0


def test_pids_never_collide_in_a_shared_backend() -> None:
    _, backend, _ = sim()
    calls = Calls()
    backend.start(launch("a", 1, gpu_layers=8), calls.on_ready, calls.on_exit)
    backend.start(launch("b", 1, gpu_layers=8), calls.on_ready, calls.on_exit)  # another manager
    assert len({*backend.pids("a"), *backend.pids("b")}) == 2


# --- vram_scale --------------------------------------------------------------------------

SCALED = """\
[[simulation.model]]
name = "chat"
vram_scale = 1.5

[[simulation.model]]
name = "small"
vram_scale = 0.25
"""


@pytest.mark.parametrize(("name", "scale"), [("chat", 1.5), ("small", 0.25), ("plain", 1.0)])
@pytest.mark.parametrize("layers", [32, 16, 8])
def test_vram_scale_books_scale_times_the_estimate(name: str, scale: float, layers: int) -> None:
    probe, backend, clock = sim(parse_scenario(SCALED, "scenario.toml"))
    assert probe.scenario.vram_scale(name) == scale
    calls = Calls()
    run = launch(name, 7, gpu_layers=layers)
    backend.start(run, calls.on_ready, calls.on_exit)
    expected = scale * 4000.0 * layers / 32
    assert backend.footprint(run).vram_mib == pytest.approx(expected)
    assert footprint(run).vram_mib == pytest.approx(4000.0 * layers / 32)  # the estimate
    assert dict(probe.gpu(0).allocations())[owner(name)] == pytest.approx(expected)
    s = snapshot_of(probe, clock)
    assert measured_vram_mib(s, backend.pids(name)) == pytest.approx(expected)
    backend.poll(clock.time())
    [(instance, fp)] = calls.ready
    assert instance == 7
    assert fp.vram_mib == pytest.approx(expected)  # what was really booked
    assert fp.ram_mib == pytest.approx(4000.0 * (1 - layers / 32))  # RAM is not scaled


def test_vram_scale_can_make_a_model_run_out_of_memory() -> None:
    scenario = parse_scenario('[[simulation.model]]\nname = "big"\nvram_scale = 10\n')
    probe, backend, _ = sim(scenario)
    calls = Calls()
    backend.start(launch("big", 1), calls.on_ready, calls.on_exit)
    [death] = calls.exits
    assert death.exit_code == 1
    assert "out of memory" in death.log_tail[0]
    assert backend.pids("big") == ()
    assert dict(probe.gpu(0).allocations()) == {}


def test_without_a_probe_nothing_is_scaled() -> None:
    backend = SimulatedBackend(None, FakeClock())
    run = launch("chat", 1)
    assert backend.footprint(run) == footprint(run)


# --- the knob in the scenario file ---------------------------------------------------------


def parse(content: str) -> Scenario:
    return parse_scenario(content, "scenario.toml")


def error_of(content: str) -> ScenarioError:
    with pytest.raises(ScenarioError) as info:
        parse(content)
    return info.value


def test_model_tables_parse_with_their_lines_and_defaults() -> None:
    scenario = parse("[simulation]\ngpus = 1\n" + SCALED + '[[simulation.model]]\nname = "x"\n')
    assert scenario.models == (
        SimulatedModel("chat", 1.5, 3), SimulatedModel("small", 0.25, 7),
        SimulatedModel("x", 1.0, 10))
    assert scenario.model("small") == SimulatedModel("small", 0.25, 7)
    assert scenario.model("nope") is None
    assert scenario.vram_scale("nope") == 1.0
    assert parse("").models == ()
    assert isinstance(parse('[[simulation.model]]\nname = "a"\nvram_scale = 2\n')
                      .vram_scale("a"), float)


@pytest.mark.parametrize(
    ("body", "line", "field", "message"),
    [
        ("name = 3\n", 2, "name", "[[simulation.model]] 1: 'name' must be a non-empty string, "
         "got 3"),
        ("name = ''\n", 2, "name", "'name' must be a non-empty string"),
        ("vram_scale = 2\n", 1, "name", "[[simulation.model]] 1: missing required key 'name'"),
        ("name = 'a'\nvram_scale = 0\n", 3, "vram_scale",
         "[[simulation.model]] 1: 'vram_scale' must be a positive number, got 0"),
        ("name = 'a'\nvram_scale = -1.5\n", 3, "vram_scale", "must be a positive number"),
        ("name = 'a'\nvram_scale = 'big'\n", 3, "vram_scale", "got 'big'"),
        ("name = 'a'\nvram_scale = true\n", 3, "vram_scale", "got true"),
        ("name = 'a'\nvram_scale = nan\n", 3, "vram_scale", "must be a positive number"),
        ("name = 'a'\nvram_factor = 2\n", 3, "vram_factor",
         "[[simulation.model]] 1: unknown key 'vram_factor'; allowed keys: name, vram_scale"),
    ],
)
def test_bad_model_tables(body: str, line: int, field: str, message: str) -> None:
    err = error_of("[[simulation.model]]\n" + body)
    assert err.line == line
    assert err.field == field
    assert err.path == "scenario.toml"
    assert message in str(err)
    assert str(err).startswith(f"scenario.toml:{line}: [[simulation.model]] 1: ")


def test_the_second_table_is_named_with_its_own_line() -> None:
    content = "[simulation]\ngpus = 1\n" + SCALED + "[[simulation.model]]\nname = 'c'\nx = 1\n"
    err = error_of(content)
    assert str(err).startswith("scenario.toml:12: [[simulation.model]] 3: unknown key 'x'")


def test_a_model_described_twice() -> None:
    err = error_of("[[simulation.model]]\nname = 'a'\n[[simulation.model]]\nname = 'a'\n")
    assert str(err) == ("scenario.toml:4: [[simulation.model]] 2: model 'a' is already "
                        "described by [[simulation.model]] 1")
    assert err.field == "name"


def test_model_must_be_an_array_of_tables() -> None:
    err = error_of("[simulation]\nmodel = 3\n")
    assert err.line == 2
    assert "'simulation.model' must be an array of tables" in str(err)
    err = error_of("[simulation]\nmodel = [3]\n")
    assert "[[simulation.model]] 1 must be a table, got 3" in str(err)


def test_unknown_simulation_key_lists_model() -> None:
    err = error_of("[simulation]\nmodels = 1\n")
    assert "allowed keys: gpu, gpus, model, seed" in str(err)


# --- llama-server: the server and its children ----------------------------------------------


def test_llama_server_pids_of_a_model_not_running(tmp_path: Path) -> None:
    backend = LlamaServerBackend(tmp_path)
    assert backend.pids("chat") == ()


def _plant(backend: LlamaServerBackend, tmp_path: Path, argv: list[str]) -> ServerProcess:
    proc = ServerProcess.launch(argv, log_path=tmp_path / "s.log", env=dict(os.environ),
                                on_exit=lambda ex: None)
    server = _Server(launch("chat", 1), 1, "key", lambda i, fp: None, lambda r: None, None,
                     proc=proc)
    backend._servers["chat"] = server
    return proc


def _kill_group(proc: ServerProcess) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # the server and the children it started
    deadline = time.monotonic() + 5
    while proc.alive and time.monotonic() < deadline:
        time.sleep(0.01)


@pytest.mark.skipif(sys.platform != "linux", reason="process groups as on Linux")
def test_llama_server_pids_are_the_server_and_its_descendants(tmp_path: Path) -> None:
    backend = LlamaServerBackend(tmp_path)
    proc = _plant(backend, tmp_path, ["sh", "-c", "sleep 30 & sh -c 'sleep 30 & wait' & wait"])
    try:
        deadline = time.monotonic() + 5
        while len(backend.pids("chat")) < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        pids = backend.pids("chat")
        assert pids[0] == proc.pid
        assert len(pids) == 4  # sh, sleep, sh, sleep
        assert set(pids[1:]) == {c.pid for c in psutil.Process(proc.pid).children(True)}
    finally:
        _kill_group(proc)
    assert backend.pids("chat") == ()  # dead: not running


def test_llama_server_pids_without_psutil_access_is_just_the_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = LlamaServerBackend(tmp_path)
    proc = _plant(backend, tmp_path, ["sleep", "30"])
    try:
        def denied(pid: int) -> psutil.Process:
            raise psutil.AccessDenied(pid)

        monkeypatch.setattr(llama_server.psutil, "Process", denied)
        assert backend.pids("chat") == (proc.pid,)
    finally:
        monkeypatch.undo()
        _kill_group(proc)
