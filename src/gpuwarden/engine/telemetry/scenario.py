"""Scenarios: a TOML timeline of faults played against the simulated GPU.

The format is documented in ``docs/scenario.md``. Every problem in a file raises
:class:`ScenarioError`, one line that names the file, the line and the field.
Actions live in a registry (:func:`register_action`) so other consumers can add
their own (a model ``crash``, say); the simulated probe ignores actions it does
not know.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from gpuwarden.engine.telemetry.snapshot import GPU_SERIES_FIELDS
from gpuwarden.engine.tomlcheck import (
    FieldSpec,
    Table,
    TomlDoc,
    TomlProblem,
    choice,
    fmt_num,
    integer,
    is_number,
    number,
    printable,
    read_text,
    text,
)

__all__ = [
    "MAX_GPUS",
    "MODEL_FIELDS",
    "PROFILE_FIELDS",
    "STEP_KEYS",
    "SWITCHABLE_FIELDS",
    "FieldSpec",
    "Scenario",
    "ScenarioError",
    "SimulatedModel",
    "Step",
    "StepCursor",
    "action_fields",
    "check_crash_steps",
    "choice",
    "integer",
    "known_actions",
    "load_scenario",
    "number",
    "parse_scenario",
    "register_action",
    "text",
]

MAX_GPUS = 8
STEP_KEYS: tuple[str, ...] = ("at", "action", "gpu")
SWITCHABLE_FIELDS: tuple[str, ...] = (*GPU_SERIES_FIELDS, "processes", "throttle_reasons")


class ScenarioError(TomlProblem):
    """A scenario that cannot be used. ``str()`` is one line: ``file:line: what``."""


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
# Applied by the engine service to the simulated model backend, not by the GPU.
register_action("crash", {"model": text(), "exit_code": integer(0, 255, default=137)})

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

# ``[[simulation.model]]``: how a simulated model behaves, by the name in the config.
MODEL_FIELDS: Mapping[str, FieldSpec] = MappingProxyType(
    {
        "name": text(),
        "vram_scale": number(positive=True, default=1.0),
    }
)


@dataclass(frozen=True, slots=True)
class SimulatedModel:
    """A ``[[simulation.model]]`` table: the model ``name`` (as in the config) books
    ``vram_scale`` times the VRAM its config says (``vram_mib``), so that what it really
    holds differs from the estimate. ``line`` is its header line."""

    name: str
    vram_scale: float = 1.0
    line: int | None = None


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
        if not is_number(value, integer=False):
            raise TypeError(f"step field {key!r} is not a number: {value!r}")
        return float(value)  # type: ignore[arg-type]  # checked just above

    def text(self, key: str) -> str:
        return str(self.args[key])

    def describe(self) -> str:
        """``gpu 0 owner=blender mib=6000 (at 10 s)`` (a ``crash``: no GPU), for the event
        log; control characters escaped."""
        gpu = [] if self.action == "crash" else [f"gpu {self.gpu}"]
        parts = [*gpu, *(f"{k}={printable(str(v))}" for k, v in self.args.items())]
        return " ".join([*parts, f"(at {fmt_num(self.at)} s)"])


@dataclass(frozen=True, slots=True)
class Scenario:
    """The ``[simulation]`` settings and the steps, sorted by ``at`` (stable)."""

    gpus: int = 1
    seed: int = 0
    profiles: tuple[Mapping[str, object], ...] = ()  # per-GPU overrides, index order
    steps: tuple[Step, ...] = ()
    source: str = "<scenario>"
    models: tuple[SimulatedModel, ...] = ()  # [[simulation.model]], names unique
    # per profile: the line of its header (key None) and of each key written there
    profile_lines: tuple[Mapping[str | None, int | None], ...] = ()

    def profile_line(self, index: int, key: str | None = None) -> int | None:
        """The line of ``key`` in the ``index``-th ``[[simulation.gpu]]`` (its header's
        when the key is not written there); None when not known."""
        lines = self.profile_lines[index] if index < len(self.profile_lines) else {}
        return lines.get(key, lines.get(None))

    def model(self, name: str) -> SimulatedModel | None:
        return next((m for m in self.models if m.name == name), None)

    def vram_scale(self, name: str) -> float:
        """How many times its configured VRAM the model ``name`` books (1 by default)."""
        found = self.model(name)
        return found.vram_scale if found is not None else 1.0


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


def check_crash_steps(scenario: Scenario, backends: Mapping[str, str]) -> None:
    """Raise :class:`ScenarioError` for a ``crash`` step whose model is not in the config
    (``backends``: each configured model's backend) or is not a simulated one: a crash is
    played only against the simulated backend."""
    for step in scenario.steps:
        if step.action != "crash":
            continue
        name = step.text("model")
        backend = backends.get(name)
        if backend == "simulated":
            continue
        if backend is None:
            known = ", ".join(sorted(backends)) or "none"
            problem = (f"names no model in the config: {printable(repr(name))} "
                       f"(configured: {printable(known)})")
        else:
            problem = (f"names model {printable(repr(name))}, whose backend is {backend!r}: "
                       "a scenario crashes only simulated models")
        raise ScenarioError(scenario.source, step.line, "model",
                            f"crash step (at {fmt_num(step.at)} s): 'model' {problem}")


def load_scenario(path: str | Path) -> Scenario:
    return parse_scenario(read_text(path, ScenarioError), str(path))


def parse_scenario(content: str, source_name: str = "<scenario>") -> Scenario:
    return _Parser(content, source_name).parse()


class _Parser:
    def __init__(self, content: str, source: str) -> None:
        self.doc = TomlDoc(content, source, ScenarioError)

    def parse(self) -> Scenario:
        data = self.doc.load()
        self.doc.check_keys(Table(data, None, "the file"), ("simulation", "step"))
        sim_line = self.doc.header("simulation")
        sim = self.doc.table(data.get("simulation", {}), "[simulation]", sim_line)
        gpus, seed, profiles = self.simulation(sim)
        models = self.models(sim)
        raw_steps = self.doc.array(data.get("step", []), "step")
        steps = [self.step(i, raw, gpus) for i, raw in enumerate(raw_steps)]
        steps.sort(key=lambda s: s.at)
        return Scenario(gpus, seed, tuple(profiles), tuple(steps), self.doc.source,
                        tuple(models), tuple(self.profile_lines(len(profiles))))

    def profile_lines(self, count: int) -> list[Mapping[str | None, int | None]]:
        lines: list[Mapping[str | None, int | None]] = []
        for index in range(count):
            header = self.doc.header("simulation.gpu", index)
            lines.append({None: header, **{k: self.doc.key_line(header, k)
                                           for k in PROFILE_FIELDS}})
        return lines

    def simulation(self, sim: Table) -> tuple[int, int, list[Mapping[str, object]]]:
        self.doc.check_keys(sim, ("gpus", "seed", "gpu", "model"))
        raw = self.doc.array(sim.values.get("gpu", []), "simulation.gpu")
        profiles = [self.profile(i, p) for i, p in enumerate(raw)]
        gpus = self.doc.value(sim, "gpus", integer(1, MAX_GPUS, default=max(1, len(profiles))))
        seed = self.doc.value(sim, "seed", integer(default=0))
        assert isinstance(gpus, int) and isinstance(seed, int)  # checked by the specs
        if len(profiles) > gpus:
            msg = f"[[simulation.gpu]] {gpus + 1}: only {gpus} GPU(s) are simulated (gpus = {gpus})"
            raise self.doc.fail(self.doc.header("simulation.gpu", gpus), "gpu", msg)
        return gpus, seed, profiles

    def profile(self, index: int, raw: object) -> Mapping[str, object]:
        where = f"[[simulation.gpu]] {index + 1}"
        table = self.doc.table(raw, where, self.doc.header("simulation.gpu", index))
        self.doc.check_keys(table, tuple(PROFILE_FIELDS))
        values = {k: self.doc.value(table, k, PROFILE_FIELDS[k]) for k in table.values}
        self.doc.check_order(table, ("idle_power_w", "power_limit_w"))
        self.doc.check_order(table, ("slowdown_c", "shutdown_c"))
        return MappingProxyType(values)

    def models(self, sim: Table) -> list[SimulatedModel]:
        try:
            raw = self.doc.array(sim.values.get("model", []), "simulation.model")
        except ScenarioError as exc:  # ``model = 3`` under [simulation]: point at its line
            line = exc.line or self.doc.key_line(sim.line, "model")
            raise self.doc.fail(line, exc.field, exc.message) from None
        models: list[SimulatedModel] = []
        for index, entry in enumerate(raw):
            model = self.model(index, entry)
            earlier = next((n for n, m in enumerate(models) if m.name == model.name), None)
            if earlier is not None:
                msg = (f"[[simulation.model]] {index + 1}: model {model.name!r} is already "
                       f"described by [[simulation.model]] {earlier + 1}")
                raise self.doc.fail(self.doc.key_line(model.line, "name"), "name", msg)
            models.append(model)
        return models

    def model(self, index: int, raw: object) -> SimulatedModel:
        line = self.doc.header("simulation.model", index)
        table = self.doc.table(raw, f"[[simulation.model]] {index + 1}", line)
        self.doc.check_keys(table, tuple(MODEL_FIELDS))
        name = self.doc.value(table, "name", MODEL_FIELDS["name"])
        scale = self.doc.value(table, "vram_scale", MODEL_FIELDS["vram_scale"])
        assert isinstance(name, str) and isinstance(scale, int | float)  # checked by the specs
        return SimulatedModel(name, float(scale), line)

    def step(self, index: int, raw: object, gpus: int) -> Step:
        table = self.doc.table(raw, f"step {index + 1}", self.doc.header("step", index))
        action = self.doc.value(table, "action", text())
        if action not in _ACTIONS:
            known = ", ".join(known_actions())
            msg = f"{table.where}: unknown action {action!r}; known actions: {known}"
            raise self.doc.fail(self.doc.key_line(table.line, "action"), "action", msg)
        assert isinstance(action, str)  # it is a registered name
        table = Table(table.values, table.line, f"{table.where} ({action})")
        spec = action_fields(action)
        self.doc.check_keys(table, (*STEP_KEYS, *spec))
        at = self.doc.value(table, "at", number(0))
        gpu = self.gpu(table, gpus)
        args = {k: self.doc.value(table, k, s) for k, s in spec.items()}
        assert isinstance(at, int | float) and isinstance(gpu, int)  # checked by the specs
        return Step(float(at), action, gpu, MappingProxyType(args), table.line)

    def gpu(self, table: Table, gpus: int) -> object:
        """``gpu``, with a message that says how many GPUs there are when it is too big."""
        value = table.values.get("gpu")
        if isinstance(value, int) and not isinstance(value, bool) and value >= gpus:
            plural = "s" if gpus > 1 else ""
            problem = f"must be < {gpus} (the scenario simulates {gpus} GPU{plural})"
            raise self.doc.invalid(table, "gpu", problem)
        return self.doc.value(table, "gpu", integer(0, gpus - 1, default=0))
