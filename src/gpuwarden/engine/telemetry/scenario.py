"""Scenarios: a TOML timeline of faults played against the simulated GPU.

The format is documented in ``docs/scenario.md``. Every problem in a file raises
:class:`ScenarioError`, one line that names the file, the line and the field.
Actions live in a registry (:func:`register_action`) so other consumers can add
their own (a model ``crash``, say); the simulated probe ignores actions it does
not know.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Literal

from gpuwarden.engine.telemetry.snapshot import GPU_SERIES_FIELDS

MAX_GPUS = 8
STEP_KEYS: tuple[str, ...] = ("at", "action", "gpu")
SWITCHABLE_FIELDS: tuple[str, ...] = (*GPU_SERIES_FIELDS, "processes", "throttle_reasons")


class ScenarioError(ValueError):
    """A scenario that cannot be used. ``str()`` is one line: ``file:line: what``."""

    def __init__(self, path: str, line: int | None, field: str | None, message: str) -> None:
        self.path, self.line, self.field, self.message = path, line, field, message
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """What one action field accepts. Build with :func:`number`, :func:`integer`,
    :func:`text` or :func:`choice`."""

    kind: Literal["number", "integer", "string", "choice"]
    required: bool = True
    default: object = None
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # True: strictly greater than ``low``
    choices: tuple[str, ...] = ()

    def problem(self, value: object) -> str | None:
        """Why ``value`` is not acceptable ("must be ..."), or None when it is."""
        if self.kind == "string":
            ok = isinstance(value, str) and value.strip() != ""
        elif self.kind == "choice":
            ok = isinstance(value, str) and value in self.choices
        else:
            ok = _is_number(value, integer=self.kind == "integer") and self._in_range(value)
        return None if ok else f"must be {self.expects()}"

    def _in_range(self, value: object) -> bool:
        v = float(value)  # type: ignore[arg-type]  # checked by _is_number
        if self.low is not None and (v <= self.low if self.low_open else v < self.low):
            return False
        return self.high is None or v <= self.high

    def expects(self) -> str:
        if self.kind == "string":
            return "a non-empty string"
        if self.kind == "choice":
            return "one of: " + ", ".join(self.choices)
        noun = "an integer" if self.kind == "integer" else "a number"
        if self.low == 0 and self.low_open and self.high is None:
            return f"a positive {noun.split()[-1]}"
        if self.low is not None and self.high is not None:
            return f"{noun} from {_num(self.low)} to {_num(self.high)}"
        if self.low is not None:
            return f"{noun} {'>' if self.low_open else '>='} {_num(self.low)}"
        return noun if self.high is None else f"{noun} <= {_num(self.high)}"


def number(
    low: float | None = None,
    high: float | None = None,
    *,
    positive: bool = False,
    default: float | None = None,
) -> FieldSpec:
    if positive:
        low = 0.0
    return FieldSpec("number", default is None, default, low, high, positive)


def integer(
    low: int | None = None, high: int | None = None, *, default: int | None = None
) -> FieldSpec:
    return FieldSpec("integer", default is None, default, low, high)


def text(*, default: str | None = None) -> FieldSpec:
    return FieldSpec("string", default is None, default)


def choice(options: Iterable[str], *, default: str | None = None) -> FieldSpec:
    return FieldSpec("choice", default is None, default, choices=tuple(options))


_ACTIONS: dict[str, Mapping[str, FieldSpec]] = {}


def register_action(name: str, fields_spec: Mapping[str, FieldSpec]) -> None:
    """Make ``action = name`` valid in scenario files, with these extra fields."""
    reserved = set(fields_spec) & set(STEP_KEYS)
    if reserved:
        raise ValueError(f"action {name!r}: {sorted(reserved)} are common step keys")
    if name in _ACTIONS and dict(_ACTIONS[name]) != dict(fields_spec):
        raise ValueError(f"action {name!r} is already registered with other fields")
    _ACTIONS[name] = MappingProxyType(dict(fields_spec))


def known_actions() -> tuple[str, ...]:
    return tuple(sorted(_ACTIONS))


def action_fields(name: str) -> Mapping[str, FieldSpec]:
    return _ACTIONS[name]


register_action("vram_grab", {"owner": text(default="external"), "mib": number(positive=True)})
register_action("vram_free", {"owner": text(default="external")})
register_action("load", {"util_pct": number(0, 100)})
register_action("ambient", {"celsius": number(-50, 150)})
register_action("temperature", {"celsius": number(-50, 150)})
register_action(
    "power_spike", {"watts": number(positive=True), "duration_s": number(positive=True)}
)
register_action("unsupported", {"field": choice(SWITCHABLE_FIELDS)})
register_action("supported", {"field": choice(SWITCHABLE_FIELDS)})
register_action("gpu_lost", {})
register_action("gpu_back", {})

PROFILE_FIELDS: Mapping[str, FieldSpec] = MappingProxyType(
    {
        "name": text(),
        "memory_total_mib": number(positive=True),
        "power_limit_w": number(positive=True),
        "idle_power_w": number(0),
        "ambient_c": number(-50, 150),
        "slowdown_c": number(positive=True),
        "shutdown_c": number(positive=True),
        "thermal_tau_s": number(positive=True),
        "c_per_w": number(positive=True),
    }
)


@dataclass(frozen=True, slots=True)
class Step:
    """One timeline entry: at ``at`` seconds after start, do ``action`` on GPU ``gpu``.
    ``args`` holds the action's fields, defaults filled in; ``line`` is its header line."""

    at: float
    action: str
    gpu: int
    args: Mapping[str, object]
    line: int | None = None

    def number(self, key: str) -> float:
        value = self.args[key]
        if not _is_number(value, integer=False):
            raise TypeError(f"step field {key!r} is not a number: {value!r}")
        return float(value)  # type: ignore[arg-type]  # checked just above

    def text(self, key: str) -> str:
        return str(self.args[key])

    def describe(self) -> str:
        """``gpu 0 owner=blender mib=6000 (at 10 s)``, for the event log."""
        parts = [f"gpu {self.gpu}", *(f"{k}={v}" for k, v in self.args.items())]
        return " ".join([*parts, f"(at {_num(self.at)} s)"])


