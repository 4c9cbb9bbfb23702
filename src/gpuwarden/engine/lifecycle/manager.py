"""The lifecycle manager: answers requests (the user's commands, each sample, the
driver's ticks) and tells everyone what happened.

Thread model: every public method holds one lock, so backends may report from their own
threads and a request handler may call :meth:`notify_access` / :meth:`in_use` from
anywhere; the events published meanwhile reach listeners after the lock is released.
Decisions are the pure functions of ``policy``, ``pressure`` and ``crash``; the mechanism
that carries them out is in ``core``.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace

from gpuwarden.engine.events import AutomationChanged, ModelLoading, ModelRefused
from gpuwarden.engine.lifecycle import policy
from gpuwarden.engine.lifecycle.actions import Offload, Stopping, Unload
from gpuwarden.engine.lifecycle.backend import Launch
from gpuwarden.engine.lifecycle.config import (
    EVICTION_POLICIES,
    Config,
    EvictionPolicy,
    Placement,
)
from gpuwarden.engine.lifecycle.config_diff import ConfigDiff
from gpuwarden.engine.lifecycle.core import AdminResult, Attach, describe
from gpuwarden.engine.lifecycle.estimate import resolve
from gpuwarden.engine.lifecycle.loading import LoadCommands
from gpuwarden.engine.lifecycle.pressure import PressureKey
from gpuwarden.engine.lifecycle.state import ModelState, initial_state
from gpuwarden.engine.safety.verdict import Verdict
from gpuwarden.engine.telemetry.snapshot import Snapshot, fmt_mib

log = logging.getLogger(__name__)


class LifecycleManager(LoadCommands):
    """The public side: views, the per-sample heartbeat, and the user's requests."""

    def save_hints(self) -> None:
        """Write the persisted hints now (also done every minute and at shutdown)."""
        with self._locked():
            self._hints.save()

    # -- views ----------------------------------------------------------------------

    @property
    def config(self) -> Config:
        return self._cfg

    def states(self) -> dict[str, ModelState]:
        with self._lock:
            return {n: s for n, s in self._states.items() if n not in self._dropping}

    def state(self, name: str) -> ModelState:
        with self._lock:
            return self._states[name]

    def safety_verdicts(self) -> Mapping[str, Verdict]:
        with self._lock:
            return self.safety.verdicts()

    def next_deadline(self) -> float | None:
        """When (wall clock) the manager next needs :meth:`tick`: a restart due, a load
        that times out, a simulated model that becomes ready."""
        with self._lock:
            due = [s.restart_at for s in self._states.values()
                   if s.restart_at is not None and not s.live]  # a live one: when it exits
            limit = self._cfg.restart.startup_timeout_s
            due += [s.loaded_at + limit for s in self._states.values()
                    if s.device == "loading" and s.loaded_at is not None]
            due += [t for b in self._backends.values() if (t := b.next_due()) is not None]
            return min(due) if due else None

    # -- the engine's heartbeat -------------------------------------------------------

    def on_snapshot(self, snap: Snapshot) -> None:
        """Called for every telemetry sample: pressure first, then the slower policies."""
        with self._locked():
            self._snapshot = snap
            now = self._clock.time()
            for backend in self._backends.values():
                backend.poll(now)
            self._update_measured(snap)
            self._apply_safety(snap)
            relief = self.pressure.check(snap, self._states, now, self._can_offload)
            if not self.paused:  # paused: pressure is still seen and said, not relieved
                self._apply_all(relief)
                self._apply_all(policy.idle_actions(self._states, now))
                usable = self._free_vram(loads_allowed=True)
                self._apply_all(policy.restore_actions(self._states, usable, now,
                                                       self._estimate,
                                                       self._cfg.safety.vram_margin_mib))
                self._apply_all(policy.return_actions(self._states, self._rooms(snap), now,
                                                      self._estimate))
            self._tick(now)
            self._hints.save_if_due()

    def _rooms(self, snap: Snapshot) -> dict[int, policy.GpuRoom]:
        free = self._free_vram(loads_allowed=True)
        rooms = {}
        for g in snap.gpus:
            room, total = free.get(g.index), g.memory_total_mib
            if g.available and room is not None and total:
                rooms[g.index] = policy.GpuRoom(
                    used_mib=total - room, total_mib=total,
                    clear_pct=self._cfg.pressure.vram.clear,
                    under_pressure=PressureKey("vram", g.index) in self.pressure.active,
                    settling=g.index in self._arriving())
        return rooms

    def _arriving(self) -> set[int]:
        """GPUs a model is on its way to (loading, or stopping to move there): what it
        will hold is not in the readings yet."""
        gpus = {s.config.gpu for s in self._states.values()
                if s.device == "loading" and s.placement != "cpu"}
        gpus |= {self._states[n].config.gpu for n, stop in self._stopping.items()
                 if stop.then is not None and stop.then.placement != "cpu"}
        return gpus

    def tick(self) -> None:
        """Fire due restarts and time-outs without waiting for the next sample."""
        with self._locked():
            now = self._clock.time()
            for backend in self._backends.values():
                backend.poll(now)
            self._tick(now)

    # -- user requests ------------------------------------------------------------------

    def pause_automation(self, paused: bool) -> AdminResult:
        """Pause (or resume) gpuwarden's own decisions: idle unloads, pressure relief,
        restores, returns to the GPU and restarts after a crash (held until resumed). The
        user's commands and the safety limits act as always."""
        with self._locked():
            if paused == self.paused:
                return AdminResult(True, "automation is already "
                                         f"{'paused' if paused else 'running'}")
            self.paused = paused
            self._bus.publish(AutomationChanged(paused=paused))
            if not paused:
                self._tick(self._clock.time())  # restarts held while paused, now
            return AdminResult(True, "automation paused: models stay as they are until you "
                                     "resume it" if paused else "automation resumed")

    def unload(self, name: str) -> AdminResult:
        with self._locked():
            if (err := self._unknown(name)) is not None:
                return err
            s = self._states[name]
            self._put(replace(s, user_unloaded=True, restart_at=None, displaced_by=None,
                              home=None, return_after=None, waiting_for=None))
            self._waiting.pop(name, None)
            self._held.pop(name, None)
            if not s.live:
                return AdminResult(True, f"{name} is not loaded")
            self._stop(name, Stopping("user"))
            return AdminResult(True, f"unloading {name}")

    def offload(self, name: str) -> AdminResult:
        with self._locked():
            if (err := self._unknown(name)) is not None:
                return err
            s = self._states[name]
            if not s.on_gpu:
                return AdminResult(False, f"{name} is not on a GPU ({s.device})")
            if not self._can_offload(s):
                return AdminResult(False, f"the {s.config.backend} backend cannot run on the CPU")
            self._apply(Offload(name, "user"))
            return AdminResult(True, f"moving {name} to the CPU")

    def restart(self, name: str) -> AdminResult:
        with self._locked():
            if (err := self._unknown(name)) is not None:
                return err
            s = self._states[name]
            if (refused := self._cannot_load(s)) is not None:
                return refused
            if s.live:
                self._stop(name, Stopping("restart"))
            now = self._clock.time()
            pending = self._states[name].restart_at  # never push a due restart back
            self._put(replace(self._states[name],
                              restart_at=now if pending is None else min(pending, now),
                              user_unloaded=False, gave_up=False))
            self._due(name, now)
            return AdminResult(True, f"restarting {name}")

    def set_policy(self, name: str, eviction: EvictionPolicy | None) -> AdminResult:
        with self._locked():
            if (err := self._unknown(name)) is not None:
                return err
            if eviction is not None and eviction not in EVICTION_POLICIES:
                return AdminResult(False, f"the eviction policy must be one of "
                                          f"{', '.join(EVICTION_POLICIES)}, not {eviction!r}")
            self._put(replace(self._states[name], eviction_override=eviction))
            self._hints.remember(name, eviction_override=eviction)
            return AdminResult(True, f"{name}: eviction policy {eviction or 'from config'}")

    def pin(self, name: str) -> AdminResult:
        """Never unload or move it (eviction policy ``never``)."""
        result = self.set_policy(name, "never")
        return AdminResult(True, f"{name} is pinned") if result.ok else result

    def unpin(self, name: str) -> AdminResult:
        """Back to the config's eviction policy (``idle`` where the config pins it)."""
        with self._locked():
            if (err := self._unknown(name)) is not None:
                return err
            configured = self._states[name].config.eviction
            result = self.set_policy(name, "idle" if configured == "never" else None)
        return AdminResult(True, f"{name} is no longer pinned") if result.ok else result

    def set_priority(self, name: str, priority: int | None) -> AdminResult:
        with self._locked():
            if (err := self._unknown(name)) is not None:
                return err
            if priority is not None and (isinstance(priority, bool)
                                         or not isinstance(priority, int)):
                return AdminResult(False, f"the priority must be a whole number, not "
                                          f"{priority!r}")
            self._put(replace(self._states[name], priority_override=priority))
            self._hints.remember(name, priority_override=priority)
            shown = "from config" if priority is None else str(priority)
            return AdminResult(True, f"{name}: priority {shown}")

    def make_room(self, gpu: int, mib: float | None) -> AdminResult:
        """Free ``mib`` of VRAM on ``gpu`` now (None: everything that is not pinned), in
        the relief order of pressure, for another program about to start."""
        with self._locked():
            if not self._has_gpu(gpu):
                return AdminResult(False, f"there is no GPU {gpu}")
            now = self._clock.time()
            actions = policy.room_actions(self._states, gpu, mib, now, self._can_offload)
            if not actions:
                return AdminResult(False, f"nothing on GPU {gpu} can be moved: no model "
                                          "there, or every one is pinned or serving")
            freed = sum(self._states[a.model].held_vram_mib for a in actions)
            self._apply_all(actions)
            moved = [a.model for a in actions if isinstance(a, Offload)]
            gone = [a.model for a in actions if isinstance(a, Unload)]
            said = [f"moving {', '.join(moved)} to the CPU"] if moved else []
            said += [f"unloading {', '.join(gone)}"] if gone else []
            short = "" if mib is None or freed >= mib else \
                f"; only about {fmt_mib(freed)} of {fmt_mib(mib)} can be freed (the rest " \
                "is pinned or serving)"
            return AdminResult(True, f"{'; '.join(said)}: about {fmt_mib(freed)} freed on "
                                     f"GPU {gpu}{short}")

    def emergency_stop(self, gpu: int | None = None,
                       reason: str = "asked for by hand") -> AdminResult:
        """Stop every model on ``gpu`` (None: every model) now; none restarts by itself."""
        with self._locked():
            if gpu is not None and not self._has_gpu(gpu):
                return AdminResult(False, f"there is no GPU {gpu}")
            names = self._emergency_stop(gpu, reason)
            where = "every GPU" if gpu is None else f"GPU {gpu}"
            stopped = ", ".join(names) if names else "nothing was running"
            return AdminResult(True, f"emergency stop on {where}: {stopped}")

    def notify_access(self, name: str) -> None:
        with self._locked():
            if name in self._states:
                self._touch(name)

    @contextmanager
    def in_use(self, name: str) -> Iterator[None]:
        """While inside, the model serves a request: never evicted or offloaded."""
        with self._locked():
            self._touch(name)
            self._put(replace(self._states[name], in_use=self._states[name].in_use + 1))
        try:
            yield
        finally:
            with self._locked():
                s = self._states[name]
                self._put(replace(s, in_use=max(0, s.in_use - 1),
                                  last_access=self._clock.time()))

    # -- the config changes -----------------------------------------------------------

    def reconfigure(self, diff: ConfigDiff, *, autostart: bool = True) -> None:
        """Apply a re-read config: new models appear (and autostart, unless
        ``autostart`` is False: the caller does it), removed ones stop and go, changed
        ones take their new settings at their next load; limits apply at once."""
        with self._locked():
            self._cfg = diff.config
            self.pressure.configure(diff.config.pressure)
            for model in diff.added:
                if model.name in self._dropping:  # back before its old process ended
                    self._dropping.discard(model.name)
                    self._next_config[model.name] = model
                    continue
                self._states[model.name] = self._hints.restore(
                    {model.name: initial_state(model)})[model.name]
            for model in diff.changed:
                if self._states[model.name].live:
                    self._next_config[model.name] = model
                else:
                    self._reset_config(model.name, model)
            for name in diff.removed:
                s = self._states.get(name)
                if s is None:
                    continue
                if s.live:
                    self._dropping.add(name)
                    self._put(replace(s, user_unloaded=True, restart_at=None))
                    self._stop(name, Stopping("removed"))
                else:
                    self._drop(name)
            if autostart:
                self._autostart(m.name for m in diff.added if m.autostart)

    # -- adoption, autostart, shutdown ----------------------------------------------------

    def adopt(self, name: str, gpu_layers: int, attach: Attach, gpu: int | None = None) -> bool:
        """Take over a server that is already running (started by an earlier gpuwarden)
        instead of launching a second copy. ``attach`` hooks the backend up to it; ``gpu``:
        the GPU it runs on, when known (it counts there, whatever the config says now)."""
        with self._locked():
            s = self._states.get(name)
            if s is None or s.live:
                return False
            if gpu is not None and gpu != s.config.gpu:
                s = replace(s, config=replace(s.config, gpu=gpu))
            self._next_instance += 1
            device, layers = resolve(gpu_layers, s.config, has_gpu=gpu_layers > 0)
            launch = Launch(s.config, device, layers, self._next_instance)
            placement: Placement = gpu_layers if device == "partial" else (
                "cpu" if device == "cpu" else "gpu")
            self._put(replace(s, device="loading", instance=launch.instance,
                              loaded_at=self._clock.time(), ready_since=None,
                              placement=placement,
                              gpu_layers=layers if device == "partial" else None,
                              vram_mib=None,
                              vram_est_mib=self._estimate(s.config, placement) if layers
                              else 0.0))
            self._bus.publish(ModelLoading(model=name, placement=describe(device, layers),
                                           reason="adopted",
                                           gpu=None if device == "cpu" else s.config.gpu))
            attach(launch, self._on_ready_cb(name), self._on_exit, self._on_activity_cb(name))
            return True

    def autostart(self) -> None:
        with self._locked():
            self._autostart(s.name for s in self._states.values() if s.config.autostart)

    def _autostart(self, names: Iterable[str]) -> None:
        for name in list(names):
            if self._states[name].live:
                continue
            result = self.load(name, "autostart")
            if not result.ok:
                log.warning("autostart of %s refused: %s", name, result.message)
                self._bus.publish(ModelRefused(model=name, message=result.message))

    def shutdown(self, keep: Collection[str] = ()) -> None:
        """Stop every model (reason: shutdown) but those of the backends in ``keep`` (left
        running for the next gpuwarden to adopt); nothing is restarted afterwards."""
        with self._locked():
            self._waiting.clear()
            for s in list(self._states.values()):
                if s.config.backend in keep:
                    continue
                self._put(replace(s, restart_at=None, user_unloaded=True))
                if s.live:
                    self._stop(s.name, Stopping("shutdown"))
            self._hints.save()


__all__ = ["AdminResult", "Attach", "LifecycleManager", "ModelState", "Placement", "Snapshot"]
