"""The safety limits acting on the models (loads held while a GPU cools down, the
emergency stop) and the pre-flight of a restart."""

from __future__ import annotations

from dataclasses import replace

from gpuwarden.engine.events import EmergencyStop, ModelRefused, ModelWaiting
from gpuwarden.engine.lifecycle.actions import Load, Stopping
from gpuwarden.engine.lifecycle.config import Placement
from gpuwarden.engine.lifecycle.core_state import CoreState
from gpuwarden.engine.lifecycle.safety_guard import Held, emergency_victims
from gpuwarden.engine.lifecycle.state import ModelState
from gpuwarden.engine.telemetry.snapshot import Snapshot


class Guarding(CoreState):
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