@dataclass(frozen=True, slots=True)
class Scenario:
    """The ``[simulation]`` settings and the steps, sorted by ``at`` (stable)."""

    gpus: int = 1
    seed: int = 0
    profiles: tuple[Mapping[str, object], ...] = ()  # per-GPU overrides, index order
    steps: tuple[Step, ...] = ()
    source: str = "<scenario>"


class StepCursor:
    """Hands out each due step exactly once, in order. ``actions`` limits which ones."""

    def __init__(self, steps: Iterable[Step], actions: Iterable[str] | None = None) -> None:
        wanted = None if actions is None else set(actions)
        self._steps = [s for s in steps if wanted is None or s.action in wanted]
        self._next = 0

    def due(self, elapsed: float) -> tuple[Step, ...]:
        """The steps with ``at <= elapsed`` not handed out before."""
        start = self._next
        while self._next < len(self._steps) and self._steps[self._next].at <= elapsed:
            self._next += 1
        return tuple(self._steps[start : self._next])

    @property
    def remaining(self) -> int:
        return len(self._steps) - self._next


def load_scenario(path: str | Path) -> Scenario:
    name = str(path)
    try:
        content = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ScenarioError(name, None, None, f"cannot read: {reason}") from exc
    return parse_scenario(content, name)


def parse_scenario(content: str, source_name: str = "<scenario>") -> Scenario:
    return _Parser(content, source_name).parse()


@dataclass(frozen=True, slots=True)
class _Table:
    """One TOML table being checked: its values, header line and name in messages."""

    values: Mapping[str, object]
    line: int | None
    where: str


