"""The mechanism under the lifecycle manager: its state, how actions are carried out
through the backends, and what happens when a backend reports (ready, used, exited).

:class:`~gpuwarden.engine.lifecycle.manager.LifecycleManager` adds the public requests on
top. Callers hold ``_lock`` (an RLock) around everything here.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from gpuwarden.engine.clock import Clock
from gpuwarden.engine.events import (
    EventBus,
    ModelCrashed,
    ModelLoading,
    ModelOffloaded,
    ModelReady,
    ModelRestartExhausted,
    ModelRestartScheduled,
    ModelUnloaded,
    SwapEvicted,
    SwapRestored,
)
from gpuwarden.engine.lifecycle import crash, policy
from gpuwarden.engine.lifecycle.actions import Action, Load, Unload
from gpuwarden.engine.lifecycle.backend import (
    ActivityCallback,
    Backend,
    ExitCallback,
    Footprint,
    Launch,
    ReadyCallback,
)
from gpuwarden.engine.lifecycle.config import Config
from gpuwarden.engine.lifecycle.estimate import estimate_vram_mib, free_vram_mib, resolve
from gpuwarden.engine.lifecycle.hint_keeper import HintKeeper
from gpuwarden.engine.lifecycle.hints import HintStore
from gpuwarden.engine.lifecycle.pressure_monitor import PressureMonitor
from gpuwarden.engine.lifecycle.state import CrashRecord, ModelState, initial_state
from gpuwarden.engine.telemetry.snapshot import Snapshot

log = logging.getLogger(__name__)

MAX_CRASH_HISTORY = 20
Attach = Callable[[Launch, ReadyCallback, ExitCallback, ActivityCallback], None]
OFFLOAD = "offload:"  # stop reason prefix: come back on the CPU once stopped
TIMED_OUT = "startup_timeout"
_FINAL_STOPS = frozenset({"user", "shutdown", "restart"})  # a later explicit request wins


@dataclass(frozen=True)
class AdminResult:
    """The answer to a user's button: done, or refused and why."""

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
    ) -> None:
        self._cfg = config
        self._backends = dict(backends)
        self._bus = bus
        self._clock = clock
        self._estimate = estimate
        self._lock = threading.RLock()
        self._states: dict[str, ModelState] = {m.name: initial_state(m) for m in config.models}
        self._next_instance = 0
        self._stop_reason: dict[str, str] = {}  # why each stopping model is stopping
        self._waiting: dict[str, tuple[Load, tuple[str, ...]]] = {}  # load after a swap
        self._snapshot: Snapshot | None = None
        self.pressure = PressureMonitor(config.pressure, bus)
        self._hints = HintKeeper(hints, bus, clock)
        self._states = self._hints.restore(self._states)

    def _tick(self, now: float) -> None:
        for name in list(self._states):
            self._due(name, now)

    def _due(self, name: str, now: float) -> None:
        """Fire this model's restart if it is due; stop it if loading takes too long."""
        s = self._states[name]
        if s.restart_at is not None and s.restart_at <= now and not s.live:
            self._put(s.replace(restart_at=None))
            if not s.user_unloaded:
                self._start(Load(s.name, s.placement, "restart"))
        elif (
            s.device == "loading"
            and s.loaded_at is not None
            and now - s.loaded_at > self._cfg.restart.startup_timeout_s
        ):
            self._stop(s.name, TIMED_OUT)

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
                self._put(s.replace(displaced_by=action.for_model))
                self._bus.publish(SwapEvicted(model=s.name, for_model=action.for_model))
            self._stop(s.name, action.reason)
        elif s.on_gpu:  # Offload
            self._stop(s.name, OFFLOAD + action.reason)

    def _load(self, load: Load) -> None:
        if load.reason == "restore":
            s = self._states[load.model]
            self._put(s.replace(displaced_by=None))
            self._bus.publish(SwapRestored(model=s.name, after=s.displaced_by or ""))
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
        backend = self._backends.get(s.config.backend)
        if backend is None:
            log.error("no %s backend for %s", s.config.backend, s.name)
            return
        self._next_instance += 1
        device, layers = resolve(load.placement, s.config, self._has_gpu(s.config.gpu))
        launch = Launch(s.config, device, layers, self._next_instance)
        self._put(
            s.replace(
                device="loading",
                placement=load.placement,
                instance=launch.instance,
                loaded_at=self._clock.time(),
                ready_since=None,
                gpu_layers=layers if device == "partial" else None,
            )
        )
        self._bus.publish(
            ModelLoading(model=s.name, placement=describe(device, layers), reason=load.reason)
        )
        backend.start(
            launch, self._on_ready_cb(s.name), self._on_exit, self._on_activity_cb(s.name)
        )

    def _stop(self, name: str, reason: str) -> None:
        """Ask the backend to stop; what follows is decided when it has exited."""
        s = self._states[name]
        if s.device == "stopping":
            if reason in _FINAL_STOPS:  # the user or shutdown overrules an offload or swap
                self._stop_reason[name] = reason
            return
        self._stop_reason[name] = reason
        self._put(s.replace(device="stopping"))
        self._backends[s.config.backend].stop(name, s.instance)

    # -- what the backends report --------------------------------------------------------

    def _on_ready_cb(self, name: str) -> ReadyCallback:
        def on_ready(instance: int, fp: Footprint) -> None:
            with self._lock:
                s = self._states[name]
                if s.instance != instance or s.device != "loading":
                    return  # a stale report from a process we already gave up on
                device = (
                    "cpu"
                    if fp.vram_mib == 0
                    else ("partial" if s.gpu_layers is not None else "gpu")
                )
                now = self._clock.time()
                self._put(
                    s.replace(
                        device=device, vram_mib=fp.vram_mib, ram_mib=fp.ram_mib, ready_since=now
                    )
                )
                self._bus.publish(
                    ModelReady(
                        model=name,
                        placement=describe(device, s.gpu_layers or 0),
                        vram_mib=fp.vram_mib,
                        ram_mib=fp.ram_mib,
                    )
                )

        return on_ready

    def _on_activity_cb(self, name: str) -> ActivityCallback:
        def on_activity(instance: int, used: bool, busy: bool) -> None:
            with self._lock:
                s = self._states[name]
                if s.instance != instance or not s.live:
                    return
                if used:
                    s = self._touch(name)
                if s.serving != busy:
                    self._put(s.replace(serving=busy))

        return on_activity

    def _on_exit(self, report: crash.DeathReport) -> None:
        with self._lock:
            s = self._states.get(report.model)
            if s is None or s.instance != report.instance or not s.live:
                return  # stale: an older generation, or already handled
            reason = self._stop_reason.pop(report.model, None)
            if reason == TIMED_OUT:
                report = crash.DeathReport(
                    report.model,
                    report.instance,
                    kind_hint="startup_timeout",
                    log_tail=report.log_tail,
                )
            kind = crash.classify(report)
            self._put(
                s.replace(device="unloaded", vram_mib=0.0, ram_mib=0.0, in_use=0, serving=False)
            )
            if kind is None:
                self._after_clean_exit(s, reason or "exited")
            else:
                self._after_crash(self._states[report.model], kind, report)
            self._release_waiting()
            self._due(report.model, self._clock.time())

    def _after_clean_exit(self, before: ModelState, reason: str) -> None:
        if reason.startswith(OFFLOAD) and not self._states[before.name].user_unloaded:
            self._bus.publish(
                ModelOffloaded(
                    model=before.name, reason=reason[len(OFFLOAD) :], freed_vram_mib=before.vram_mib
                )
            )
            self._start(Load(before.name, "cpu", "offload"))
        elif reason != "restart":
            self._bus.publish(
                ModelUnloaded(
                    model=before.name,
                    reason=reason,
                    freed_vram_mib=before.vram_mib,
                    freed_ram_mib=before.ram_mib,
                )
            )

    def _after_crash(self, s: ModelState, kind: crash.CrashKind, report: crash.DeathReport) -> None:
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
        s = s.replace(
            device="crashed",
            placement=decision.placement,
            consecutive_crashes=decision.attempt,
            crashes=(*s.crashes, record)[-MAX_CRASH_HISTORY:],
        )
        if decision.exhausted:
            self._put(s.replace(gave_up=True))
            self._bus.publish(
                ModelRestartExhausted(
                    model=s.name,
                    attempts=decision.attempt,
                    message=f"gave up after {decision.attempt} crashes in a row; load it by hand "
                    "once the cause is fixed",
                )
            )
        elif decision.restart_at is not None and s.restart_at is None:
            self._put(s.replace(restart_at=decision.restart_at))
            self._bus.publish(
                ModelRestartScheduled(
                    model=s.name,
                    delay_s=round(decision.restart_at - now, 3),
                    attempt=decision.attempt,
                    placement=str(decision.placement),
                )
            )
        else:
            self._put(s)

    def _release_waiting(self) -> None:
        for name, (load, blockers) in list(self._waiting.items()):
            if self._states[name].user_unloaded:
                del self._waiting[name]
            elif not any(self._states[b].live for b in blockers):
                del self._waiting[name]
                self._start(load)

    # -- helpers -------------------------------------------------------------------------

    def _touch(self, name: str) -> ModelState:
        """The model was just used: its idle clock starts again (and the hints know)."""
        s = self._states[name]
        now = self._clock.time()
        s = s.replace(last_access=now, access_count=s.access_count + 1)
        self._put(s)
        self._hints.remember(name, last_access_ts=now, access_count=s.access_count)
        return s

    def _put(self, state: ModelState) -> None:
        self._states[state.name] = state

    def _unknown(self, name: str) -> AdminResult | None:
        if name in self._states:
            return None
        return AdminResult(False, f"no model named {name!r} in the configuration")

    def _can_offload(self, s: ModelState) -> bool:
        backend = self._backends.get(s.config.backend)
        return backend is not None and backend.can_offload

    def _has_gpu(self, index: int) -> bool:
        snap = self._snapshot
        return snap is None or snap.gpu(index) is not None

    def _free_vram(self) -> dict[int, float | None]:
        return free_vram_mib(self._snapshot, self._states.values(), self._estimate)


def describe(device: str, layers: int) -> str:
    return f"partial ({layers} layers on GPU)" if device == "partial" else device
