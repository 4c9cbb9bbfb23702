"""The llama-server backend: real llama.cpp server processes, supervised.

Launch: 127.0.0.1 only, a free port, a fresh API key per launch, `-ngl` from the
placement the lifecycle manager chose, `--metrics` so real use from any client is seen.
Readiness: /health every 250 ms. Watching: a thread blocked in wait() reports death at
once; /health every 5 s (2 s timeout, 3 misses = hung, killed); /metrics every second.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from gpuwarden.engine.events import Event, StorageError, StorageRecovered
from gpuwarden.engine.lifecycle.backend import (
    ActivityCallback,
    ExitCallback,
    Footprint,
    Launch,
    ReadyCallback,
)
from gpuwarden.engine.lifecycle.config import ModelConfig
from gpuwarden.engine.lifecycle.crash import DeathReport
from gpuwarden.engine.lifecycle.estimate import estimate_vram_mib
from gpuwarden.engine.supervisor import http, logfile
from gpuwarden.engine.supervisor.launch import (
    free_port,
    gpu_environment,
    launch_key,
    log_file_name,
    server_argv,
)
from gpuwarden.engine.supervisor.leftovers import argv_changes, stop_servers
from gpuwarden.engine.supervisor.locate import cannot_run, find_llama_server
from gpuwarden.engine.supervisor.marker import marker_env
from gpuwarden.engine.supervisor.oom import OomWatch
from gpuwarden.engine.supervisor.process import Exit, ServerProcess
from gpuwarden.engine.supervisor.registry import (
    ServerRecord,
    ServerRegistry,
    find_marked,
    process_matches,
)
from gpuwarden.engine.supervisor.watch import ActivityTracker, HangDetector, WatchSettings

log = logging.getLogger(__name__)

PORT_RETRIES = 3
FAMILY_TTL_S = 5.0  # a server's descendants are read again after this (NVML's own pace)
FAST_READY_WINDOW_S = 0.5
FAST_READY_POLL_S = 0.025
_BIND_FAILED = re.compile(r"couldn't bind|address already in use", re.IGNORECASE)
_MIB = 1024.0 * 1024.0


@dataclass
class _Server:
    launch: Launch
    port: int
    api_key: str
    on_ready: ReadyCallback
    on_exit: ExitCallback
    on_activity: ActivityCallback | None
    attempt: int = 0
    binary: Path | None = None  # None only for an adopted server (nothing to launch)
    proc: ServerProcess | None = None
    oom: OomWatch | None = None
    ready: bool = False
    hung: bool = False
    stop: threading.Event = field(default_factory=threading.Event)
    family: tuple[int, ...] = ()  # the server and its descendants, as last read
    family_read_at: float = -math.inf  # time.monotonic() of that read
    first_launch: Launch | None = None  # before a move in place (what the process can see)


class LlamaServerBackend:
    kind = "llama-server"
    program = "llama-server"  # what a message calls the program it runs
    can_offload = True
    health_path = "/health"  # 503 while loading, 200 when ready
    metrics_path: str | None = "/metrics"  # request counters (--metrics)
    port_retries = PORT_RETRIES  # launches again on another port when it could not bind
    own_group = False  # True: stop signals the whole process group (ServerProcess.group)

    def __init__(self, log_dir: Path, *, binary: Path | None = None,
                 settings: WatchSettings | None = None,
                 registry: ServerRegistry | None = None,
                 notify: Callable[[Event], object] | None = None) -> None:
        self._log_dir = log_dir
        self.notify = notify  # where the backend's own problems go (the engine's bus)
        self._log_problems: dict[str, str] = {}  # model -> why its log is unusable, told once
        self._binary = binary
        self.settings = settings or WatchSettings()
        self._servers: dict[str, _Server] = {}
        self._lock = threading.Lock()
        self._registry = registry
        self._registry_lock = threading.Lock()
        self._stoppers: list[threading.Thread] = []

    # -- Backend interface ------------------------------------------------------------

    def start(self, launch: Launch, on_ready: ReadyCallback, on_exit: ExitCallback,
              on_activity: ActivityCallback | None = None) -> None:
        name = launch.config.name
        try:
            binary = self._resolve(launch)
        except FileNotFoundError as exc:
            log.warning("%s: %s", name, exc)
            on_exit(DeathReport(name, launch.instance, kind_hint="launch_failed",
                                log_tail=(str(exc),), during_startup=True))
            return
        server = _Server(launch, free_port(), launch_key(), on_ready, on_exit,
                         on_activity, binary=binary)
        self._spawn(server)

    def stop(self, model: str, instance: int) -> None:
        server = self._server(model, instance)
        if server is None or server.proc is None:
            return
        server.stop.set()
        stopper = threading.Thread(target=server.proc.stop, args=(self.settings.stop_grace_s,),
                                   name=f"stop-{model}", daemon=True)
        self._stoppers.append(stopper)
        stopper.start()

    def wait_stopped(self, timeout_s: float | None = None) -> bool:
        """Wait for every stop in progress (SIGTERM, grace, SIGKILL) to finish."""
        limit = timeout_s if timeout_s is not None else self.settings.stop_grace_s + 5.0
        for stopper in list(self._stoppers):
            stopper.join(limit)
        self._stoppers = [t for t in self._stoppers if t.is_alive()]
        return not self._stoppers

    def detach(self) -> None:
        """Stop watching without stopping: the servers keep running and stay in the
        registry, so the next gpuwarden adopts them."""
        with self._lock:
            servers = list(self._servers.values())
            self._servers.clear()
        for server in servers:
            server.stop.set()

    def poll(self, now: float) -> None:
        return None  # threads watch the servers; nothing is driven by the sample clock

    def next_due(self) -> float | None:
        return None

    def set_binary(self, binary: Path | None) -> None:
        """The program for later launches (the config's ``llama_server`` changed)."""
        self._binary = binary

    # -- for tests and the UI --------------------------------------------------------------

    def pid(self, model: str) -> int | None:
        with self._lock:
            server = self._servers.get(model)
        return server.proc.pid if server and server.proc else None

    def pids(self, model: str) -> tuple[int, ...]:
        """The pid of ``model``'s server and of its live descendants (whose VRAM is the
        model's too, in NVML's per-process list); () when it does not run. Never raises:
        when the children cannot be read, just the server's pid."""
        with self._lock:
            server = self._servers.get(model)
        proc = server.proc if server is not None else None
        if proc is None or not proc.alive:
            return ()
        now = time.monotonic()
        if server is not None and now - server.family_read_at < FAMILY_TTL_S:
            return server.family  # a process-table walk per sample and per view is too dear
        pid = proc.pid
        try:
            children = psutil.Process(pid).children(recursive=True)
            family = (pid, *(c.pid for c in children if c.is_running()))
        except (psutil.Error, OSError):
            family = (pid,)
        if server is not None:
            server.family, server.family_read_at = family, now
        return family

    def endpoint(self, model: str) -> tuple[int, str] | None:
        """(port, API key) of a model's server, for the UI's own requests."""
        with self._lock:
            server = self._servers.get(model)
        return (server.port, server.api_key) if server else None

    def running(self) -> list[str]:
        with self._lock:
            return sorted(n for n, s in self._servers.items() if s.proc and s.proc.alive)

    # -- launching ------------------------------------------------------------------------

    def _resolve(self, launch: Launch) -> Path:
        """The program to run for ``launch``; FileNotFoundError says what is missing."""
        path = launch.config.path
        if path is None or not path.is_file():
            raise FileNotFoundError(f"the model file {path} does not exist")
        return self.find_binary()

    def find_binary(self) -> Path:
        """The program to run; FileNotFoundError says how to get it."""
        return find_llama_server(self._binary)

    def argv(self, binary: Path, launch: Launch, port: int, api_key: str) -> list[str]:
        return server_argv(binary, launch, port, api_key)

    def environment(self, launch: Launch) -> dict[str, str]:
        """What the process gets on top of gpuwarden's own environment."""
        return {"GGML_NO_BACKTRACE": "1",  # a crash must not start a debugger
                **gpu_environment(launch)}

    def workdir(self, launch: Launch) -> Path | None:
        """The folder the process starts in (None: gpuwarden's)."""
        return None

    def health_path_of(self, launch: Launch) -> str:
        """Where readiness is asked (on the server's port)."""
        return self.health_path

    def _spawn(self, server: _Server) -> None:
        name, instance = server.launch.config.name, server.launch.instance
        assert server.binary is not None
        argv = self.argv(server.binary, server.launch, server.port, server.api_key)
        env = {**os.environ, **self.environment(server.launch), **self._mark(server.launch)}
        with self._lock:
            try:
                server.proc = ServerProcess.launch(
                    argv, log_path=self._log_path(name), env=env,
                    on_exit=lambda ex: self._exited(server, ex),
                    cwd=self.workdir(server.launch), group=self.own_group)
            except OSError as exc:  # not executable, not a program, no interpreter
                failed: str | None = cannot_run(Path(argv[0]), exc, self.program)
                log.warning("%s: %s", name, failed)
            else:
                failed = None
                self._servers[name] = server
                server.oom = OomWatch.for_pid(server.proc.pid)
        if failed is not None:
            server.on_exit(DeathReport(name, instance, kind_hint="launch_failed",
                                       log_tail=(failed,), during_startup=True))
            return
        proc = server.proc
        assert proc is not None
        self._log_usable(name, proc)
        if self._registry is not None:  # kept for adoption only
            record = ServerRecord(model=name, pid=proc.pid, port=server.port,
                                  api_key=server.api_key,
                                  executable=str(Path(argv[0]).resolve()),
                                  cmdline=tuple(argv), started_ts=_create_time(proc.pid),
                                  instance=instance, gpu=server.launch.config.gpu)
            self._record(lambda r: r.add(record))
        threading.Thread(target=self._watch, args=(server,), name=f"health-{name}",
                         daemon=True).start()

    def _record(self, change: Callable[[ServerRegistry], None]) -> None:
        """Update the registry (it reports a failed save itself, once per outage)."""
        if self._registry is None:
            return
        with self._registry_lock:
            change(self._registry)

    def _log_path(self, name: str) -> Path:
        """``<name>-<hash>.log``: readable, and one file per model even when two names
        read the same once made safe for a file name ("x y" and "x_y")."""
        return self._log_dir / log_file_name(name)

    def _log_usable(self, name: str, proc: ServerProcess) -> None:
        """Say once (a storage.error and a log line) that ``name``'s log cannot be used
        and its output is discarded, and (storage.recovered) when a launch can use it."""
        problem = proc.log_problem
        if problem is None:
            if self._log_problems.pop(name, None) is not None and self.notify is not None:
                self.notify(StorageRecovered(path=str(proc.log_path),
                                             message=f"{name}'s server writes to it again"))
            return
        if self._log_problems.get(name) == problem:
            return
        self._log_problems[name] = problem
        message = f"{problem}; {name} runs with its output discarded (no log lines)"
        log.warning("%s: %s", proc.log_path, message)
        if self.notify is not None:
            self.notify(StorageError(path=str(proc.log_path), message=message))

    # -- adoption -------------------------------------------------------------------------

    def _mark(self, launch: Launch) -> dict[str, str]:
        """The mark that tells this gpuwarden's servers from any other process (none
        without a registry: such servers are never adopted)."""
        if self._registry is None:
            return {}
        return marker_env(launch.config.name, self._registry.owner, launch.config.gpu)

    def leftovers(self) -> list[ServerRecord]:
        """Servers an earlier gpuwarden started that still run: the registry's records that
        are still their process (those of dead or reused-pid servers are forgotten), then
        any other process carrying this gpuwarden's mark (a garbled registry, a record
        never written), oldest first."""
        if self._registry is None:
            return []
        owner = self._registry.owner
        found = []
        for record in list(self._registry.records().values()):
            if process_matches(record, owner):
                found.append(record)
            else:
                self._forget(record.model)
        known = {r.pid for r in found}
        return found + [r for r in find_marked(owner) if r.pid not in known]

    def answers(self, record: ServerRecord) -> bool:
        """Whether a found server answers /health (200, or 503 while still loading)."""
        return http.get(record.port, self.health_path, timeout_s=2.0,
                        api_key=record.api_key).status is not None

    def launch_changes(self, record: ServerRecord, config: ModelConfig) -> str:
        """How the recorded server's command line differs from what ``config`` would
        launch now, in a few words ("": the same, apart from per-launch values)."""
        try:
            binary = self.find_binary()
        except FileNotFoundError:  # gone since: judge the arguments alone
            binary = Path(record.cmdline[0])
        expected = self.argv(binary, Launch(config, "cpu", 0, record.instance), record.port,
                             record.api_key)
        return argv_changes(record.cmdline, expected)

    def stop_leftovers(self, records: Sequence[ServerRecord],
                       grace_s: float | None = None) -> list[ServerRecord]:
        """Stop servers found running that are not to be adopted, and wait until they have
        ended (SIGTERM, ``grace_s`` -- by default the stop grace --, SIGKILL); their records
        are forgotten. Returns those that would not end (their records are kept)."""
        grace = self.settings.stop_grace_s if grace_s is None else grace_s
        stuck = stop_servers(records, grace)
        for record in records:
            if record not in stuck:
                self._forget(record.model, record.pid)
        return stuck

    def _forget(self, model: str, pid: int | None = None) -> None:
        self._record(lambda r: r.remove(model, pid))

    def adopt(self, record: ServerRecord, launch: Launch, on_ready: ReadyCallback,
              on_exit: ExitCallback, on_activity: ActivityCallback | None = None) -> None:
        """Supervise a running server instead of launching a second copy."""
        name = launch.config.name
        server = _Server(launch, record.port, record.api_key, on_ready, on_exit, on_activity)
        with self._lock:
            self._servers[name] = server
            server.proc = ServerProcess.adopt(
                record.pid, log_path=self._log_path(name),
                on_exit=lambda ex: self._exited(server, ex))
        self._record(lambda r: r.add(dataclasses.replace(record, instance=launch.instance)))
        threading.Thread(target=self._watch, args=(server,), name=f"health-{name}",
                         daemon=True).start()

    # -- watching -------------------------------------------------------------------------

    def _watch(self, server: _Server) -> None:
        if not self._wait_ready(server):
            return
        proc = server.proc
        assert proc is not None
        footprint = Footprint(vram_mib=self.ready_vram_mib(server), ram_mib=_rss_mib(proc.pid),
                              on_gpu=server.launch.device != "cpu")
        server.ready = True
        server.on_ready(server.launch.instance, footprint)
        if self.keeps_watching(server):
            self._watch_running(server)

    def keeps_watching(self, server: _Server) -> bool:
        """Whether a ready server is watched for hangs and use (it has an API to ask)."""
        return True

    def ready_vram_mib(self, server: _Server) -> float:
        """What a server that just became ready holds on the GPU (0: on the CPU), until
        NVML measures it: the estimate for its layers."""
        launch = server.launch
        return estimate_vram_mib(launch.config, launch.gpu_layers) if launch.gpu_layers else 0.0

    def _wait_ready(self, server: _Server) -> bool:
        """Poll until ready: every 25 ms for the first half second (small models load in
        milliseconds), then every ``ready_poll_s``."""
        proc = server.proc
        assert proc is not None
        started = time.monotonic()
        while proc.alive and not server.stop.is_set():
            if http.get(server.port, self.health_path_of(server.launch), timeout_s=1.0,
                        api_key=server.api_key).status == 200:
                return proc.alive
            early = time.monotonic() - started < FAST_READY_WINDOW_S
            server.stop.wait(min(FAST_READY_POLL_S, self.settings.ready_poll_s) if early
                             else self.settings.ready_poll_s)
        return False

    def _watch_running(self, server: _Server) -> None:
        """Metrics every ``metrics_poll_s``; /health on its own clock, one probe every
        ``hang_poll_s`` counted start to start (a probe's own time-out does not push the
        next one back). While a health check goes unanswered the metrics are not asked.
        So a hang is called ``(hang_failures - 1) * hang_poll_s + hang_timeout_s`` after
        the first unanswered probe, which comes within ``hang_poll_s`` of the server
        stopping (plus one metrics time-out if a metrics request was waiting): 12 to 19 s
        with the defaults."""
        proc = server.proc
        assert proc is not None
        s = self.settings
        hang, activity = HangDetector(s.hang_failures), ActivityTracker()
        next_health = time.monotonic() + s.hang_poll_s
        answering, was_busy = True, False
        while not server.stop.wait(s.metrics_poll_s if answering else 0.05) and proc.alive:
            if answering and self.metrics_path:
                was_busy = self._read_activity(server, activity, was_busy)
            if time.monotonic() < next_health:
                continue
            next_health = time.monotonic() + s.hang_poll_s
            health = http.get(server.port, self.health_path, timeout_s=s.hang_timeout_s,
                              api_key=server.api_key)
            answering = health.status == 200
            if hang.feed(answering) and proc.alive and not server.stop.is_set():
                log.warning("%s: no answer to %d health checks: killing it as hung",
                            server.launch.config.name, s.hang_failures)
                server.hung = True
                proc.kill()
                return

    def _read_activity(self, server: _Server, activity: ActivityTracker, was_busy: bool) -> bool:
        assert self.metrics_path is not None
        reply = http.get(server.port, self.metrics_path, timeout_s=self.settings.hang_timeout_s,
                         api_key=server.api_key)
        if reply.status != 200 or server.on_activity is None:
            return was_busy
        used, busy = activity.feed(http.parse_metrics(reply.body))
        if used or busy != was_busy:
            server.on_activity(server.launch.instance, used, busy)
        return busy

    def _exited(self, server: _Server, ex: Exit) -> None:
        """Its process ended: reported as the instance it is now (a move in place makes it
        a new one), unless another process of the model has taken its place."""
        name, instance = server.launch.config.name, server.launch.instance
        with self._lock:
            current = self._servers.get(name) is server
        if not current or server.proc is None:
            return
        output = server.proc.new_output()
        tail = logfile.last_lines(output)
        if not server.ready and not ex.stopped and _BIND_FAILED.search(output) and \
                server.attempt < self.port_retries:
            log.info("%s: port %d was taken, trying another", name, server.port)
            self._spawn(_Server(server.launch, free_port(), server.api_key, server.on_ready,
                                server.on_exit, server.on_activity, attempt=server.attempt + 1,
                                binary=server.binary))
            return
        with self._lock:
            if self._servers.get(name) is server:
                del self._servers[name]
        self._forget(name, server.proc.pid)
        server.stop.set()
        server.on_exit(DeathReport(
            name, instance, exit_code=ex.exit_code, signal=ex.signal, log_tail=tail,
            expected=ex.stopped and not server.hung,
            kind_hint="hang" if server.hung else None,
            oom_evidence=server.oom.killed_since() if server.oom else None,
            during_startup=not server.ready))

    def _server(self, name: str, instance: int) -> _Server | None:
        with self._lock:
            server = self._servers.get(name)
        return server if server is not None and server.launch.instance == instance else None


def _create_time(pid: int) -> float:
    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return time.time()


def _rss_mib(pid: int) -> float:
    try:
        return float(psutil.Process(pid).memory_info().rss) / _MIB
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return 0.0
