"""The thermal, power and memory limits the engine keeps, per GPU and for the host.

Each limit comes from one of three places, in this order: the user's ``[safety]`` table
(``"config"``), the card itself where NVML knows its thresholds (``"card"``: warn 5 C
under the card's slowdown temperature and hard at it, power warn at 95 % and hard at
105 % of the enforced power limit), or the built-in table (``"default"``: GPU 80/85 C,
GPU power 250/300 W, VRAM 90 %, CPU 90/95 C, CPU 95 %, RAM 85 %).

A warn level must be below its hard level. The config parser refuses a pair configured
the wrong way round; when only one of a pair is configured and it lands on the wrong
side of the card's or the table's other value, that other value is derived from the
configured one (with the card's gap) so the pair stays in order, and is marked
``"config"``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from gpuwarden.engine.telemetry.snapshot import GpuSample

LimitSource = Literal["config", "card", "default"]

# The built-in table, used where neither the config nor the card says.
DEFAULT_GPU_TEMP_WARN_C = 80.0
DEFAULT_GPU_TEMP_HARD_C = 85.0
DEFAULT_GPU_POWER_WARN_W = 250.0
DEFAULT_GPU_POWER_HARD_W = 300.0
DEFAULT_VRAM_PCT = 90.0
DEFAULT_CPU_TEMP_WARN_C = 90.0
DEFAULT_CPU_TEMP_HARD_C = 95.0
DEFAULT_CPU_PCT = 95.0
DEFAULT_RAM_PCT = 85.0
DEFAULT_COOLDOWN_MARGIN_C = 5.0
DEFAULT_COOLDOWN_TIMEOUT_S = 300.0
DEFAULT_VRAM_MARGIN_MIB = 512.0

# How the card's own thresholds become limits.
CARD_TEMP_WARN_BELOW_C = 5.0  # warn this many degrees under the card's slowdown temperature
CARD_POWER_WARN_FRACTION = 0.95  # of the enforced power limit
CARD_POWER_HARD_FRACTION = 1.05

# (warn, hard) pairs of SafetyConfig: warn must be below hard.
SAFETY_ORDER: tuple[tuple[str, str], ...] = (
    ("gpu_temp_warn_c", "gpu_temp_hard_c"),
    ("gpu_power_warn_w", "gpu_power_hard_w"),
    ("cpu_temp_warn_c", "cpu_temp_hard_c"),
)


@dataclass(frozen=True, slots=True)
class SafetyConfig:
    """The ``[safety]`` table. A limit left None comes from the card (where NVML knows
    it) or from the built-in table. ``cooldown_margin_c``: after a temperature reached
    its warn level, it must fall this far under warn before loads go on (and an abort is
    lifted); ``cooldown_timeout_s``: how long a load waits for a GPU to cool down before
    it gives up."""

    gpu_temp_warn_c: float | None = None
    gpu_temp_hard_c: float | None = None
    gpu_power_warn_w: float | None = None
    gpu_power_hard_w: float | None = None
    vram_pct: float | None = None
    cpu_temp_warn_c: float | None = None
    cpu_temp_hard_c: float | None = None
    cpu_pct: float | None = None
    ram_pct: float | None = None
    cooldown_margin_c: float = DEFAULT_COOLDOWN_MARGIN_C
    cooldown_timeout_s: float = DEFAULT_COOLDOWN_TIMEOUT_S
    vram_margin_mib: float = DEFAULT_VRAM_MARGIN_MIB  # the pre-flight keeps this much free

    def __post_init__(self) -> None:
        for low_key, high_key in SAFETY_ORDER:
            low, high = getattr(self, low_key), getattr(self, high_key)
            if low is not None and high is not None and low >= high:
                raise ValueError(f"{low_key} ({low:g}) must be below {high_key} ({high:g})")
        if self.cooldown_margin_c < 0 or self.cooldown_timeout_s < 0:
            raise ValueError("cooldown_margin_c and cooldown_timeout_s must be >= 0")


@dataclass(frozen=True, slots=True)
class Limit:
    """One limit: its value, where it came from, and (``note``) how a person is told
    where it came from, e.g. ``"card slowdown"`` or ``"95 % of the card's 300 W"``."""

    value: float
    source: LimitSource
    note: str = ""

    @property
    def origin(self) -> str:
        """The note, or the source when there is none: what a reason puts in brackets."""
        return self.note or self.source


@dataclass(frozen=True, slots=True)
class GpuLimits:
    gpu: int
    temp_warn_c: Limit
    temp_hard_c: Limit
    power_warn_w: Limit
    power_hard_w: Limit
    vram_pct: Limit
    cooldown_margin_c: float = DEFAULT_COOLDOWN_MARGIN_C


@dataclass(frozen=True, slots=True)
class HostLimits:
    cpu_temp_warn_c: Limit
    cpu_temp_hard_c: Limit
    cpu_pct: Limit
    ram_pct: Limit
    cooldown_margin_c: float = DEFAULT_COOLDOWN_MARGIN_C


def _known(value: float | None) -> float | None:
    """A usable card threshold: finite and above 0, else None."""
    return value if value is not None and math.isfinite(value) and value > 0 else None


def _configured(value: float | None) -> Limit | None:
    return None if value is None else Limit(value, "config")


def _pair(
    warn: Limit, hard: Limit, *, to_hard: float, scale: bool, warn_key: str, hard_key: str
) -> tuple[Limit, Limit]:
    """``(warn, hard)`` kept in order: when one is configured and the other is not and
    they cross, the other is derived from the configured one (``to_hard``: the gap, added
    in degrees or, with ``scale``, as a factor)."""
    if warn.value < hard.value or warn.source == hard.source:
        return warn, hard
    if warn.source == "config" and hard.source != "config":
        value = warn.value * to_hard if scale else warn.value + to_hard
        return warn, Limit(value, "config", f"derived from {warn_key}")
    if hard.source == "config" and warn.source != "config":
        value = hard.value / to_hard if scale else hard.value - to_hard
        return Limit(value, "config", f"derived from {hard_key}"), hard
    return warn, hard


def gpu_limits(sample: GpuSample, cfg: SafetyConfig) -> GpuLimits:
    """The limits of the GPU ``sample`` reads: configured, else the card's, else the
    table's."""
    slowdown = _known(sample.temperature_slowdown_c)
    if slowdown is not None:
        card_temp = (Limit(slowdown - CARD_TEMP_WARN_BELOW_C, "card",
                           f"card slowdown - {CARD_TEMP_WARN_BELOW_C:g} C"),
                     Limit(slowdown, "card", "card slowdown"))
    else:
        card_temp = (Limit(DEFAULT_GPU_TEMP_WARN_C, "default"),
                     Limit(DEFAULT_GPU_TEMP_HARD_C, "default"))
    enforced = _known(sample.power_limit_w)
    if enforced is not None:
        card_power = (
            Limit(enforced * CARD_POWER_WARN_FRACTION, "card",
                  f"{CARD_POWER_WARN_FRACTION:.0%} of the card's {enforced:.0f} W limit"),
            Limit(enforced * CARD_POWER_HARD_FRACTION, "card",
                  f"{CARD_POWER_HARD_FRACTION:.0%} of the card's {enforced:.0f} W limit"))
    else:
        card_power = (Limit(DEFAULT_GPU_POWER_WARN_W, "default"),
                      Limit(DEFAULT_GPU_POWER_HARD_W, "default"))
    temp = _pair(_configured(cfg.gpu_temp_warn_c) or card_temp[0],
                 _configured(cfg.gpu_temp_hard_c) or card_temp[1],
                 to_hard=CARD_TEMP_WARN_BELOW_C, scale=False,
                 warn_key="gpu_temp_warn_c", hard_key="gpu_temp_hard_c")
    power = _pair(_configured(cfg.gpu_power_warn_w) or card_power[0],
                  _configured(cfg.gpu_power_hard_w) or card_power[1],
                  to_hard=CARD_POWER_HARD_FRACTION / CARD_POWER_WARN_FRACTION, scale=True,
                  warn_key="gpu_power_warn_w", hard_key="gpu_power_hard_w")
    vram = _configured(cfg.vram_pct) or Limit(DEFAULT_VRAM_PCT, "default")
    return GpuLimits(sample.index, temp[0], temp[1], power[0], power[1], vram,
                     cfg.cooldown_margin_c)


def host_limits(cfg: SafetyConfig) -> HostLimits:
    """The host's limits: configured, else the table's (no card to ask)."""
    temp = _pair(
        _configured(cfg.cpu_temp_warn_c)
        or Limit(DEFAULT_CPU_TEMP_WARN_C, "default"),
        _configured(cfg.cpu_temp_hard_c)
        or Limit(DEFAULT_CPU_TEMP_HARD_C, "default"),
        to_hard=DEFAULT_CPU_TEMP_HARD_C - DEFAULT_CPU_TEMP_WARN_C, scale=False,
        warn_key="cpu_temp_warn_c", hard_key="cpu_temp_hard_c")
    cpu = _configured(cfg.cpu_pct) or Limit(DEFAULT_CPU_PCT, "default")
    ram = _configured(cfg.ram_pct) or Limit(DEFAULT_RAM_PCT, "default")
    return HostLimits(temp[0], temp[1], cpu, ram, cfg.cooldown_margin_c)
