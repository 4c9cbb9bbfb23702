"""The config-file settings the Settings dialog edits: which table and key, how a person
reads it (label, unit, tip), its range (the config reader's own), its default and the
value in force; the pairs that must stay in order; and which keys a file sets."""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path

from gpuwarden.engine.lifecycle.config import (
    PRESSURE_FIELDS,
    PRESSURE_ORDER,
    RESTART_FIELDS,
    SAFETY_FIELDS,
    TOP_FIELDS,
    Config,
)
from gpuwarden.engine.safety import limits
from gpuwarden.engine.safety.limits import SAFETY_ORDER
from gpuwarden.engine.tomlcheck import FieldSpec

_SPECS: Mapping[str, Mapping[str, FieldSpec]] = {
    "": TOP_FIELDS, "pressure": PRESSURE_FIELDS, "restart": RESTART_FIELDS,
    "safety": SAFETY_FIELDS,
}
# What a [safety] limit left out falls back to when the card does not say (the table).
_BUILT_IN: Mapping[str, float] = {
    "gpu_temp_warn_c": limits.DEFAULT_GPU_TEMP_WARN_C,
    "gpu_temp_hard_c": limits.DEFAULT_GPU_TEMP_HARD_C,
    "gpu_power_warn_w": limits.DEFAULT_GPU_POWER_WARN_W,
    "gpu_power_hard_w": limits.DEFAULT_GPU_POWER_HARD_W,
    "vram_pct": limits.DEFAULT_VRAM_PCT,
    "cpu_temp_warn_c": limits.DEFAULT_CPU_TEMP_WARN_C,
    "cpu_temp_hard_c": limits.DEFAULT_CPU_TEMP_HARD_C,
    "cpu_pct": limits.DEFAULT_CPU_PCT,
    "ram_pct": limits.DEFAULT_RAM_PCT,
}
_WARN_BELOW = f"{limits.CARD_TEMP_WARN_BELOW_C:g}"
_POWER_WARN = f"{limits.CARD_POWER_WARN_FRACTION:.0%}".replace("%", " %")
_POWER_HARD = f"{limits.CARD_POWER_HARD_FRACTION:.0%}".replace("%", " %")
# What "from the card" means for each card-derived limit.
CARD_TEXT: Mapping[str, str] = {
    "gpu_temp_warn_c": f"{_WARN_BELOW} °C under its slowdown, else "
                       f"{limits.DEFAULT_GPU_TEMP_WARN_C:g} °C",
    "gpu_temp_hard_c": f"its slowdown, else {limits.DEFAULT_GPU_TEMP_HARD_C:g} °C",
    "gpu_power_warn_w": f"{_POWER_WARN} of its power limit, else "
                        f"{limits.DEFAULT_GPU_POWER_WARN_W:g} W",
    "gpu_power_hard_w": f"{_POWER_HARD} of its power limit, else "
                        f"{limits.DEFAULT_GPU_POWER_HARD_W:g} W",
}


@dataclass(frozen=True)
class Setting:
    """One number in the config file. ``cap``: the highest value offered where the reader
    sets no upper bound; ``card``: left out, the limit comes from the card itself."""

    table: str  # "" for the top level
    key: str
    label: str
    unit: str  # the spin box's suffix, " %"
    read: Callable[[Config], float | None]  # the value in force
    cap: float = 1e6
    decimals: int = 0
    step: float = 1.0
    tip: str = ""

    @property
    def name(self) -> str:
        """``pressure.vram_enter_pct``; a top-level key as it is."""
        return f"{self.table}.{self.key}" if self.table else self.key

    @property
    def spec(self) -> FieldSpec:
        return _SPECS[self.table][self.key]

    @property
    def card(self) -> bool:
        return self.key in CARD_TEXT

    @property
    def integer(self) -> bool:
        return self.spec.kind == "integer"

    @property
    def low(self) -> float:
        low = self.spec.low or 0.0
        return low + 10.0 ** -self.decimals if self.spec.low_open else low

    @property
    def high(self) -> float:
        return self.spec.high if self.spec.high is not None else self.cap

    @property
    def default(self) -> float:
        """The value in force when the key is left out (for a card limit: the table's)."""
        value = self.read(Config())
        return _BUILT_IN[self.key] if value is None else value


def _of(table: str, key: str, label: str, unit: str, *, attr: str | None = None,
        cap: float = 1e6, decimals: int = 0, step: float = 1.0, tip: str = "") -> Setting:
    """A setting read from ``Config`` at ``attr`` (by default ``table.key``)."""
    path = attr or (f"{table}.{key}" if table else key)
    return Setting(table, key, label, unit, attrgetter(path), cap, decimals, step, tip)


def _pressure(key: str, label: str, unit: str, attr: str, *, cap: float = 1e6,
              decimals: int = 0, tip: str = "") -> Setting:
    return _of("pressure", key, label, unit, attr=f"pressure.{attr}", cap=cap,
               decimals=decimals, tip=tip)


