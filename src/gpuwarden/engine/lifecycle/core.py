"""The mechanism under the lifecycle manager: how actions are carried out through the
backends (starts, stops, moves) and restarts and time-outs fired when due. What backends
report is in :mod:`reports`, the safety limits in :mod:`guarding`, the state and its
helpers in :mod:`core_state`; :class:`~gpuwarden.engine.lifecycle.manager.LifecycleManager`
answers the requests on top."""

from __future__ import annotations

import logging
from dataclasses import replace

from gpuwarden.engine.events import (
    LoadReason,
    ModelLoading,
    ModelOffloaded,
    ModelRefused,
    OffloadReason,
    SwapEvicted,
    SwapRestored,
)
from gpuwarden.engine.lifecycle.actions import Action, Load, Offload, Return, Stopping, Unload
from gpuwarden.engine.lifecycle.backend import Launch, MovesInPlace
from gpuwarden.engine.lifecycle.core_state import (
    FLAP_WINDOW_S,
    RETURN_WAIT_CAP_S,
    AdminResult,
    Attach,
    Measure,
    describe,
)
from gpuwarden.engine.lifecycle.estimate import resolve
from gpuwarden.engine.lifecycle.guarding import Guarding
from gpuwarden.engine.lifecycle.reports import BackendReports
from gpuwarden.engine.lifecycle.safety_guard import blocking, throttle, uses_gpu
from gpuwarden.engine.lifecycle.state import ModelState

log = logging.getLogger(__name__)

_FINAL_STOPS = frozenset({"user", "shutdown", "restart", "removed", "safety"})  # they win


class ManagerCore(BackendReports, Guarding):
    """Carrying out actions: starts, stops, moves; restarts and time-outs when due."""

    def _tick(self, now: float) -> None:
        for name in list(self._states):
            self._due(name, now)

    def _due(self, name: str, now: float) -> None:
        """Fire this model's restart if it is due; stop it if loading takes too long."""
        s = self._states[name]
        if s.restart_at is not None and s.restart_at <= now and not s.live and not self.paused:
            self._put(replace(s, restart_at=None))
            if not s.user_unloaded:
                self._start(Load(s.name, self._restart_placement(s), "restart"))
        elif (
            s.device == "loading"
            and s.loaded_at is not None
            and now - s.loaded_at > self._cfg.restart.startup_timeout_s
        ):
            self._stop(s.name, Stopping("startup_timeout"))

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
            self._relocate(self._states[s.name], Load(s.name, action.placement, "restore"))

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
        self._relocate(s, Load(s.name, "cpu", "offload"), reason)

    def _relocate(self, s: ModelState, then: Load, offload: OffloadReason | None = None) -> None:
        """Move a running model: in place when its backend can (no restart, the process
        and its clients' connections stay), else stop it and start it again there."""
        if self._can_move_in_place(s, then):
            if offload is not None:
                self._bus.publish(ModelOffloaded(model=s.name, reason=offload,
                                                 freed_vram_mib=s.held_vram_mib))
            self._start(then, moving=True)
        else:
            self._stop(s.name, Stopping("relocate", then=then, offload=offload))

    def _can_move_in_place(self, s: ModelState, then: Load) -> bool:
        backend = self._backends.get(s.config.backend)
        if not isinstance(backend, MovesInPlace) or s.device not in ("gpu", "partial", "cpu") \
                or s.name in self._next_config:
            return False
        device, _ = resolve(then.placement, s.config, self._has_gpu(s.config.gpu))
        if blocking(self.safety.verdicts(), s.config.gpu, uses_gpu(device)) is not None:
            return False  # held until it cools: the ordinary way (stopped, then held)
        return backend.can_move(s.name, device, self._gpu_uuid(s, device))

    def _gpu_uuid(self, s: ModelState, device: str) -> str | None:
        sample = self._snapshot.gpu(s.config.gpu) if self._snapshot is not None else None
        return sample.uuid if sample is not None and sample.uuid and uses_gpu(device) else None

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

    def _start(self, load: Load, *, moving: bool = False) -> None:
        """Launch ``load`` (``moving``: the running process moves there in place)."""
        s = self._states[load.model]
        if s.live and not moving:  # one live process per model, by construction
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
        launch = Launch(s.config, device, layers, self._next_instance,
                        throttle=throttle(verdicts, s.config.gpu, uses_gpu(device)),
                        gpu_uuid=self._gpu_uuid(s, device))
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
        self._announce_loading(s.name, device, layers, load.reason,
                               None if device == "cpu" else s.config.gpu)
        begin = backend.move if moving and isinstance(backend, MovesInPlace) else backend.start
        begin(launch, self._on_ready_cb(s.name), self._on_exit, self._on_activity_cb(s.name))

    def _announce_loading(self, name: str, device: str, layers: int,
                          reason: LoadReason, gpu: int | None) -> None:
        self._bus.publish(ModelLoading(model=name, placement=describe(device, layers),
                                       reason=reason, gpu=gpu))

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

    # -- helpers -------------------------------------------------------------------------


__all__ = ["AdminResult", "Attach", "ManagerCore", "Measure", "describe"]
