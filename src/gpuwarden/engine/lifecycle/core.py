"""The mechanism under the lifecycle manager: its state, how actions are carried out
through the backends, and what happens when a backend reports (ready, used, exited).

:class:`~gpuwarden.engine.lifecycle.manager.LifecycleManager` answers the requests on top.
Everything here runs inside :meth:`ManagerCore._locked`: the lock is held and the events
published meanwhile are delivered only once it is released.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace

from gpuwarden.engine.clock import Clock
from gpuwarden.engine.events import (
    CrashKind,
    EmergencyStop,
    EventBus,
    LoadReason,
    ModelCrashed,
    ModelLoading,
    ModelOffloaded,
    ModelReady,
    ModelRefused,
    ModelRestartExhausted,
    ModelRestartScheduled,
    ModelUnloaded,
    ModelWaiting,
    OffloadReason,
    SwapEvicted,
    SwapRestored,
    UnloadReason,
)
from gpuwarden.engine.lifecycle import crash, policy
from gpuwarden.engine.lifecycle.actions import (
    Action,
    Load,
    Offload,
    Return,
    Stopping,
    StopReason,
    Unload,
)
from gpuwarden.engine.lifecycle.backend import (
    ActivityCallback,
    Backend,
    ExitCallback,
    Footprint,
    Launch,
    ReadyCallback,
)
from gpuwarden.engine.lifecycle.config import Config, ModelConfig, Placement
from gpuwarden.engine.lifecycle.estimate import estimate_vram_mib, free_vram_mib, resolve
from gpuwarden.engine.lifecycle.hint_keeper import HintKeeper
from gpuwarden.engine.lifecycle.hints import HintStore
from gpuwarden.engine.lifecycle.planning import Planner
from gpuwarden.engine.lifecycle.pressure_monitor import PressureMonitor
from gpuwarden.engine.lifecycle.safety_guard import (
    Held,
    blocking,
    emergency_victims,
    throttle,
    uses_gpu,
)
from gpuwarden.engine.lifecycle.state import CrashRecord, Device, ModelState, initial_state
from gpuwarden.engine.safety.verdict import SafetyMonitor
from gpuwarden.engine.telemetry.snapshot import Snapshot, measured_vram_mib

log = logging.getLogger(__name__)

MAX_CRASH_HISTORY = 20
RETURN_WAIT_CAP_S = 3600.0
FLAP_WINDOW_S = 300.0  # moved off again this soon after going back: wait twice as long
Attach = Callable[[Launch, ReadyCallback, ExitCallback, ActivityCallback], None]
Measure = Callable[[Collection[int]], float | None]  # VRAM the pids hold now, or unknown
_FINAL_STOPS = frozenset({"user", "shutdown", "restart", "removed", "safety"})  # they win


@dataclass(frozen=True)
class AdminResult:
    """The answer to a user's command: done, or refused and why."""

    ok: bool
    message: str


