"""The engine's one face: telemetry, the lifecycle manager, the backends, the journal,
the persisted hints and the config file, behind one object.

The window (through its bridge), `gpuwarden headless` and any later front end hold an
:class:`Engine` and nothing else: commands in (each answers done, or refused and why, and
never raises for a user's mistake), immutable views and events out, and one
:meth:`Engine.step` that every driver calls and that says when it wants to be called
again. Something that happens between two steps and brings a deadline forward (a
process dies and its restart is scheduled) calls the driver's waker at once.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Callable, Collection, Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

from gpuwarden.engine.clock import Clock, SystemClock
from gpuwarden.engine.config_watch import ConfigWatcher
from gpuwarden.engine.details import ModelDetails, build_details
from gpuwarden.engine.events import (
    ConfigProblemFound,
    ConfigReloaded,
    Event,
    EventBus,
    Listener,
    ScenarioStep,
    StorageError,
    StorageProblem,
    StorageRecovered,
)
from gpuwarden.engine.journal import Journal, default_journal_path
from gpuwarden.engine.lifecycle.backend import Backend
from gpuwarden.engine.lifecycle.config import Config, EvictionPolicy
from gpuwarden.engine.lifecycle.config_diff import describe
from gpuwarden.engine.lifecycle.config_file import ConfigFile
from gpuwarden.engine.lifecycle.core import AdminResult
from gpuwarden.engine.lifecycle.hints import HintStore, default_hints_path
from gpuwarden.engine.lifecycle.manager import LifecycleManager
from gpuwarden.engine.lifecycle.planning import Planner
from gpuwarden.engine.lifecycle.policy import LoadHow, LoadPreview
from gpuwarden.engine.lifecycle.simulated_backend import SimulatedBackend
from gpuwarden.engine.paths import data_dir
from gpuwarden.engine.runtime import TelemetryOptions, build_sampler
from gpuwarden.engine.safety.overhead import OverheadBook
from gpuwarden.engine.safety.preflight import Verdict as PreflightVerdict
from gpuwarden.engine.safety.verdict import Verdict
from gpuwarden.engine.supervisor.command import CommandBackend
from gpuwarden.engine.supervisor.llama_cpp_python import LlamaCppPythonBackend
from gpuwarden.engine.supervisor.llama_server import LlamaServerBackend
from gpuwarden.engine.supervisor.locate import find_fit_params
from gpuwarden.engine.supervisor.registry import ServerRegistry, default_registry_path
from gpuwarden.engine.supervisor.takeover import load_again, take_over
from gpuwarden.engine.supervisor.torch_worker import TorchBackend
from gpuwarden.engine.telemetry.sampler import Sampler
from gpuwarden.engine.telemetry.scenario import Scenario, StepCursor, check_crash_steps
from gpuwarden.engine.telemetry.simulated import SimulatedProbe
from gpuwarden.engine.telemetry.simulated_ram import HostWithSimulatedRam, SimulatedRam
from gpuwarden.engine.telemetry.snapshot import HistoryFrame, Snapshot, measured_vram_mib
from gpuwarden.engine.views import TEXT_BACKENDS, ModelRow, model_row

log = logging.getLogger(__name__)

MIN_WAIT_S = 0.001  # a step never asks to be called again sooner than this
GIB = 1024.0


@dataclass(frozen=True)
class ServicePaths:
    journal: Path | None
    hints: Path | None
    logs: Path | None = None  # model server logs; None: <data folder>/logs
    registry: Path | None = None  # servers we started, for adoption; None: none kept
    overhead: Path | None = None  # the learned CUDA overhead per GPU; None: in memory only


# The backends that serve /v1/chat/completions (a command's program may serve anything).
def _configured_llama_server() -> Path | None:
    value = os.environ.get("GPUWARDEN_LLAMA_SERVER")
    return Path(value) if value else None


def default_service_paths() -> ServicePaths:
    return ServicePaths(journal=default_journal_path(), hints=default_hints_path(),
                        registry=default_registry_path(),
                        overhead=data_dir() / "gpu-overhead.json")


class Engine:
    """Build it with :meth:`build` (from options) or hand it a sampler (tests, scripts).
    ``config_path``: the file to watch and re-read (None: nothing to watch)."""

    def __init__(self, config: Config, sampler: Sampler, paths: ServicePaths,
                 problems: Iterable[object] = (), config_path: Path | None = None) -> None:
        if isinstance(sampler.gpu_probe, SimulatedProbe):  # refused before anything opens
            check_crash_steps(sampler.gpu_probe.scenario,
                              {m.name: m.backend for m in config.models})
        self._sampler = sampler
        self._clock = sampler.clock
        self._bus = sampler.bus
        self._config_path = config_path
        self._journal = Journal(paths.journal) if paths.journal is not None else None
        if self._journal is not None:
            self._bus.subscribe(self._journal_write)
        self._simulated_ram = SimulatedRam()
        if self._simulated_probe() is not None:  # --simulate: CPU models book RAM too
            sampler.replace_host_probe(HostWithSimulatedRam(sampler.host_probe,
                                                            self._simulated_ram))
        self._simulated_backend = SimulatedBackend(self._simulated_probe(), self._clock,
                                                   self._simulated_ram)
        self._registry = (ServerRegistry(paths.registry, publish=self._bus.publish)
                          if paths.registry is not None else None)
        self._file_problems: list[StorageProblem] = []  # published once all is built
        self.startup_problems = self._noted(paths.registry, self._registry.load()
                                            if self._registry is not None else [])
        logs = paths.logs or data_dir() / "logs"
        self._llama_server = LlamaServerBackend(logs, binary=_llama_binary(config),
                                                registry=self._registry, notify=self._bus.publish)
        # The backends whose models are processes of their own (stopped and waited for on
        # close); only llama-server's can be left running for the next gpuwarden.
        self._processes: dict[str, LlamaServerBackend] = {
            "llama-server": self._llama_server,
            "llama-cpp": LlamaCppPythonBackend(logs, notify=self._bus.publish),
            "command": CommandBackend(logs, notify=self._bus.publish),
            "torch": TorchBackend(logs, notify=self._bus.publish)}
        backends: dict[str, Backend] = {"simulated": self._simulated_backend,
                                        **self._processes}
        self._hints = HintStore(paths.hints, self._clock) if paths.hints is not None else None
        self.startup_problems += self._noted(paths.hints, self._hints.load()
                                             if self._hints is not None else [])
        overhead = OverheadBook(paths.overhead, self._clock)
        self.startup_problems += self._noted(paths.overhead, overhead.load())
        self._planner = Planner(overhead, fit_tool=self._fit_tool)
        self._manager = LifecycleManager(config, backends, bus=self._bus, clock=self._clock,
                                         hints=self._hints, measure=self._measure,
                                         planner=self._planner)
        self._manager.set_waker(self._wake)
        self._sampler.subscribe(self._manager.on_snapshot)
        sim = self._simulated_probe()
        scenario: Scenario | None = sim.scenario if sim is not None else None
        self._crashes = StepCursor(scenario.steps if scenario else (), actions=("crash",))
        self._started = self._clock.monotonic()
        self._next_sample = self._started
        self._waker: Callable[[], None] = _nothing
        self._reload_wanted = threading.Event()
        self._running = False
        self._watcher: ConfigWatcher | None = None
        self._config_file = ConfigFile(config_path) if config_path is not None else None
        problems = list(problems)
        # Nothing in the config file could be used: the servers an earlier gpuwarden left
        # running are neither adopted nor stopped (every model would look removed) until
        # the file can be read.
        self._takeover_waits = any(getattr(p, "whole_file", False) for p in problems)
        for problem in problems:
            self._bus.publish(ConfigProblemFound(message=str(problem)))
        for found in self._file_problems:
            self._bus.publish(found)

    @classmethod
    def build(cls, config: Config, telemetry: TelemetryOptions, paths: ServicePaths, *,
              clock: Clock | None = None, problems: Iterable[object] = (),
              config_path: Path | None = None) -> Engine:
        clock = clock or SystemClock()
        sampler = build_sampler(telemetry, bus=EventBus(clock=clock), clock=clock)
        return cls(config, sampler, paths, problems, config_path)

    # -- driving ---------------------------------------------------------------------

    def set_waker(self, wake: Callable[[], None]) -> None:
        """The driver's way to be woken early, callable from any thread."""
        self._waker = wake

    def _wake(self) -> None:
        self._waker()

    def start(self, watch_config: bool = True) -> None:
        """On the driver's thread: adopt servers left running, take a first sample (so
        autostart loads know what fits), autostart, and watch the config file. Once: a
        second call does nothing."""
        if self._running:
            return
        self._running = True
        replaced = self._adopt_running_servers() if not self._takeover_waits else []
        if self._takeover_waits and (left := self._llama_server.leftovers()):
            self._bus.publish(ConfigProblemFound(
                message=f"{len(left)} llama-server(s) left running by an earlier gpuwarden "
                        f"({', '.join(sorted({r.model for r in left}))}) are left alone until "
                        "the config file can be read; then they are adopted or stopped"))
        self._planner.warm(self._manager.config.models)
        self._sample(self._clock.monotonic())
        load_again(self._manager, self._bus, replaced)
        self._manager.autostart()
        if watch_config and self._config_path is not None:
            try:  # the default folder may not exist yet: the file can appear later
                self._config_path.parent.mkdir(parents=True, exist_ok=True)
            except OSError:
                log.warning("cannot create %s", self._config_path.parent, exc_info=True)
            self._watcher = ConfigWatcher(self._config_path, self.request_reload)
            self._watcher.start()

    def step(self, now: float | None = None) -> float:
        """Do what is due (a sample, restarts, time-outs, a config reload) and return the
        seconds until the next call is wanted. ``now``: monotonic seconds."""
        now = self._clock.monotonic() if now is None else now
        sample_due = now >= self._next_sample
        if (sample_due or self._reload_wanted.is_set()) and self._config_changed():
            self.reload_config()  # seen by the watcher, or at a sample if the watcher missed it
        self._reload_wanted.clear()
        if sample_due:
            self._sample(now)
        self._manager.tick()
        return self._until_next(now)

    def _config_changed(self) -> bool:
        return self._config_file is not None and self._config_file.changed()

    def _sample(self, now: float) -> None:
        self._sampler.tick()
        interval = self._sampler.interval_s
        self._next_sample = max(self._next_sample + interval, now + MIN_WAIT_S)
        if self._next_sample - now > interval:  # fell behind (suspend, slow probe)
            self._next_sample = now + interval
        for step in self._crashes.due(now - self._started):
            model = step.text("model")
            idle = "" if model in self._simulated_backend.running() else " (it was not running)"
            self._bus.publish(ScenarioStep(action="crash", detail=step.describe() + idle))
            self._simulated_backend.crash(model, int(step.number("exit_code")))

    def _until_next(self, now: float) -> float:
        wait = self._next_sample - now
        deadline = self._manager.next_deadline()  # wall clock
        if deadline is not None:
            wait = min(wait, deadline - self._clock.time())
        return max(MIN_WAIT_S, wait)

    @property
    def interval_s(self) -> float:
        return self._sampler.interval_s

    @property
    def config(self) -> Config:
        """The settings in force (a frozen value; a reload replaces it)."""
        return self._manager.config

    @property
    def config_path(self) -> Path | None:
        """The config file read and watched (None: none; it may not exist yet)."""
        return self._config_path

    def close(self, leave_running: bool = False) -> None:
        """Stop every model cleanly (or leave the servers running for the next gpuwarden to
        adopt), save the hints, close the journal and the probes."""
        if self._watcher is not None:
            self._watcher.stop()
        if leave_running:  # what cannot be adopted is stopped all the same: no orphan
            self._manager.shutdown(keep=("llama-server",))
            self._llama_server.detach()
        else:
            self._manager.shutdown()
        for backend in self._processes.values():
            if backend is not self._llama_server or not leave_running:
                backend.wait_stopped()
        self._sampler.close()
        if self._journal is not None:
            self._journal.close()

    # -- commands ----------------------------------------------------------------------

    def load(self, name: str, how: LoadHow = "auto") -> AdminResult:
        """Load ``name``. When it does not fit whole: ``auto`` swaps others out if that
        frees enough, else loads the layers that fit (placement auto); ``swap`` only
        swaps; ``partial`` loads the layers that fit and moves nothing."""
        if how not in get_args(LoadHow):
            return AdminResult(False, f"how to load must be one of "
                                      f"{', '.join(get_args(LoadHow))}, not {how!r}")
        return self._manager.load(name, how=how)

    def unload(self, name: str) -> AdminResult:
        return self._manager.unload(name)

    def offload(self, name: str) -> AdminResult:
        return self._manager.offload(name)

    def restart(self, name: str) -> AdminResult:
        return self._manager.restart(name)

    def set_policy(self, name: str, eviction: EvictionPolicy | None) -> AdminResult:
        return self._manager.set_policy(name, eviction)

    def set_priority(self, name: str, priority: int | None) -> AdminResult:
        return self._manager.set_priority(name, priority)

    def pin(self, name: str) -> AdminResult:
        return self._manager.pin(name)

    def unpin(self, name: str) -> AdminResult:
        return self._manager.unpin(name)

    def make_room(self, gpu: int, gib: float | None) -> AdminResult:
        """Free ``gib`` GiB of VRAM on ``gpu`` now (None: all but pinned models)."""
        if gib is not None and (isinstance(gib, bool) or not isinstance(gib, int | float)
                                or not math.isfinite(gib) or gib <= 0):
            return AdminResult(False, f"the room to make must be a number of GiB above 0, "
                                      f"not {gib!r}")
        return self._manager.make_room(gpu, None if gib is None else gib * GIB)

    def pause_automation(self, paused: bool = True) -> AdminResult:
        """Pause (False: resume) gpuwarden's own decisions (idle unloads, pressure relief,
        restores, returns to the GPU, restarts after a crash); the user's commands and the
        safety limits act as always."""
        if not isinstance(paused, bool):
            return AdminResult(False, f"paused must be true or false, not {paused!r}")
        return self._manager.pause_automation(paused)

    @property
    def automation_paused(self) -> bool:
        return self._manager.paused

    def emergency_stop(self, gpu: int | None = None) -> AdminResult:
        """Stop every model on ``gpu`` (None: all of them) now, as a hard safety limit
        would; nothing restarts by itself."""
        if gpu is not None and (isinstance(gpu, bool) or not isinstance(gpu, int)):
            return AdminResult(False, f"a GPU is given by its index, not {gpu!r}")
        return self._manager.emergency_stop(gpu)

    def notify_access(self, name: str) -> None:
        self._manager.notify_access(name)

    def in_use(self, name: str) -> AbstractContextManager[None]:
        """While inside, ``name`` serves a request: it is never evicted, offloaded or
        unloaded as idle; entering counts as use, as :meth:`notify_access` does, and its
        idle clock starts again on leaving. KeyError for a model that is not configured."""
        return self._manager.in_use(name)

    def request_reload(self) -> None:
        """Re-read the config file at the next step (from any thread)."""
        self._reload_wanted.set()
        self._wake()

    def reload_config(self) -> AdminResult:
        """Re-read the config file now and apply what changed; a broken edit changes
        nothing that runs."""
        if self._config_file is None:
            return AdminResult(False, "gpuwarden was started without a config file")
        path = self._config_file.path
        diff, problems = self._config_file.read(self._manager.config)
        for problem in problems:
            self._bus.publish(ConfigProblemFound(message=str(problem)))
        message = describe(diff)
        if "sample_interval_s" in diff.settings_changed and diff.unusable is None:
            message += " (the sample interval applies at the next start)"
        if "api" in diff.settings_changed and diff.unusable is None:
            message += " (the [api] settings apply at the next start)"
        if diff.unusable is None:
            self._planner.warm(diff.config.models)  # outside the lock: the fit tool may run
            if self._takeover_waits:  # the first usable config since an unusable start:
                self._takeover_waits = False  # adopt or stop what runs, then autostart
                self._manager.reconfigure(diff, autostart=False)
                load_again(self._manager, self._bus, self._adopt_running_servers())
                self._manager.autostart()
            else:
                self._manager.reconfigure(diff)
            if "llama_server" in diff.settings_changed:
                self._llama_server.set_binary(_llama_binary(diff.config))
        self._bus.publish(ConfigReloaded(path=str(path),
                                         added=tuple(m.name for m in diff.added),
                                         removed=diff.removed,
                                         changed=tuple(m.name for m in diff.changed),
                                         settings=diff.settings_changed, message=message))
        return AdminResult(diff.unusable is None, message)

    def use_simulated(self, count: int = 1) -> None:
        """Switch the GPU source to simulated GPUs (the no-driver banner's button)."""
        probe = SimulatedProbe(count=count)
        self._sampler.replace_gpu_probe(probe)
        self._simulated_backend.attach(probe)
        if not isinstance(self._sampler.host_probe, HostWithSimulatedRam):
            self._sampler.replace_host_probe(HostWithSimulatedRam(self._sampler.host_probe,
                                                                  self._simulated_ram))
        self._next_sample = self._clock.monotonic()

    # -- views -------------------------------------------------------------------------

    def models(self) -> tuple[ModelRow, ...]:
        """One row per configured model, in config order."""
        now = self._clock.time()
        paused = self._manager.paused
        return tuple(model_row(s, now, self._manager.pids(s.name), paused)
                     for s in self._manager.states().values())

    def model(self, name: str) -> ModelRow | None:
        return next((row for row in self.models() if row.name == name), None)

    def details(self, name: str) -> ModelDetails | None:
        """What the details panel shows about ``name`` (None: no such model): its settings
        and where each came from, its history and crashes, and the end of its log (read
        from the file: call it on the driver's thread, not a UI thread)."""
        state = self._manager.states().get(name)
        if state is None:
            return None
        config = self._manager.config.model(name) or state.config
        log_path = None if state.config.backend == "simulated" else \
            self._llama_server._log_path(name)  # llama-cpp logs in the same folder too
        return build_details(state, config, self._bus.since(0), log_path)

    def preflight(self, name: str) -> PreflightVerdict | None:
        """Whether ``name`` fits now, as its load would be priced: ``fits``,
        ``fits-partially`` (N of M layers), ``does-not-fit`` or ``refused`` (its file),
        with the numbers; None for an unknown model."""
        return self._manager.preflight(name)

    def load_preview(self, name: str) -> LoadPreview | AdminResult:
        """What a load of ``name`` would do now (fits whole; the models a swap would
        unload; the layers that fit without moving anything), or why it cannot load."""
        return self._manager.load_preview(name)

    def endpoint(self, name: str) -> tuple[str, str] | None:
        """Where a ready text model answers (``("http://127.0.0.1:PORT", api_key)``), for
        the panel's own test prompt; None when it is not ready or its backend serves no
        OpenAI-compatible API (simulated, command)."""
        state = self._manager.states().get(name)
        backend = self._processes.get(state.config.backend) if state is not None else None
        if state is None or not state.loaded or backend is None or \
                state.config.backend not in TEXT_BACKENDS:
            return None
        found = backend.endpoint(name)
        return (f"http://127.0.0.1:{found[0]}", found[1]) if found is not None else None

    def verdicts(self) -> Mapping[str, Verdict]:
        """The safety verdict of every GPU (``"gpu0"`` ...) and of the host (``"host"``),
        from the last sample."""
        return self._manager.safety_verdicts()

    def snapshot(self) -> Snapshot | None:
        return self._sampler.last

    def history(self, since: float | None = None) -> HistoryFrame:
        return self._sampler.history.frame(since=since)

    def events_since(self, seq: int = 0) -> list[Event]:
        """The kept events after ``seq`` (0: all kept), oldest first."""
        return self._bus.since(seq)

    def subscribe(self, listener: Listener) -> None:
        """``listener`` gets every event, in ``seq`` order, never while the engine's lock
        is held (it may be called from a backend's thread)."""
        self._bus.subscribe(listener)

    def unsubscribe(self, listener: Listener) -> None:
        self._bus.unsubscribe(listener)

    def publish(self, event: Event) -> None:
        """An event of a driver's own (a control API that could not start), to every
        listener and the journal like the engine's."""
        self._bus.publish(event)

    @property
    def ready(self) -> bool:
        """Started, and running on a config file it could read (the API's readiness)."""
        return self._running and not self._takeover_waits

    # -- inside ------------------------------------------------------------------------

    def _adopt_running_servers(self) -> list[str]:
        """Take over the llama-servers an earlier gpuwarden left running: adopt those the
        config would launch the same way now, stop the rest before anything starts.
        Returns the models stopped for other settings, to be loaded again."""
        return take_over(self._llama_server, self._manager, self._bus)

    def _fit_tool(self) -> Path | None:
        """llama.cpp's fit tool beside the llama-server that would run (None: not built)."""
        try:
            server: Path | None = self._llama_server.find_binary()
        except FileNotFoundError:
            server = None
        return find_fit_params(server)

    def _simulated_probe(self) -> SimulatedProbe | None:
        probe = self._sampler.gpu_probe
        return probe if isinstance(probe, SimulatedProbe) else None

    def _measure(self, pids: Collection[int]) -> float | None:
        """VRAM these processes hold right now, from the GPU probe's own process lists."""
        return measured_vram_mib(self._sampler.read_processes(), pids)

    def _noted(self, path: Path | None, problems: Iterable[object]) -> list[str]:
        """Problems reading one of gpuwarden's own files (records, hints, overhead): kept
        to be published as storage.problem events, and returned for start-up to print."""
        texts = [str(p) for p in problems]
        self._file_problems += [StorageProblem(path=str(path or ""), message=t) for t in texts]
        return texts

    def _journal_write(self, event: Event) -> None:
        """One storage.error when an outage begins (events that fail meanwhile, that one
        included, are only counted) and one storage.recovered when it ends. Both are
        published from this listener, so the bus delivers them after ``event``."""
        journal = self._journal
        assert journal is not None
        was_failing = journal.last_error is not None
        if journal.write(event):
            if was_failing and journal.last_gap is not None:
                self._bus.publish(StorageRecovered(path=str(journal.path),
                                                   message=journal.last_gap.describe(),
                                                   missed=journal.last_gap.missed))
        elif not was_failing and journal.last_error is not None:
            self._bus.publish(StorageError(
                path=str(journal.path), message=f"{journal.last_error}; events are not "
                "recorded in the journal until it can be written again"))


def _llama_binary(config: Config) -> Path | None:
    return config.llama_server or _configured_llama_server()


def _nothing() -> None:
    return None
