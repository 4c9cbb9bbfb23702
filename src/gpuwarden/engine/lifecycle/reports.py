"""What the backends report, from their own threads: a model is ready (and what it
holds, measured by pid), it was used, its process ended (cleanly, or a crash with its
restart decided by the crash policy)."""

from __future__ import annotations

from dataclasses import replace

from gpuwarden.engine.events import (
    CrashKind,
    ModelCrashed,
    ModelOffloaded,
    ModelReady,
    ModelRestartExhausted,
    ModelRestartScheduled,
    ModelUnloaded,
    UnloadReason,
)
from gpuwarden.engine.lifecycle import crash
from gpuwarden.engine.lifecycle.actions import Stopping, StopReason
from gpuwarden.engine.lifecycle.backend import ActivityCallback, Footprint, ReadyCallback
from gpuwarden.engine.lifecycle.core_state import MAX_CRASH_HISTORY, CoreState, describe
from gpuwarden.engine.lifecycle.state import CrashRecord, Device, ModelState
from gpuwarden.engine.telemetry.snapshot import Snapshot, measured_vram_mib


class BackendReports(CoreState):
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
        off_gpu = fp.on_gpu is False or (fp.on_gpu is None and fp.vram_mib == 0)
        device: Device = "cpu" if off_gpu else (
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
                                     ram_mib=fp.ram_mib,
                                     gpu=None if device == "cpu" else s.config.gpu))

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
        if all(g.processes is None for g in snap.gpus):
            return  # no GPU lists its processes: nothing can be measured
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


def _unload_reason(reason: StopReason) -> UnloadReason | None:
    """What a clean stop is announced as: None for a restart (the model comes straight
    back); a move cut short by the user is the user's unload."""
    if reason == "restart" or reason == "startup_timeout":
        return None
    if reason == "relocate":
        return "user"
    return reason
