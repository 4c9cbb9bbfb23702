"""The load commands of the lifecycle manager: load (with the user's choice when a
model does not fit whole), the preview of that choice, the pre-flight verdict, and the
GPU a ``gpu = "auto"`` model goes to."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from gpuwarden.engine.events import LoadReason
from gpuwarden.engine.lifecycle import policy
from gpuwarden.engine.lifecycle.actions import Action, Load, Refusal, Unload
from gpuwarden.engine.lifecycle.config import ModelConfig
from gpuwarden.engine.lifecycle.core import AdminResult, ManagerCore
from gpuwarden.engine.lifecycle.state import ModelState
from gpuwarden.engine.safety.preflight import Verdict as PreflightVerdict
from gpuwarden.engine.safety.preflight import preflight
from gpuwarden.engine.safety.preflight import refused as refused_verdict


class LoadCommands(ManagerCore):
    def preflight(self, name: str) -> PreflightVerdict | None:
        """What a load of ``name`` would hold and whether it fits now (None: no such
        model), priced as the load itself would be."""
        with self._lock:
            s = self._states.get(name)
            if s is None or name in self._dropping:
                return None
            cfg = self._next_config.get(name, s.config)
            free = {i: f for i, f in self._free_vram().items() if f is not None}
            margin = self._cfg.safety.vram_margin_mib
            planner = self._planner
        if planner is None:
            return None
        path = cfg.path if cfg.path is not None else cfg.name
        try:
            plan = planner.plan(cfg)
        except ValueError as exc:
            return refused_verdict(path, str(exc))
        return preflight(plan, free, requested=s.placement,
                         gpu="auto" if cfg.gpu_auto else cfg.gpu,
                         overhead_mib=planner.overhead_mib(cfg), margin_mib=margin)

    def load(self, name: str, reason: LoadReason = "user",
             how: policy.LoadHow = "auto") -> AdminResult:
        """Load ``name``; when it does not fit whole, ``how`` says what to do (see
        :func:`policy.plan_load`)."""
        with self._locked():
            if (err := self._unknown(name)) is not None:
                return err
            if name in self._next_config and not self._states[name].live:
                self._reset_config(name, self._next_config.pop(name))
            s = self._states[name]
            if s.loaded or s.device == "loading":
                return AdminResult(True, f"{name} is already {s.device}")
            if s.device == "stopping":
                return AdminResult(False, f"{name} is stopping; load it again once it "
                                          "has stopped")
            if (refused := self._cannot_load(s)) is not None:
                return refused
            s = self._best_gpu(s)
            self._put(s)
            margin, layers_that_fit = self._load_pricing(s)
            plan = policy.plan_load(self._states, name, self._free_vram().get(s.config.gpu),
                                    self._clock.time(), self._estimate, reason,
                                    margin_mib=margin, max_layers=layers_that_fit, how=how)
            if isinstance(plan, Refusal):
                return AdminResult(False, plan.message)
            self._put(replace(s, user_unloaded=False, gave_up=False, restart_at=None,
                              home=None, return_after=None,
                              consecutive_crashes=0 if s.gave_up else s.consecutive_crashes))
            self._apply_all(plan)
            if (held := self._held.get(name)) is not None:
                return AdminResult(True, f"{name} will load once it is safe: {held.reason}")
            return AdminResult(True, self._said_load(s, plan))

    def load_preview(self, name: str) -> policy.LoadPreview | AdminResult:
        """What :meth:`load` would do now, priced the same way; nothing is done. An
        AdminResult says why there is nothing to choose: the model cannot load (not ok),
        or it is loaded or loading already (ok)."""
        with self._locked():
            if (err := self._unknown(name)) is not None:
                return err
            s = self._states[name]
            if s.live:
                return AdminResult(s.device != "stopping", f"{name} is already {s.device}")
            s = replace(s, config=self._next_config.get(name, s.config))
            if (refused := self._cannot_load(s)) is not None:
                return refused
            s = self._best_gpu(s)
            margin, layers_that_fit = self._load_pricing(s)
            return policy.preview_load({**self._states, name: s}, name,
                                       self._free_vram().get(s.config.gpu), self._clock.time(),
                                       self._estimate, margin_mib=margin,
                                       max_layers=layers_that_fit)

    def _load_pricing(self, s: ModelState) -> tuple[float, Callable[[float], int]]:
        """The margin a load keeps and how many of its layers fit in a free amount."""
        planner = self._planner
        margin = self._cfg.safety.vram_margin_mib if planner else 0.0

        def layers_that_fit(free: float) -> int:
            return planner.max_layers(s.config, free, margin) if planner else 0
        return margin, layers_that_fit

    def _said_load(self, s: ModelState, plan: list[Action]) -> str:
        swapped = [a.model for a in plan if isinstance(a, Unload)]
        also = f" (unloading {', '.join(swapped)} to make room)" if swapped else ""
        where = f" on GPU {s.config.gpu}, where it fits best" if s.config.gpu_auto and \
            s.placement != "cpu" else ""
        partial = [a.placement for a in plan if isinstance(a, Load)
                   and isinstance(a.placement, int) and a.placement != s.placement]
        if partial:
            where += f" with {partial[0]} of {s.config.layers} layers on GPU {s.config.gpu}"
        return f"loading {s.name}{where}{also}"

    def _best_gpu(self, s: ModelState) -> ModelState:
        """``gpu = "auto"``: the GPU where the model fits fully (most room left), else the
        one that takes the most layers."""
        free = {i: f for i, f in self._free_vram(loads_allowed=True).items() if f is not None}
        if not s.config.gpu_auto or not free or s.placement == "cpu" or (
                len(free) < 2 and s.config.gpu in free):
            return s  # nothing to choose (a lost or hot GPU is no choice)
        margin = self._cfg.safety.vram_margin_mib

        def rank(index: int) -> tuple[int, float]:
            cfg = replace(s.config, gpu=index)
            room = free[index] - self._estimate(cfg, s.placement) - margin
            if room >= 0:
                return (1_000_000, room)
            layers = self._planner.max_layers(cfg, free[index], margin) if self._planner else 0
            return (layers, free[index])

        best = max(sorted(free), key=rank)
        return replace(s, config=replace(s.config, gpu=best))

    def _cannot_load(self, s: ModelState) -> AdminResult | None:
        if self._planner is not None and (problem := self._planner.problem(s.config)):
            return AdminResult(False, f"{s.name} cannot be loaded: {problem}")
        if s.config.backend not in self._backends:
            return AdminResult(False, f"the {s.config.backend} backend is not available in "
                                      f"this version of gpuwarden, so {s.name} cannot load")
        if s.placement not in ("cpu", "auto") and not self._has_gpu(s.config.gpu):
            count = len(self._snapshot.gpus) if self._snapshot else 0
            return AdminResult(False, f"{s.name} is configured for GPU {s.config.gpu}, but "
                                      f"this machine has {count} GPU(s); set gpu = "
                                      f"0..{max(0, count - 1)} or placement = \"cpu\" in "
                                      "the config")
        return None

    def _reset_config(self, name: str, model_config: ModelConfig) -> None:
        s = self._states[name]
        self._put(replace(s, config=model_config, placement=model_config.placement))
