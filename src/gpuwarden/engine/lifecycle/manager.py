"""The lifecycle manager: applies the policy's decisions through the backends and tells
everyone what happened.

Thread model: every public method takes one lock, so backends may report from their own
threads and a request handler may call :meth:`notify_access` / :meth:`in_use` from
anywhere. Decisions are the pure functions of ``policy``, ``pressure`` and ``crash``; the
mechanism that carries them out is in ``core``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from gpuwarden.engine.events import ModelLoading, ModelRefused
from gpuwarden.engine.lifecycle import policy
from gpuwarden.engine.lifecycle.actions import Offload, Refusal
from gpuwarden.engine.lifecycle.backend import Launch
from gpuwarden.engine.lifecycle.config import EvictionPolicy, Placement
from gpuwarden.engine.lifecycle.core import AdminResult, Attach, ManagerCore, describe
from gpuwarden.engine.lifecycle.estimate import resolve
from gpuwarden.engine.lifecycle.state import ModelState
from gpuwarden.engine.telemetry.snapshot import Snapshot

log = logging.getLogger(__name__)


class LifecycleManager(ManagerCore):
    """The public side: views, the per-sample heartbeat, and the user's requests."""

    def save_hints(self) -> None:
        """Write the persisted hints now (also done every minute and at shutdown)."""
        with self._lock:
            self._hints.save()

    # -- views ----------------------------------------------------------------------

    def states(self) -> dict[str, ModelState]:
        with self._lock:
            return dict(self._states)

    def state(self, name: str) -> ModelState:
        with self._lock:
            return self._states[name]

    def next_deadline(self) -> float | None:
        """When the manager next needs :meth:`tick` (a restart due), if ever."""
        with self._lock:
            due = [s.restart_at for s in self._states.values() if s.restart_at is not None]
            return min(due) if due else None

    # -- the engine's heartbeat -------------------------------------------------------

    def on_snapshot(self, snap: Snapshot) -> None:
        """Called for every telemetry sample: pressure first, then the slower policies."""
        with self._lock:
            self._snapshot = snap
            now = self._clock.time()
            for backend in self._backends.values():
                backend.poll(now)
            self._apply_all(self.pressure.check(snap, self._states, now, self._can_offload))
            self._apply_all(policy.idle_actions(self._states, now))
            self._apply_all(
                policy.restore_actions(self._states, self._free_vram(), now, self._estimate)
            )
            self._tick(now)
            self._hints.save_if_due()

    def tick(self) -> None:
        """Fire due restarts and time-outs without waiting for the next sample."""
        with self._lock:
            now = self._clock.time()
            for backend in self._backends.values():
                backend.poll(now)
            self._tick(now)

    # -- user requests ------------------------------------------------------------------

    def load(self, name: str, reason: str = "user") -> AdminResult:
        with self._lock:
            if (err := self._unknown(name)) is not None:
                return err
            s = self._states[name]
            if s.loaded or s.device == "loading":
                return AdminResult(True, f"{name} is already {s.device}")
            if s.config.backend not in self._backends:
                return AdminResult(
                    False,
                    f"the {s.config.backend} backend is not available "
                    f"in this version of gpuwarden, so {name} cannot load",
                )
            if s.placement not in ("cpu", "auto") and not self._has_gpu(s.config.gpu):
                count = len(self._snapshot.gpus) if self._snapshot else 0
                return AdminResult(
                    False,
                    f"{name} is configured for GPU {s.config.gpu}, but this machine has "
                    f"{count} GPU(s); set gpu = 0..{max(0, count - 1)} or placement = "
                    '"cpu" in the config',
                )
            plan = policy.plan_load(
                self._states,
                name,
                self._free_vram().get(s.config.gpu),
                self._clock.time(),
                self._estimate,
                reason,
            )
            if isinstance(plan, Refusal):
                return AdminResult(False, plan.message)
            self._put(
                s.replace(
                    user_unloaded=False,
                    gave_up=False,
                    restart_at=None,
                    consecutive_crashes=0 if s.gave_up else s.consecutive_crashes,
                )
            )
            self._apply_all(plan)
            return AdminResult(True, f"loading {name}")

    def unload(self, name: str) -> AdminResult:
        with self._lock:
            if (err := self._unknown(name)) is not None:
                return err
            s = self._states[name]
            self._put(s.replace(user_unloaded=True, restart_at=None, displaced_by=None))
            self._waiting.pop(name, None)
            if not s.live:
                return AdminResult(True, f"{name} is not loaded")
            self._stop(name, "user")
            return AdminResult(True, f"unloading {name}")

    def offload(self, name: str) -> AdminResult:
        with self._lock:
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
        with self._lock:
            if (err := self._unknown(name)) is not None:
                return err
            s = self._states[name]
            if s.live:
                self._stop(name, "restart")
            now = self._clock.time()
            pending = self._states[name].restart_at  # never push a due restart back
            self._put(
                self._states[name].replace(
                    restart_at=now if pending is None else min(pending, now),
                    user_unloaded=False,
                    gave_up=False,
                )
            )
            self._due(name, self._clock.time())
            return AdminResult(True, f"restarting {name}")

    def set_policy(self, name: str, eviction: EvictionPolicy | None) -> AdminResult:
        with self._lock:
            if (err := self._unknown(name)) is not None:
                return err
            self._put(self._states[name].replace(eviction_override=eviction))
            self._hints.remember(name, eviction_override=eviction)
            return AdminResult(True, f"{name}: eviction policy {eviction or 'from config'}")

    def set_priority(self, name: str, priority: int | None) -> AdminResult:
        with self._lock:
            if (err := self._unknown(name)) is not None:
                return err
            self._put(self._states[name].replace(priority_override=priority))
            self._hints.remember(name, priority_override=priority)
            return AdminResult(True, f"{name}: priority {priority}")

    def notify_access(self, name: str) -> None:
        with self._lock:
            if name in self._states:
                self._touch(name)

    @contextmanager
    def in_use(self, name: str) -> Iterator[None]:
        """While inside, the model serves a request: never evicted or offloaded."""
        with self._lock:
            self.notify_access(name)
            self._put(self._states[name].replace(in_use=self._states[name].in_use + 1))
        try:
            yield
        finally:
            with self._lock:
                s = self._states[name]
                self._put(s.replace(in_use=max(0, s.in_use - 1), last_access=self._clock.time()))

    def adopt(self, name: str, gpu_layers: int, attach: Attach) -> bool:
        """Take over a server that is already running (started by an earlier gpuwarden)
        instead of launching a second copy. ``attach`` hooks the backend up to it."""
        with self._lock:
            s = self._states.get(name)
            if s is None or s.live:
                return False
            self._next_instance += 1
            device, layers = resolve(gpu_layers, s.config, has_gpu=gpu_layers > 0)
            launch = Launch(s.config, device, layers, self._next_instance)
            self._put(
                s.replace(
                    device="loading",
                    instance=launch.instance,
                    loaded_at=self._clock.time(),
                    ready_since=None,
                    placement=gpu_layers if device == "partial" else device,
                    gpu_layers=layers if device == "partial" else None,
                )
            )
            self._bus.publish(
                ModelLoading(model=name, placement=describe(device, layers), reason="adopted")
            )
            attach(launch, self._on_ready_cb(name), self._on_exit, self._on_activity_cb(name))
            return True

    def autostart(self) -> None:
        with self._lock:
            for s in list(self._states.values()):
                if s.config.autostart and not s.live:
                    result = self.load(s.name, "autostart")
                    if not result.ok:
                        log.warning("autostart of %s refused: %s", s.name, result.message)
                        self._bus.publish(ModelRefused(model=s.name, message=result.message))

    def shutdown(self) -> None:
        """Stop every model (reason: shutdown); nothing is restarted afterwards."""
        with self._lock:
            self._waiting.clear()
            for s in list(self._states.values()):
                self._put(s.replace(restart_at=None, user_unloaded=True))
                if s.live:
                    self._stop(s.name, "shutdown")
            self._hints.save()


__all__ = ["AdminResult", "Attach", "LifecycleManager", "ModelState", "Placement", "Snapshot"]
