"""The user's configuration: the models gpuwarden manages and the limits it keeps.

The format is documented in ``docs/config.md``. A malformed file never raises: every
problem becomes a :class:`ConfigProblem` that names the file, the line, the model and
the key. A model entry with a problem is skipped, the others load; a bad global setting
falls back to its default.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, TypeAlias, get_args

from gpuwarden.engine import paths
from gpuwarden.engine.lifecycle.config_kinds import (
    TORCH_DTYPES,
    WHOLE_BACKENDS,
    expand,
    kind_problems,
    torch_path_problem,
)
from gpuwarden.engine.safety import limits as safety_limits
from gpuwarden.engine.safety.limits import SAFETY_ORDER, SafetyConfig
from gpuwarden.engine.tomlcheck import (
    FieldSpec,
    Table,
    TomlDoc,
    TomlProblem,
    boolean,
    choice,
    choice_or_integer,
    fmt_num,
    integer,
    location,
    number,
    printable,
    read_text,
    show,
    string_table,
    strings,
)
from gpuwarden.engine.tomlcheck import text as string

PlacementMode = Literal["gpu", "cpu", "auto"]
Placement: TypeAlias = PlacementMode | int  # int >= 0: number of GPU layers (partial offload)
EvictionPolicy = Literal["idle", "pressure", "never"]
BackendKind = Literal["llama-server", "llama-cpp", "simulated", "command", "torch"]
PLACEMENT_MODES: tuple[str, ...] = get_args(PlacementMode)
BACKEND_KINDS: tuple[str, ...] = get_args(BackendKind)
# Backends named in the design but not built: refused with a message that says so.
UNBUILT_BACKENDS: tuple[str, ...] = ()
EVICTION_POLICIES: tuple[str, ...] = get_args(EvictionPolicy)
CONFIG_FILE = "config.toml"


@dataclass(frozen=True)
class ModelConfig:
    name: str
    backend: BackendKind
    path: Path | None = None  # required (and must exist as a file) unless backend == "simulated"
    context_size: int = 4096  # >= 1
    placement: Placement = "auto"
    gpu: int = 0  # >= 0; with gpu_auto, where it runs now (the pre-flight picks it per load)
    idle_timeout_s: float = 600.0  # >= 0
    eviction: EvictionPolicy = "idle"
    priority: int = 0  # hint; higher = keep longer
    args: tuple[str, ...] = ()  # extra backend args (TOML array of strings)
    vram_mib: float | None = None  # expected GPU footprint (> 0); the estimate hook uses it
    ram_mib: float | None = None  # expected RAM footprint on CPU (> 0)
    layers: int = 32  # total layers, for partial offload (>= 1)
    load_time_s: float = 1.0  # simulated backend only (>= 0)
    autostart: bool = False  # load when gpuwarden starts
    line: int | None = None  # line of its [[models]] header
    threads: int | None = None  # CPU threads for the backend (None: its own default)
    gpu_auto: bool = False  # gpu = "auto": the pre-flight picks the GPU it fits best
    # backend = "command" only: the program and its arguments (no shell), where it says it
    # is ready (http://127.0.0.1:PORT/path; None: ready once it has run ready_after_s),
    # the environment it gets on top of gpuwarden's, and the folder it starts in
    command: tuple[str, ...] = ()
    health_url: str | None = None
    env: tuple[tuple[str, str], ...] = ()
    cwd: Path | None = None
    ready_after_s: float = 1.0
    dtype: str = "bfloat16"  # backend = "torch" only: asked for; the worker makes it safe
    # The keys its entry writes, with the line of each (None: not found): what was set in
    # the file rather than left to its default. Not a setting: a reload compares without it.
    key_lines: tuple[tuple[str, int | None], ...] = field(default=(), compare=False,
                                                          repr=False)


@dataclass(frozen=True)
class Hysteresis:
    """Percent used: raised at ``>= enter``, cleared at ``< clear``; ``clear < enter``."""

    enter: float
    clear: float


@dataclass(frozen=True)
class DiskThreshold:
    """Free GiB: raised when free ``< enter_below_gib``, cleared when free
    ``>= clear_above_gib``; ``clear_above_gib > enter_below_gib``."""

    enter_below_gib: float = 5.0
    clear_above_gib: float = 10.0


@dataclass(frozen=True)
class PressureConfig:
    vram: Hysteresis = Hysteresis(90.0, 80.0)
    ram: Hysteresis = Hysteresis(90.0, 80.0)
    cpu: Hysteresis = Hysteresis(95.0, 80.0)
    disk: DiskThreshold = DiskThreshold()
    alert_debounce_s: float = 60.0
    return_wait_s: float = 60.0  # moved to the CPU by pressure: the first try to go back


@dataclass(frozen=True)
class RestartConfig:
    backoff_base_s: float = 1.0
    backoff_cap_s: float = 60.0
    healthy_reset_s: float = 600.0
    max_consecutive: int = 5
    startup_timeout_s: float = 120.0


DEFAULT_API_PORT = 8737


@dataclass(frozen=True)
class ApiConfig:
    """``[api]``: the control API (read once, at start)."""

    enabled: bool = True
    host: str = "127.0.0.1"  # another address must be set on purpose (and is warned of)
    port: int = DEFAULT_API_PORT  # 0: any free port (written to the data folder's api.json)
    open_metrics: bool = False  # /metrics, /livez, /readyz without the token (Prometheus)


@dataclass(frozen=True)
class Config:
    models: tuple[ModelConfig, ...] = ()
    pressure: PressureConfig = PressureConfig()
    restart: RestartConfig = RestartConfig()
    sample_interval_s: float = 1.0  # 0.25..10
    source: str = "<defaults>"
    llama_server: Path | None = None  # the llama-server binary; None: PATH, then our build
    safety: SafetyConfig = field(default_factory=SafetyConfig)
    api: ApiConfig = ApiConfig()

    def model(self, name: str) -> ModelConfig | None:
        return next((m for m in self.models if m.name == name), None)


_DEFAULT_INTERVAL: float = Config.sample_interval_s
_UNNAMED = re.compile(r"models\[\d+\]")


@dataclass(frozen=True)
class ConfigProblem:
    """One problem in a config file. ``entry`` is the model's name, or ``models[3]`` (the
    third ``[[models]]`` entry) when it has none; None for global settings.
    ``whole_file``: the file could not be read or parsed, so nothing in it was used."""

    path: str
    line: int | None
    entry: str | None
    field: str | None
    message: str
    whole_file: bool = False

    def __str__(self) -> str:
        """``config.toml:12: model 'llama-8b': 'idle_timeout_s' must be ..., got -5``."""
        if self.entry is None:
            return f"{location(self.path, self.line)}: {self.message}"
        entry = self.entry if _UNNAMED.fullmatch(self.entry) else f"model {self.entry!r}"
        return f"{location(self.path, self.line)}: {entry}: {self.message}"


MODEL_FIELDS: Mapping[str, FieldSpec] = {
    "name": string(),
    "backend": choice(BACKEND_KINDS),
    "path": string(),
    "context_size": integer(1, 1 << 24),
    "placement": choice_or_integer(PLACEMENT_MODES, 0),
    "gpu": choice_or_integer(("auto",), 0, 63),
    "idle_timeout_s": number(0),
    "eviction": choice(EVICTION_POLICIES),
    "priority": integer(),
    "args": strings(),
    "threads": integer(1, 1024),
    "vram_mib": number(positive=True),
    "ram_mib": number(positive=True),
    "layers": integer(1, 100_000),
    "load_time_s": number(0),
    "autostart": boolean(),
    "command": strings(),
    "health_url": string(),
    "env": string_table(),
    "cwd": string(),
    "ready_after_s": number(0, 3600),
    "dtype": choice(TORCH_DTYPES),
}
_LEVELS = ("vram", "ram", "cpu")
PRESSURE_FIELDS: Mapping[str, FieldSpec] = {
    **{f"{kind}_{edge}_pct": number(0, 100) for kind in _LEVELS for edge in ("enter", "clear")},
    "disk_free_enter_gib": number(0),
    "disk_free_clear_gib": number(0),
    "alert_debounce_s": number(0),
    "return_wait_s": number(0, 3600),
}
# (lower, higher): the first must be below the second, or both fall back to their defaults.
PRESSURE_ORDER: tuple[tuple[str, str], ...] = (
    *((f"{kind}_clear_pct", f"{kind}_enter_pct") for kind in _LEVELS),
    ("disk_free_enter_gib", "disk_free_clear_gib"),
)
RESTART_FIELDS: Mapping[str, FieldSpec] = {
    "backoff_base_s": number(positive=True),
    "backoff_cap_s": number(positive=True),
    "healthy_reset_s": number(0),
    "max_consecutive": integer(1),
    "startup_timeout_s": number(positive=True),
}
# Temperatures in C, power in W, percents 0..100. None (left out): the card's, else the table's.
SAFETY_FIELDS: Mapping[str, FieldSpec] = {
    **{f"{part}_temp_{edge}_c": number(1, 150) for part in ("gpu", "cpu")
       for edge in ("warn", "hard")},
    "gpu_power_warn_w": number(positive=True),
    "gpu_power_hard_w": number(positive=True),
    "vram_pct": number(1, 100),
    "cpu_pct": number(1, 100),
    "ram_pct": number(1, 100),
    "cooldown_margin_c": number(0, 50),
    "cooldown_timeout_s": number(0, 86400),
    "vram_margin_mib": number(0, 1 << 20),
}
# What a safety limit left out means, as a problem message says it.
SAFETY_DEFAULTS_SHOWN: Mapping[str, str] = {
    "gpu_temp_warn_c": f"the card's slowdown - {safety_limits.CARD_TEMP_WARN_BELOW_C:g} C, "
                       f"else {safety_limits.DEFAULT_GPU_TEMP_WARN_C:g}",
    "gpu_temp_hard_c": f"the card's slowdown, else {safety_limits.DEFAULT_GPU_TEMP_HARD_C:g}",
    "gpu_power_warn_w": f"{safety_limits.CARD_POWER_WARN_FRACTION:.0%} of the card's power "
                        f"limit, else {safety_limits.DEFAULT_GPU_POWER_WARN_W:g}",
    "gpu_power_hard_w": f"{safety_limits.CARD_POWER_HARD_FRACTION:.0%} of the card's power "
                        f"limit, else {safety_limits.DEFAULT_GPU_POWER_HARD_W:g}",
    "vram_pct": fmt_num(safety_limits.DEFAULT_VRAM_PCT),
    "cpu_temp_warn_c": fmt_num(safety_limits.DEFAULT_CPU_TEMP_WARN_C),
    "cpu_temp_hard_c": fmt_num(safety_limits.DEFAULT_CPU_TEMP_HARD_C),
    "cpu_pct": fmt_num(safety_limits.DEFAULT_CPU_PCT),
    "ram_pct": fmt_num(safety_limits.DEFAULT_RAM_PCT),
    "cooldown_margin_c": fmt_num(safety_limits.DEFAULT_COOLDOWN_MARGIN_C),
    "cooldown_timeout_s": fmt_num(safety_limits.DEFAULT_COOLDOWN_TIMEOUT_S),
    "vram_margin_mib": fmt_num(safety_limits.DEFAULT_VRAM_MARGIN_MIB),
}
TOP_FIELDS: Mapping[str, FieldSpec] = {"sample_interval_s": number(0.25, 10),
                                       "llama_server": string()}
TOP_KEYS: tuple[str, ...] = (*TOP_FIELDS, "pressure", "restart", "safety", "api", "models")
API_FIELDS: Mapping[str, FieldSpec] = {"enabled": boolean(), "host": string(),
                                       "port": integer(0, 65535), "open_metrics": boolean()}


def default_config_path() -> Path:
    return paths.config_dir() / CONFIG_FILE


def load_config(path: Path) -> tuple[Config, list[ConfigProblem]]:
    """The config in ``path`` (relative model paths resolve against its folder)."""
    try:
        content = read_text(path)
    except TomlProblem as exc:
        return Config(source=str(path)), [_whole_file(exc)]
    return parse_config(content, str(path), path.expanduser().absolute().parent)


def parse_config(
    text: str, source: str = "<config>", base_dir: Path | None = None
) -> tuple[Config, list[ConfigProblem]]:
    """The config in ``text`` and its problems, in file order. Relative model paths
    resolve against ``base_dir`` (the current folder when None)."""
    doc = TomlDoc(text, source)
    try:
        data = doc.load()
    except TomlProblem as exc:
        return Config(source=source), [_whole_file(exc)]
    return _Parser(doc, base_dir if base_dir is not None else Path.cwd()).parse(data)


def _problem(problem: TomlProblem, entry: str | None, suffix: str = "") -> ConfigProblem:
    return ConfigProblem(problem.path, problem.line, entry, problem.field, problem.message + suffix)


def _whole_file(problem: TomlProblem) -> ConfigProblem:
    return ConfigProblem(problem.path, problem.line, None, None, problem.message,
                         whole_file=True)


def _pressure_settings(pressure: PressureConfig) -> dict[str, float]:
    """``pressure`` as the ``[pressure]`` table writes it."""
    flat = {
        "disk_free_enter_gib": pressure.disk.enter_below_gib,
        "disk_free_clear_gib": pressure.disk.clear_above_gib,
        "alert_debounce_s": pressure.alert_debounce_s,
        "return_wait_s": pressure.return_wait_s,
    }
    for kind in _LEVELS:
        level: Hysteresis = getattr(pressure, kind)
        flat |= {f"{kind}_enter_pct": level.enter, f"{kind}_clear_pct": level.clear}
    return flat


def _pressure_from(flat: Mapping[str, float]) -> PressureConfig:
    def level(kind: str) -> Hysteresis:
        return Hysteresis(flat[f"{kind}_enter_pct"], flat[f"{kind}_clear_pct"])

    disk = DiskThreshold(flat["disk_free_enter_gib"], flat["disk_free_clear_gib"])
    return PressureConfig(level("vram"), level("ram"), level("cpu"), disk, flat["alert_debounce_s"],
                          flat["return_wait_s"])


def _safety_from(flat: Mapping[str, Any]) -> SafetyConfig:
    return SafetyConfig(**{k: flat[k] for k in SAFETY_FIELDS})


def _safety_fallback(keys: Iterable[str | None]) -> str:
    """What a bad ``[safety]`` setting falls back to (a limit left out comes from the card
    or the built-in table)."""
    shown = [f"{k} = {SAFETY_DEFAULTS_SHOWN[k]}" for k in keys
             if k is not None and k in SAFETY_DEFAULTS_SHOWN]
    return f"; using the default {', '.join(shown)}" if shown else "; ignored"


def _fallback(defaults: Mapping[str, Any], keys: Iterable[str | None]) -> str:
    """What a bad setting falls back to: "; using the default k = v" ("; ignored" when
    the key is not a setting)."""
    shown = [f"{k} = {_show_default(defaults[k])}" for k in keys
             if k is not None and k in defaults]
    return f"; using the default {', '.join(shown)}" if shown else "; ignored"


def _show_default(value: Any) -> str:
    return "none" if value is None else fmt_num(value)


class _Parser:
    def __init__(self, doc: TomlDoc, base_dir: Path) -> None:
        self.doc, self.base_dir = doc, base_dir
        self.problems: list[ConfigProblem] = []
        self.names: dict[str, int | None] = {}  # model name -> line of its first entry

    def report(self, problems: Iterable[TomlProblem], entry: str | None, suffix: str = "") -> None:
        self.problems += (_problem(p, entry, suffix) for p in problems)

    def parse(self, data: Mapping[str, object]) -> tuple[Config, list[ConfigProblem]]:
        top = Table(data, None, "")
        self.report(self.doc.unknown_keys(top, TOP_KEYS), None, "; ignored")
        top_values = Table({k: v for k, v in data.items() if k in TOP_FIELDS}, None, "")
        top_settings = self.settings(top_values, TOP_FIELDS,
                                     {"sample_interval_s": _DEFAULT_INTERVAL,
                                      "llama_server": None})
        pressure = _pressure_from(self.pressure(self.section(data, "pressure")))
        restart_table = self.section(data, "restart")
        restart = self.restart(restart_table)
        safety = _safety_from(self.safety(self.section(data, "safety")))
        api = ApiConfig(**self.settings(self.section(data, "api"), API_FIELDS,
                                        vars(ApiConfig())))
        models = tuple(m for m in self.models(data.get("models", [])) if m is not None)
        binary = top_settings["llama_server"]
        config = Config(models, pressure, RestartConfig(**restart),
                        top_settings["sample_interval_s"], self.doc.source,
                        None if binary is None else self.base_dir / expand(binary),
                        safety=safety, api=api)
        return config, sorted(self.problems, key=lambda p: p.line or 0)

    def section(self, data: Mapping[str, object], name: str) -> Table:
        line = self.doc.header(name) or self.doc.key_line(None, name)
        try:
            return self.doc.table(data.get(name, {}), f"[{name}]", line)
        except TomlProblem as exc:
            self.report([exc], None, "; using the defaults")
            return Table({}, line, f"[{name}]")

    def settings(
        self, table: Table, specs: Mapping[str, FieldSpec], defaults: Mapping[str, Any]
    ) -> dict[str, Any]:
        """The table's settings over ``defaults``; a bad one keeps its default."""
        good, problems = self.doc.checked(table, specs)
        for problem in problems:
            self.report([problem], None, _fallback(defaults, [problem.field]))
        return {**defaults, **{k: specs[k].normalize(v) for k, v in good.items()}}

    def restart(self, table: Table) -> dict[str, Any]:
        defaults = vars(RestartConfig())
        values = self.settings(table, RESTART_FIELDS, defaults)
        pair = ("backoff_base_s", "backoff_cap_s")
        try:
            self.doc.check_order(Table(values, table.line, table.where), pair, strict=False)
        except TomlProblem as exc:
            self.report([exc], None, _fallback(defaults, pair))
            values |= {k: defaults[k] for k in pair}
        return values

    def pressure(self, table: Table) -> dict[str, float]:
        defaults = _pressure_settings(PressureConfig())
        values = self.settings(table, PRESSURE_FIELDS, defaults)
        for pair in PRESSURE_ORDER:
            try:
                self.doc.check_order(Table(values, table.line, table.where), pair)
            except TomlProblem as exc:
                self.report([exc], None, _fallback(defaults, pair))
                values |= {k: defaults[k] for k in pair}
        return values

    def safety(self, table: Table) -> dict[str, Any]:
        """The ``[safety]`` settings; a bad one keeps its default, a warn level that is
        not below its hard level resets both."""
        defaults = {f.name: getattr(SafetyConfig(), f.name) for f in fields(SafetyConfig)}
        good, problems = self.doc.checked(table, SAFETY_FIELDS)
        for problem in problems:
            self.report([problem], None, _safety_fallback([problem.field]))
        values = {**defaults, **{k: SAFETY_FIELDS[k].normalize(v) for k, v in good.items()}}
        for pair in SAFETY_ORDER:
            try:
                self.doc.check_order(Table(values, table.line, table.where), pair)
            except TomlProblem as exc:
                self.report([exc], None, _safety_fallback(pair))
                values |= {k: defaults[k] for k in pair}
        return values

    def models(self, raw: object) -> list[ModelConfig | None]:
        try:
            entries = self.doc.array(raw, "models")
        except TomlProblem as exc:
            self.report([exc], None, "; no models loaded")
            return []
        return [self.model(i, entry) for i, entry in enumerate(entries)]

    def model(self, index: int, raw: object) -> ModelConfig | None:
        label = f"models[{index + 1}]"
        line = self.doc.header("models", index) or self.doc.key_line(None, "models")
        if not isinstance(raw, dict):
            msg = f"must be a table ([[models]]), got {show(raw)}"
            self.report([self.doc.fail(line, None, msg)], label)
            return None
        table = Table(raw, line, "")
        good, problems = self.doc.checked(table, MODEL_FIELDS, self.required(raw))
        if raw.get("backend") in UNBUILT_BACKENDS:  # more than "must be one of: ..."
            problems = [self.unbuilt(table) if p.field == "backend" else p for p in problems]
        name = good.get("name")
        entry = name if isinstance(name, str) else label
        problems += self.duplicate(table, name)
        if "path" in good:
            good["path"] = self.model_path(table, str(good["path"]), problems)
        if raw.get("backend") == "command":  # its own message for a bad command line
            problems = [p for p in problems if p.field != "command" or "command" not in raw]
        problems += self.kind_problems(table, good)
        if problems:
            self.report(sorted(problems, key=lambda p: p.line or 0), entry)
            return None
        values = {k: MODEL_FIELDS[k].normalize(v) for k, v in good.items()}
        if values["backend"] == "command":
            values.setdefault("placement", "gpu")  # a program runs where it is put
            values.setdefault("eviction", "pressure")  # it reports no use: idle means nothing
        if values["backend"] in WHOLE_BACKENDS:
            values["layers"] = 1
        if values.get("gpu") == "auto":
            values |= {"gpu": 0, "gpu_auto": True}
        key_lines = tuple((key, self.doc.key_line(line, key)) for key in good)
        return ModelConfig(**values, line=line, key_lines=key_lines)

    @staticmethod
    def required(raw: Mapping[str, object]) -> tuple[str, ...]:
        if raw.get("backend") == "command":
            return ("name", "backend", "command")
        return ("name", "backend", "path") if _needs_file(raw) else ("name", "backend")

    def kind_problems(self, table: Table, good: dict[str, object]) -> list[TomlProblem]:
        """What only one backend kind accepts, checked (``good``'s ``cwd`` resolved
        against the config's folder)."""
        return [self.fail_key(table, key, message)
                for key, message in kind_problems(table.values, good, self.base_dir)]

    def fail_key(self, table: Table, key: str, message: str) -> TomlProblem:
        return self.doc.fail(self.doc.key_line(table.line, key), key, message)

    def unbuilt(self, table: Table) -> TomlProblem:
        """The problem of a backend this version does not have."""
        msg = (f"backend {table.values['backend']!r} is not available in this version of "
               f"gpuwarden (available: {', '.join(BACKEND_KINDS)})")
        return self.doc.fail(self.doc.key_line(table.line, "backend"), "backend", msg)

    def duplicate(self, table: Table, name: object) -> list[TomlProblem]:
        if not isinstance(name, str):
            return []
        if name not in self.names:
            self.names[name] = table.line
            return []
        first = self.names[name]
        where = "" if first is None else f" (first used on line {first})"
        msg = f"duplicate model name {name!r}{where}"
        return [self.doc.fail(self.doc.key_line(table.line, "name"), "name", msg)]

    def model_path(self, table: Table, value: str, problems: list[TomlProblem]) -> Path:
        """``value`` resolved against the config's folder; a problem when the backend
        needs the file and it is not there."""
        path = expand(value)
        path = path if path.is_absolute() else self.base_dir / path
        if _needs_file(table.values):
            problem = torch_path_problem(path) if table.values.get("backend") == "torch" \
                else _file_problem(path)
            if problem is not None:
                line = self.doc.key_line(table.line, "path")
                problems.append(self.doc.fail(line, "path", problem))
        return path


def _needs_file(raw: Mapping[str, object]) -> bool:
    """Whether the entry's backend runs a model file (not one that is unknown or unbuilt)."""
    backend = raw.get("backend")
    return backend in BACKEND_KINDS and backend not in ("simulated", "command")


def _file_problem(path: Path) -> str | None:
    shown = printable(str(path))
    try:
        if not path.exists():
            return f"model file not found: {shown}"
        if not path.is_file():
            return f"model path is not a file: {shown}"
    except (OSError, ValueError) as exc:  # a name too long, a loop of links, a NUL ...
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return f"model path cannot be used ({reason}): {printable(str(path)[:120])}"
    if not os.access(path, os.R_OK):
        return f"model file is not readable: {shown}"
    return None

