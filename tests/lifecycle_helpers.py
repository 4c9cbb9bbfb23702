"""Builders for lifecycle tests."""

from __future__ import annotations

from dataclasses import replace

from gpuwarden.engine.lifecycle.config import ModelConfig
from gpuwarden.engine.lifecycle.state import ModelState, initial_state


def model(name: str, **kw: object) -> ModelConfig:
    base: dict[str, object] = {"backend": "simulated", "vram_mib": 4000.0, "ram_mib": 4000.0,
                               "idle_timeout_s": 600.0, "load_time_s": 0.0}
    base.update(kw)
    return ModelConfig(name=name, **base)  # type: ignore[arg-type]


def loaded(name: str, *, device: str = "gpu", last_access: float = 0.0, vram: float = 4000.0,
           ram: float = 0.0, **kw: object) -> ModelState:
    cfg_keys = {k: kw.pop(k) for k in list(kw) if k in ModelConfig.__dataclass_fields__}
    s = initial_state(model(name, vram_mib=vram or 4000.0, **cfg_keys))
    return replace(s, device=device, last_access=last_access, ready_since=last_access,
                     vram_mib=vram, ram_mib=ram, **kw)


def by_name(*states: ModelState) -> dict[str, ModelState]:
    return {s.name: s for s in states}