class ManagerCore:
    def __init__(
        self,
        config: Config,
        backends: Mapping[str, Backend],
        *,
        bus: EventBus,
        clock: Clock,
        estimate: policy.Estimate = estimate_vram_mib,
        hints: HintStore | None = None,
        measure: Measure | None = None,
        planner: Planner | None = None,
    ) -> None:
        self._cfg = config
        self._backends = dict(backends)
        self._bus = bus
        self._clock = clock
        self._planner = planner
        self._estimate = planner.estimate if planner is not None else estimate
        self._measure = measure
        self._lock = threading.RLock()
        self._states: dict[str, ModelState] = {m.name: initial_state(m) for m in config.models}
        self._next_instance = 0
        self._stopping: dict[str, Stopping] = {}  # why each stopping model is stopping
        self._waiting: dict[str, tuple[Load, tuple[str, ...]]] = {}  # load after a swap
        self._next_config: dict[str, ModelConfig] = {}  # changed settings for the next load
        self._dropping: set[str] = set()  # removed from the config: forget once stopped
        self._snapshot: Snapshot | None = None
        self._wake: Callable[[], None] = _nothing
        self.pressure = PressureMonitor(config.pressure, bus)
        self.safety = SafetyMonitor()
        self._held: dict[str, Held] = {}  # loads waiting for a GPU to cool down
        self._hints = HintKeeper(hints, bus, clock)
        self._states = self._hints.restore(self._states)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the lock; what is published meanwhile is delivered after it is released."""
        with self._bus.deferred(), self._lock:
            yield

    def set_waker(self, wake: Callable[[], None]) -> None:
        """``wake`` is called (from any thread) when a deadline appears that may be earlier
        than the driver's next step: a restart was scheduled."""
        self._wake = wake

    def _tick(self, now: float) -> None:
        for name in list(self._states):
            self._due(name, now)

    def _due(self, name: str, now: float) -> None:
        """Fire this model's restart if it is due; stop it if loading takes too long."""
        s = self._states[name]
        if s.restart_at is not None and s.restart_at <= now and not s.live:
            self._put(replace(s, restart_at=None))
            if not s.user_unloaded:
                self._start(Load(s.name, self._restart_placement(s), "restart"))
        elif (
            s.device == "loading"
            and s.loaded_at is not None
            and now - s.loaded_at > self._cfg.restart.startup_timeout_s
        ):
            self._stop(s.name, Stopping("startup_timeout"))

    def _restart_placement(self, s: ModelState) -> Placement:
        """A restart passes the pre-flight too: where the model no longer fits (another
        program took the VRAM meanwhile) an ``auto`` or partial placement takes the
        layers that fit now, or the CPU; ``gpu`` is tried as it is (a GPU out-of-memory
        then downgrades it)."""
        free = self._free_vram().get(s.config.gpu)
        placement = s.placement
        if self._planner is None or free is None or placement in ("cpu", "gpu"):
            return placement
        margin = self._cfg.safety.vram_margin_mib
        if self._estimate(s.config, placement) + margin <= free:
            return placement
        layers = self._planner.max_layers(s.config, free, margin)
        if isinstance(placement, int):
            layers = min(layers, placement)
        return layers if layers >= 1 else "cpu"

    # -- carrying out actions ------------------------------------------------------------

    def _apply_all(self, actions: list[Action]) -> None:
        for action in actions:
            self._apply(action)

    def _apply(self, action: Action) -> None:
        s = self._states[action.model]
        if isinstance(action, Load):
            self._load(action)
        elif isinstance(action, Unload):
            if not s.live:
                return
            if action.reason == "swap" and action.for_model is not None:
                self._put(replace(s, displaced_by=action.for_model))
                self._bus.publish(SwapEvicted(model=s.name, for_model=action.for_model))
            self._stop(s.name, Stopping(action.reason))
        elif isinstance(action, Offload):
            self._offload(s, action.reason)
        elif isinstance(action, Return) and s.device == "cpu" and s.home is not None:
            self._put(replace(s, home=None, return_after=None,
                              returned_at=self._clock.time()))
            self._stop(s.name, Stopping("relocate", then=Load(s.name, action.placement,
                                                              "restore")))

    def _offload(self, s: ModelState, reason: OffloadReason) -> None:
        if not s.on_gpu:
            return
        if reason == "pressure":  # it goes back once the pressure is over
            now = self._clock.time()
            flapped = s.returned_at is not None and now - s.returned_at < FLAP_WINDOW_S
            first = self._cfg.pressure.return_wait_s
            wait = min(RETURN_WAIT_CAP_S, max(first, 2 * s.return_wait_s)) if flapped else first
            s = replace(s, home=s.home or s.placement, home_vram_mib=s.held_vram_mib,
                        return_wait_s=wait, return_after=now + wait)
        else:  # the user (or make-room) moved it: it stays on the CPU until told otherwise
            s = replace(s, home=None, return_after=None)
        self._put(s)
        self._stop(s.name, Stopping("relocate", then=Load(s.name, "cpu", "offload"),
                                    offload=reason))

    def _load(self, load: Load) -> None:
        if load.reason == "restore":
            s = self._states[load.model]
            if s.displaced_by is not None:
                self._put(replace(s, displaced_by=None))
                self._bus.publish(SwapRestored(model=s.name, after=s.displaced_by))
        blockers = tuple(
            n for n, s in self._states.items() if s.displaced_by == load.model and s.live
        )
        if blockers:  # swap victims still stopping: start when they are gone
            self._waiting[load.model] = (load, blockers)
            return
        self._start(load)

    def _start(self, load: Load) -> None:
        s = self._states[load.model]
        if s.live:  # one live process per model, by construction
            log.debug("not starting %s: already %s", s.name, s.device)
            return
        if s.name in self._next_config:
            s = replace(s, config=self._next_config.pop(s.name))
        backend = self._backends.get(s.config.backend)
        if backend is None:
            log.error("no %s backend for %s", s.config.backend, s.name)
            self._held.pop(s.name, None)
            return
        if self._planner is not None and (problem := self._planner.problem(s.config)):
            self._held.pop(s.name, None)
            self._put(replace(s, waiting_for=None))
            self._bus.publish(ModelRefused(model=s.name, message=problem))  # file changed
            return
        device, layers = resolve(load.placement, s.config, self._has_gpu(s.config.gpu))
        verdicts = self.safety.verdicts()
        block = blocking(verdicts, s.config.gpu, uses_gpu(device))
        if block is not None:
            self._hold(s, load, block.reason)
            return
        self._held.pop(s.name, None)
        self._next_instance += 1
        sample = self._snapshot.gpu(s.config.gpu) if self._snapshot is not None else None
        launch = Launch(s.config, device, layers, self._next_instance,
                        throttle=throttle(verdicts, s.config.gpu, uses_gpu(device)),
                        gpu_uuid=sample.uuid if sample is not None and sample.uuid and
                        uses_gpu(device) else None)
        self._put(
            replace(
                s,
                device="loading",
                waiting_for=None,
                placement=load.placement,
                instance=launch.instance,
                loaded_at=self._clock.time(),
                ready_since=None,
                gpu_layers=layers if device == "partial" else None,
                vram_mib=None,
                vram_est_mib=self._estimate(s.config, load.placement) if layers else 0.0,
            )
        )
        self._announce_loading(s.name, device, layers, load.reason)
        backend.start(
            launch, self._on_ready_cb(s.name), self._on_exit, self._on_activity_cb(s.name)
        )

    def _hold(self, s: ModelState, load: Load, reason: str) -> None:
        """Keep ``load`` until the GPU has cooled down (or refuse it after the time-out)."""
        now = self._clock.time()
        held = self._held.get(s.name)
        since = held.since if held is not None else now
        self._held[s.name] = Held(load, since, since + self._cfg.safety.cooldown_timeout_s,
                                  reason)
        self._put(replace(s, waiting_for=reason))
        if held is None:
            self._bus.publish(ModelWaiting(model=s.name, reason=reason))

    def _release_held(self, now: float) -> None:
        """Start the held loads whose GPU is cool again; refuse those that waited too long."""
        for name, held in list(self._held.items()):
            s = self._states.get(name)
            if s is None or s.user_unloaded or s.live:
                del self._held[name]
                if s is not None:
                    self._put(replace(s, waiting_for=None))
            elif now >= held.until:
                del self._held[name]
                self._put(replace(s, waiting_for=None))
                waited = round(now - held.since)
                self._bus.publish(ModelRefused(
                    model=name, message=f"not loaded after waiting {waited} s: {held.reason}"))
            else:
                self._start(held.load)  # held again (quietly) while still too hot

    def _apply_safety(self, snap: Snapshot) -> None:
        """Judge the sample against the limits; an abort stops its models at once."""
        cpu = self.pressure.cpu_average() if snap.host.cpu_pct is not None else None
        calm = replace(snap, host=replace(snap.host, cpu_pct=cpu))  # n/a stays n/a
        for change in self.safety.check(calm, self._cfg.safety):
            self._bus.publish(change.event())
            verdict = change.verdict
            if verdict.kind == "abort":
                self._emergency_stop(verdict.gpu, verdict.reason)
        self._release_held(self._clock.time())

    def _emergency_stop(self, gpu: int | None, reason: str) -> list[str]:
        pending = {*self._held, *self._waiting,
                   *(s.name for s in self._states.values() if s.restart_at is not None),
                   *(n for n, stop in self._stopping.items()
                     if stop.then is not None and stop.then.placement != "cpu")}
        names = emergency_victims(self._states, gpu, pending)
        self._bus.publish(EmergencyStop(scope="host" if gpu is None else "gpu", gpu=gpu,
                                        reason=reason, models=tuple(names)))
        for name in names:
            self._held.pop(name, None)
            self._waiting.pop(name, None)
            self._put(replace(self._states[name], user_unloaded=True, restart_at=None,
                              home=None, return_after=None, waiting_for=None))
            if self._states[name].live:
                self._stop(name, Stopping("safety"))
        return names

    def _announce_loading(self, name: str, device: str, layers: int,
                          reason: LoadReason) -> None:
        self._bus.publish(
            ModelLoading(model=name, placement=describe(device, layers), reason=reason))

    def _stop(self, name: str, stop: Stopping) -> None:
        """Ask the backend to stop; what follows is decided when it has exited."""
        s = self._states[name]
        if s.device == "stopping":
            if stop.reason in _FINAL_STOPS:  # the user or shutdown overrules a move
                self._stopping[name] = stop
            return
        self._stopping[name] = stop
        self._put(replace(s, device="stopping"))
        self._backends[s.config.backend].stop(name, s.instance)

    # -- what the backends report --------------------------------------------------------

    def _on_ready_cb(self, name: str) -> ReadyCallback:
        def on_ready(instance: int, fp: Footprint) -> None:
            measured = self._measure_now(name)  # outside the lock: may ask the driver
            with self._locked():
                s = self._states.get(name)
                if s is None or s.instance != instance or s.device != "loading":
                    return  # a stale report from a process we already gave up on
                self._ready(s, fp, measured)

        return on_ready

    def _ready(self, s: ModelState, fp: Footprint, measured: float | None) -> None:
        device: Device = "cpu" if fp.vram_mib == 0 else (
            "partial" if s.gpu_layers is not None else "gpu")
        if device != "cpu" and not measured:  # not reported (or not matched): not zero
            measured = None
        s = replace(s, device=device, vram_mib=measured, ram_mib=fp.ram_mib,
                    ready_since=self._clock.time(),
                    vram_est_mib=0.0 if device == "cpu" else s.vram_est_mib)
        self._put(s)
        if measured and self._planner is not None:  # what CUDA itself costs on this GPU
            self._planner.learn(s.config, s.gpu_layers or s.config.layers, measured)
        self._bus.publish(ModelReady(model=s.name, placement=describe(device, s.gpu_layers or 0),
                                     vram_mib=measured, vram_est_mib=s.vram_est_mib,
                                     ram_mib=fp.ram_mib))

    def _measure_now(self, name: str) -> float | None:
        pids = self.pids(name)
        return self._measure(pids) if pids and self._measure is not None else None

    def pids(self, name: str) -> tuple[int, ...]:
        """The processes that run ``name`` now (its server and their children)."""
        with self._lock:
            s = self._states.get(name)
            backend = self._backends.get(s.config.backend) if s is not None else None
        return backend.pids(name) if backend is not None else ()

    def _update_measured(self, snap: Snapshot) -> None:
        """What each live model's processes hold in this sample's process lists. A model
        missing from the lists keeps its last figure (NVML refreshes them every few s)."""
        for s in list(self._states.values()):
            if not s.live or s.device == "loading":
                continue
            held = measured_vram_mib(snap, self.pids(s.name))
            if held is not None and (held > 0 or s.device == "cpu"):
                self._put(replace(s, vram_mib=held))

    def _on_activity_cb(self, name: str) -> ActivityCallback:
        def on_activity(instance: int, used: bool, busy: bool) -> None:
            with self._locked():
                s = self._states.get(name)
                if s is None or s.instance != instance or not s.live:
                    return
                if used:
                    s = self._touch(name)
                if s.serving != busy:
                    self._put(replace(s, serving=busy))

        return on_activity

    def _on_exit(self, report: crash.DeathReport) -> None:
        with self._locked():
            s = self._states.get(report.model)
            if s is None or s.instance != report.instance or not s.live:
                return  # stale: an older generation, or already handled
            stop = self._stopping.pop(report.model, None)
            if stop is not None and stop.reason == "startup_timeout":
                report = replace(report, kind_hint="startup_timeout")
            kind = crash.classify(report)
            self._put(replace(s, device="unloaded", vram_mib=None, vram_est_mib=0.0,
                              ram_mib=0.0, in_use=0, serving=False))
            if kind is None:
                self._after_clean_exit(s, stop or Stopping("exited"))
            else:
                self._after_crash(self._states[report.model], kind, report)
            if report.model in self._dropping:
                self._drop(report.model)
            self._release_waiting()
            if report.model in self._states:
                self._due(report.model, self._clock.time())

    def _after_clean_exit(self, before: ModelState, stop: Stopping) -> None:
        name = before.name
        if stop.then is not None and not self._states[name].user_unloaded:
            if stop.offload is not None:
                self._bus.publish(ModelOffloaded(model=name, reason=stop.offload,
                                                 freed_vram_mib=before.held_vram_mib))
            self._start(stop.then)
            return
        reason = _unload_reason(stop.reason)
        if reason is not None:
            self._bus.publish(ModelUnloaded(model=name, reason=reason,
                                            freed_vram_mib=before.held_vram_mib,
                                            freed_ram_mib=before.ram_mib))

    def _after_crash(self, s: ModelState, kind: CrashKind, report: crash.DeathReport) -> None:
        now = self._clock.time()
        self._bus.publish(
            ModelCrashed(
                model=s.name,
                kind=kind,
                exit_code=report.exit_code,
                signal=report.signal,
                log_tail=report.log_tail[-20:],
            )
        )
        decision = crash.decide(s, kind, now, self._cfg.restart)
        record = CrashRecord(now, kind, report.exit_code, report.signal)
        s = replace(
            s,
            device="crashed",
            placement=decision.placement,
            consecutive_crashes=decision.attempt,
            crashes=(*s.crashes, record)[-MAX_CRASH_HISTORY:],
        )
        if decision.exhausted:
            self._put(replace(s, gave_up=True))
            self._bus.publish(
                ModelRestartExhausted(
                    model=s.name,
                    attempts=decision.attempt,
                    message=f"gave up after {decision.attempt} crashes in a row; load it "
                    "again once the cause is fixed",
                )
            )
        elif decision.restart_at is not None and s.restart_at is None:
            self._put(replace(s, restart_at=decision.restart_at))
            self._bus.publish(
                ModelRestartScheduled(
                    model=s.name,
                    delay_s=round(decision.restart_at - now, 3),
                    attempt=decision.attempt,
                    placement=str(decision.placement),
                )
            )
            self._wake()
        else:
            self._put(s)

    def _release_waiting(self) -> None:
        for name, (load, blockers) in list(self._waiting.items()):
            if name not in self._states or self._states[name].user_unloaded:
                del self._waiting[name]
            elif not any(self._states[b].live for b in blockers if b in self._states):
                del self._waiting[name]
                self._start(load)

    def _drop(self, name: str) -> None:
        """Forget a model that was removed from the config (it has stopped)."""
        self._dropping.discard(name)
        self._states.pop(name, None)
        self._stopping.pop(name, None)
        self._waiting.pop(name, None)
        self._next_config.pop(name, None)
        for other in list(self._states.values()):
            if other.displaced_by == name:
                self._put(replace(other, displaced_by=None))

    # -- helpers -------------------------------------------------------------------------

    def _touch(self, name: str) -> ModelState:
        """The model was just used: its idle clock starts again (and the hints know)."""
        s = self._states[name]
        now = self._clock.time()
        s = replace(s, last_access=now, access_count=s.access_count + 1)
        self._put(s)
        self._hints.remember(name, last_access_ts=now, access_count=s.access_count)
        return s

    def _put(self, state: ModelState) -> None:
        self._states[state.name] = state

    def _unknown(self, name: str) -> AdminResult | None:
        if name in self._states and name not in self._dropping:
            return None
        return AdminResult(False, f"no model named {name!r} in the configuration")

    def _can_offload(self, s: ModelState) -> bool:
        backend = self._backends.get(s.config.backend)
        return backend is not None and backend.can_offload

    def _has_gpu(self, index: int) -> bool:
        snap = self._snapshot
        return snap is None or snap.gpu(index) is not None

    def _free_vram(self, loads_allowed: bool = False) -> dict[int, float | None]:
        """Free MiB per GPU (None: not known). ``loads_allowed``: None too for a GPU whose
        safety verdict holds new loads (too hot), so nothing is planned onto it."""
        free = free_vram_mib(self._snapshot, self._states.values(), self._estimate)
        if loads_allowed:
            for verdict in self.safety.verdicts().values():
                if verdict.gpu is not None and not verdict.allows_loads:
                    free[verdict.gpu] = None
        return free


def _nothing() -> None:
    return None


def _unload_reason(reason: StopReason) -> UnloadReason | None:
    """What a clean stop is announced as: None for a restart (the model comes straight
    back); a move cut short by the user is the user's unload."""
    if reason == "restart" or reason == "startup_timeout":
        return None
    if reason == "relocate":
        return "user"
    return reason


def describe(device: str, layers: int) -> str:
    return f"partial ({layers} layers on GPU)" if device == "partial" else device