_RELIEF = "models are moved to the CPU or unloaded until it clears"
PRESSURE: tuple[Setting, ...] = (
    _pressure("vram_enter_pct", "VRAM pressure at", " %", "vram.enter",
              tip=f"A GPU with this much of its memory used is under pressure: {_RELIEF}."),
    _pressure("vram_clear_pct", "VRAM pressure clears below", " %", "vram.clear"),
    _pressure("ram_enter_pct", "RAM pressure at", " %", "ram.enter",
              tip=f"Host RAM this full is pressure: {_RELIEF}."),
    _pressure("ram_clear_pct", "RAM pressure clears below", " %", "ram.clear"),
    _pressure("cpu_enter_pct", "CPU pressure at", " %", "cpu.enter"),
    _pressure("cpu_clear_pct", "CPU pressure clears below", " %", "cpu.clear"),
    _pressure("disk_free_enter_gib", "Disk pressure with free space under", " GiB",
              "disk.enter_below_gib", cap=1e5, decimals=1),
    _pressure("disk_free_clear_gib", "Disk pressure clears at free space", " GiB",
              "disk.clear_above_gib", cap=1e5, decimals=1),
    _pressure("return_wait_s", "Back to the GPU after", " s", "return_wait_s",
              tip="A model moved to the CPU by VRAM pressure tries its GPU again after "
                  "this long, once the pressure has cleared."),
    _pressure("alert_debounce_s", "Repeat a pressure alert after", " s", "alert_debounce_s",
              cap=86400),
)
_SLOTS = "llama-servers started there get fewer parallel slots"
SAFETY: tuple[Setting, ...] = (
    _of("safety", "gpu_temp_warn_c", "GPU temperature: hold new loads at", " °C",
        tip="No new model is loaded on a GPU this hot until it has cooled down."),
    _of("safety", "gpu_temp_hard_c", "GPU temperature: stop its models at", " °C",
        tip="Every model on a GPU this hot is stopped at once."),
    _of("safety", "gpu_power_warn_w", "GPU power: fewer slots at", " W", cap=5000, step=10,
        tip=f"A GPU drawing this much: {_SLOTS}."),
    _of("safety", "gpu_power_hard_w", "GPU power: stop its models at", " W", cap=5000,
        step=10, tip="Every model on a GPU drawing this much is stopped at once."),
    _of("safety", "vram_pct", "VRAM: fewer slots at", " %", tip=f"A GPU this full: {_SLOTS}."),
    _of("safety", "vram_margin_mib", "VRAM kept free after a load", " MiB", step=128,
        tip="The pre-flight loads a model only if this much VRAM stays free after it."),
    _of("safety", "cpu_temp_warn_c", "CPU temperature: hold new loads at", " °C"),
    _of("safety", "cpu_temp_hard_c", "CPU temperature: stop every model at", " °C"),
    _of("safety", "cpu_pct", "CPU: fewer slots at", " %"),
    _of("safety", "ram_pct", "RAM: fewer slots at", " %"),
    _of("safety", "cooldown_margin_c", "Loads go on after cooling by", " °C",
        tip="After a temperature reached its hold level it must fall this far under it."),
    _of("safety", "cooldown_timeout_s", "A held load gives up after", " s"),
)
MONITORING: tuple[Setting, ...] = (
    _of("", "sample_interval_s", "Read the GPUs and host every", " s", decimals=2,
        step=0.25, tip="Pressure and safety are checked on every reading."),
)
RESTARTS: tuple[Setting, ...] = (
    _of("restart", "backoff_base_s", "First restart after", " s", cap=3600, decimals=1,
        tip="The wait doubles with each crash in a row."),
    _of("restart", "backoff_cap_s", "Longest wait between restarts", " s", cap=86400),
    _of("restart", "max_consecutive", "Crashes in a row before giving up", "", cap=1000,
        tip="Models with eviction = \"never\" are always restarted."),
    _of("restart", "healthy_reset_s", "Crashes forgotten after running", " s", cap=604800),
    _of("restart", "startup_timeout_s", "A start not ready after this is a crash", " s",
        cap=86400),
)
SETTINGS: tuple[Setting, ...] = (*PRESSURE, *SAFETY, *MONITORING, *RESTARTS)
# (lower, higher, strict): the first must stay below (strict) or at most the second.
ORDER: tuple[tuple[str, str, bool], ...] = (
    *((f"pressure.{low}", f"pressure.{high}", True) for low, high in PRESSURE_ORDER),
    *((f"safety.{low}", f"safety.{high}", True) for low, high in SAFETY_ORDER),
    ("restart.backoff_base_s", "restart.backoff_cap_s", False),
)


def in_order(low: float | None, high: float | None, strict: bool) -> bool:
    """Whether a pair is in order; a value left to the card is not judged here."""
    if low is None or high is None:
        return True
    return low < high if strict else low <= high


@dataclass(frozen=True)
class FileKeys:
    """The setting names a config file sets, or why it cannot be edited (``problem``)."""

    names: frozenset[str] = frozenset()
    problem: str | None = None


def keys_in_file(path: Path) -> FileKeys:
    """What ``path`` sets (a missing file sets nothing and is created on the first save)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return FileKeys()
    except UnicodeDecodeError:
        return FileKeys(problem=f"{path} is not UTF-8 text")
    except OSError as exc:
        return FileKeys(problem=f"cannot read {path}: {exc.strerror or exc}")
    except tomllib.TOMLDecodeError as exc:
        return FileKeys(problem=f"{path} is not valid TOML ({exc})")
    names = {key for key, value in data.items() if not isinstance(value, dict | list)}
    for table in ("pressure", "restart", "safety"):
        inner = data.get(table)
        if isinstance(inner, dict):
            names |= {f"{table}.{key}" for key in inner}
    return FileKeys(frozenset(names))
