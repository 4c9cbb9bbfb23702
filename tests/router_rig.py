"""A live control API over an engine that runs real llama-servers on a simulated GPU, for
the router's tests and bench/router.py.

The engine runs on real time (its own driver thread calls ``step`` as headless does),
plus jumps a test may make (``rig.clock.jump``: "a minute later"). The simulated GPU
books what each llama-server would hold (the estimate its load was planned with) from
``model.loading`` until it ends, so the GPU's free memory is what the pre-flight and a
swap see; a booking that does not fit is kept in ``rig.problems``."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from gpuwarden.api.server import ApiServer
from gpuwarden.api.token import read_token
from gpuwarden.engine.events import Event, EventBus
from gpuwarden.engine.facade import Engine, ServicePaths
from gpuwarden.engine.lifecycle.config import ApiConfig, Config, ModelConfig, RestartConfig
from gpuwarden.engine.runtime import SimulateSpec, TelemetryOptions, build_sampler
from gpuwarden.engine.safety.limits import SafetyConfig
from gpuwarden.engine.telemetry.simulated import SimulatedOutOfMemory, SimulatedProbe
from supervision_rig import EventWaiter

ONE_GPU_8_GIB = "[simulation]\ngpus = 1\n[[simulation.gpu]]\nmemory_total_mib = 8192\n"
INTERVAL_S = 0.25


class JumpingClock:
    """The real clock, plus the jumps a test makes (never back)."""

    def __init__(self) -> None:
        self._ahead = 0.0

    def time(self) -> float:
        return time.time() + self._ahead

    def monotonic(self) -> float:
        return time.monotonic() + self._ahead

    def jump(self, seconds: float) -> None:
        self._ahead += seconds


def llama(name: str, path: Path, **kw: object) -> ModelConfig:
    """A tiny real model for llama-server on GPU 0, 4000 MiB as the pre-flight prices it
    (two do not fit the 8 GiB simulated GPU), kept until a swap or a time-out takes it."""
    base: dict[str, object] = {
        "backend": "llama-server", "path": path, "placement": "gpu", "vram_mib": 4000.0,
        "context_size": 256, "args": ("--threads", "1", "--parallel", "1"),
        "eviction": "pressure"}
    base.update(kw)
    return ModelConfig(name=name, **base)  # type: ignore[arg-type]


@dataclass
class RouterRig:
    engine: Engine
    clock: JumpingClock
    waiter: EventWaiter
    url: str
    token: str
    client: httpx.Client  # carries the token
    problems: list[str] = field(default_factory=list)

    @property
    def events(self) -> list[Event]:
        return self.waiter.events

    def sampled_after(self, moment: float, timeout: float = 10.0) -> bool:
        """Whether the engine took a sample after ``moment`` (its clock) within
        ``timeout`` real seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            snap = self.engine.snapshot()
            if snap is not None and snap.ts > moment:
                return True
            threading.Event().wait(0.02)
        return False


class _Driver:
    """The engine's driver thread, which also books and frees the simulated GPU's memory
    (on the thread that samples it)."""

    def __init__(self, engine: Engine, probe: SimulatedProbe, problems: list[str]) -> None:
        self._engine, self._probe, self._problems = engine, probe, problems
        self._todo: list[Event] = []
        self._lock = threading.Lock()
        self._wake, self._stop, self.started = (threading.Event(), threading.Event(),
                                                threading.Event())
        engine.subscribe(self._heard)
        self._thread = threading.Thread(target=self._run, name="engine", daemon=True)
        self._thread.start()

    def _heard(self, event: Event) -> None:
        if event.type in ("model.loading", "model.unloaded", "model.crashed"):
            with self._lock:
                self._todo.append(event)
            self._wake.set()

    def _run(self) -> None:
        self._engine.set_waker(self._wake.set)
        self._engine.start(watch_config=False)
        self.started.set()
        while not self._stop.is_set():
            self._wake.clear()
            self._book()
            self._wake.wait(self._engine.step())

    def _book(self) -> None:
        with self._lock:
            todo, self._todo = self._todo, []
        gpu = self._probe.gpu(0)
        for event in todo:
            name = event.to_dict()["model"]
            if event.type != "model.loading":
                gpu.release(name)
                continue
            row = self._engine.model(name)
            if row is None or event.to_dict().get("gpu") is None or not row.vram_est_mib:
                continue
            try:
                gpu.allocate(name, row.vram_est_mib)
            except SimulatedOutOfMemory as exc:
                self._problems.append(str(exc))

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(10)


@contextmanager
def router_rig(tmp_path: Path, binary: Path, *models: ModelConfig,
               scenario: str = ONE_GPU_8_GIB, restart: RestartConfig | None = None,
               safety: SafetyConfig | None = None) -> Iterator[RouterRig]:
    clock = JumpingClock()
    path = tmp_path / "scenario.toml"
    path.write_text(scenario)
    options = TelemetryOptions(simulate=SimulateSpec(scenario=path), interval_s=INTERVAL_S)
    sampler = build_sampler(options, bus=EventBus(clock=clock), clock=clock)
    assert isinstance(sampler.gpu_probe, SimulatedProbe)
    config = Config(models=models, restart=restart or RestartConfig(),
                    safety=safety or SafetyConfig(), llama_server=binary)
    engine = Engine(config, sampler, ServicePaths(None, None, logs=tmp_path / "logs"))
    waiter = EventWaiter(engine)
    problems: list[str] = []
    driver = _Driver(engine, sampler.gpu_probe, problems)
    folder = tmp_path / "data"
    server = ApiServer(engine, ApiConfig(port=0), folder)
    try:
        assert driver.started.wait(30), "the engine did not start"
        url = server.start()
        assert url is not None, [e.to_dict() for e in waiter.events]
        token = read_token(folder)
        with httpx.Client(base_url=url, timeout=60,
                          headers={"Authorization": f"Bearer {token}"}) as client:
            yield RouterRig(engine, clock, waiter, url, token, client, problems)
    finally:
        server.stop()
        driver.stop()
        engine.close()