class _Parser:
    def __init__(self, content: str, source: str) -> None:
        self.content, self.source = content, source
        self.lines = content.splitlines()
        self.headers = _headers(self.lines)

    def fail(self, line: int | None, key: str | None, message: str) -> ScenarioError:
        return ScenarioError(self.source, line, key, message)

    def parse(self) -> Scenario:
        try:
            data = tomllib.loads(self.content)
        except tomllib.TOMLDecodeError as exc:
            found = re.search(r"at line (\d+)", str(exc))
            raise self.fail(int(found[1]) if found else None, None, f"invalid TOML: {exc}") from exc
        self.check_keys(_Table(data, None, "the file"), ("simulation", "step"))
        sim = self.table(data.get("simulation", {}), "[simulation]", self.header("simulation"))
        gpus, seed, profiles = self.simulation(sim)
        raw_steps = self.array(data.get("step", []), "step")
        steps = [self.step(i, raw, gpus) for i, raw in enumerate(raw_steps)]
        steps.sort(key=lambda s: s.at)
        return Scenario(gpus, seed, tuple(profiles), tuple(steps), self.source)

    def simulation(self, sim: _Table) -> tuple[int, int, list[Mapping[str, object]]]:
        self.check_keys(sim, ("gpus", "seed", "gpu"))
        raw = self.array(sim.values.get("gpu", []), "simulation.gpu")
        profiles = [self.profile(i, p) for i, p in enumerate(raw)]
        gpus = self.value(sim, "gpus", integer(1, MAX_GPUS, default=max(1, len(profiles))))
        seed = self.value(sim, "seed", integer(default=0))
        assert isinstance(gpus, int) and isinstance(seed, int)  # checked by the specs
        if len(profiles) > gpus:
            msg = f"[[simulation.gpu]] {gpus + 1}: only {gpus} GPU(s) are simulated (gpus = {gpus})"
            raise self.fail(self.header("simulation.gpu", gpus), "gpu", msg)
        return gpus, seed, profiles

    def profile(self, index: int, raw: object) -> Mapping[str, object]:
        where = f"[[simulation.gpu]] {index + 1}"
        table = self.table(raw, where, self.header("simulation.gpu", index))
        self.check_keys(table, tuple(PROFILE_FIELDS))
        values = {k: self.value(table, k, PROFILE_FIELDS[k]) for k in table.values}
        self.check_order(table, ("idle_power_w", "power_limit_w"))
        self.check_order(table, ("slowdown_c", "shutdown_c"))
        return MappingProxyType(values)

    def check_order(self, table: _Table, keys: tuple[str, str]) -> None:
        low, high = (table.values.get(k) for k in keys)
        if isinstance(low, int | float) and isinstance(high, int | float) and low >= high:
            msg = f"{table.where}: {keys[0]!r} must be below {keys[1]!r} ({high}), got {low}"
            raise self.fail(self.key_line(table.line, keys[0]), keys[0], msg)

    def step(self, index: int, raw: object, gpus: int) -> Step:
        table = self.table(raw, f"step {index + 1}", self.header("step", index))
        action = self.value(table, "action", text())
        if action not in _ACTIONS:
            known = ", ".join(known_actions())
            msg = f"{table.where}: unknown action {action!r}; known actions: {known}"
            raise self.fail(self.key_line(table.line, "action"), "action", msg)
        assert isinstance(action, str)  # it is a registered name
        table = _Table(table.values, table.line, f"{table.where} ({action})")
        spec = action_fields(action)
        self.check_keys(table, (*STEP_KEYS, *spec))
        at = self.value(table, "at", number(0))
        gpu = self.value(table, "gpu", integer(0, gpus - 1, default=0))
        args = {k: self.value(table, k, s) for k, s in spec.items()}
        assert isinstance(at, int | float) and isinstance(gpu, int)  # checked by the specs
        return Step(float(at), action, gpu, MappingProxyType(args), table.line)

    def value(self, table: _Table, key: str, spec: FieldSpec) -> object:
        if key not in table.values:
            if spec.required:
                raise self.fail(table.line, key, f"{table.where}: missing required key {key!r}")
            return spec.default
        value = table.values[key]
        problem = spec.problem(value)
        if problem is not None:
            if key == "gpu" and isinstance(value, int) and spec.high is not None:
                problem = _gpu_problem(value, int(spec.high) + 1) or problem
            msg = f"{table.where}: {key!r} {problem}, got {_show(value)}"
            raise self.fail(self.key_line(table.line, key), key, msg)
        return value

    def check_keys(self, table: _Table, allowed: tuple[str, ...]) -> None:
        for key in table.values:
            if key not in allowed:
                listed = ", ".join(sorted(allowed))
                msg = f"{table.where}: unknown key {key!r}; allowed keys: {listed}"
                raise self.fail(self.key_line(table.line, key), key, msg)

    def table(self, raw: object, where: str, line: int | None) -> _Table:
        if not isinstance(raw, dict):
            raise self.fail(line, None, f"{where} must be a table, got {_show(raw)}")
        return _Table(raw, line, where)

    def array(self, raw: object, name: str) -> list[object]:
        if not isinstance(raw, list):
            msg = f"{name!r} must be an array of tables ([[{name}]]), got {_show(raw)}"
            raise self.fail(self.key_line(None, name.rsplit(".")[-1]), name, msg)
        return raw

    def header(self, name: str, nth: int = 0) -> int | None:
        lines = [n for n, header in self.headers if header == name]
        return lines[nth] if nth < len(lines) else None

    def key_line(self, header: int | None, key: str) -> int | None:
        """The line of ``key = ...`` in the table whose header is on line ``header``
        (before the first header when None); the header line when not found."""
        first = header or 0
        later = [n for n, _ in self.headers if n > first]
        last = later[0] - 1 if later else len(self.lines)
        k = re.escape(key)
        pattern = re.compile(rf"""^\s*(?:{k}|"{k}"|'{k}')\s*=""")
        for n in range(first + 1, last + 1):
            if pattern.match(self.lines[n - 1]):
                return n
        return header


_HEADER = re.compile(r"""^\s*\[(\[)?\s*([A-Za-z0-9_."' -]+?)\s*\](?(1)\])\s*(?:#.*)?$""")


def _headers(lines: list[str]) -> list[tuple[int, str]]:
    """``(line, name)`` of every ``[table]`` and ``[[array]]`` header, 1-based lines."""
    found = []
    for n, line in enumerate(lines, start=1):
        match = _HEADER.match(line)
        if match:
            name = re.sub(r"""\s*\.\s*""", ".", match[2]).replace('"', "").replace("'", "")
            found.append((n, name))
    return found


def _gpu_problem(value: int, gpus: int) -> str | None:
    if value < gpus:
        return None
    return f"must be < {gpus} (the scenario simulates {gpus} GPU{'s' if gpus > 1 else ''})"


def _is_number(value: object, *, integer: bool) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if integer:
        return isinstance(value, int)
    return math.isfinite(value)


def _num(value: float) -> str:
    return f"{value:g}"


def _show(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return repr(value)
