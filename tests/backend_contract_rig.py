"""A backend under contract test: every callback each start produced, and a way to wait
for them with a deadline. Real backends call back from their own threads; the simulated
one only when its fake clock is advanced and polled, which ``pump`` does."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from gpuwarden.engine.lifecycle.backend import Backend, Footprint, Launch
from gpuwarden.engine.lifecycle.config import ModelConfig
from gpuwarden.engine.lifecycle.crash import DeathReport

PUMP_STEP_S = 0.25  # fake seconds per poll of a clock-driven backend


@dataclass
class Calls:
    """What the callbacks of one start() said."""

    model: str
    instance: int
    ready: list[tuple[int, Footprint]] = field(default_factory=list)
    exits: list[DeathReport] = field(default_factory=list)
    activity: list[tuple[int, bool, bool]] = field(default_factory=list)
    moved: bool = False  # its process became another start (a move in place)

    @property
    def settled(self) -> bool:
        """Ready or exited: what must follow every start."""
        return bool(self.ready or self.exits)

    def foreign(self) -> list[str]:
        """Callbacks that carry another model or instance than this start's."""
        bad = [f"ready({i})" for i, _ in self.ready if i != self.instance]
        bad += [f"exit({r.model}, {r.instance})" for r in self.exits
                if (r.model, r.instance) != (self.model, self.instance)]
        bad += [f"activity({i})" for i, _, _ in self.activity if i != self.instance]
        return bad


class ContractRig:
    def __init__(self, backend: Backend, pump: Callable[[float], None] | None = None) -> None:
        self.backend = backend
        self._pump = pump  # advance a fake clock by that many seconds and poll
        self.cond = threading.Condition()
        self.starts: list[Calls] = []

    def start(self, config: ModelConfig, instance: int) -> Calls:
        return self._begin(self.backend.start, Launch(config, "cpu", 0, instance))

    def move(self, old: Calls, launch: Launch) -> Calls:
        """Move ``old``'s running process in place (a MovesInPlace backend); it becomes a
        start of its own, ``launch.instance``."""
        old.moved = True
        return self._begin(self.backend.move, launch)  # type: ignore[attr-defined]

    def _begin(self, begin: Callable[..., None], launch: Launch) -> Calls:
        calls = Calls(launch.config.name, launch.instance)
        with self.cond:
            self.starts.append(calls)

        def record(into: list, item: object) -> None:  # type: ignore[type-arg]
            with self.cond:
                into.append(item)
                self.cond.notify_all()

        begin(launch, on_ready=lambda i, fp: record(calls.ready, (i, fp)),
              on_exit=lambda report: record(calls.exits, report),
              on_activity=lambda i, used, busy: record(calls.activity, (i, used, busy)))
        return calls

    def wait(self, predicate: Callable[[], bool], timeout: float = 30.0) -> bool:
        """Until ``predicate`` holds (checked under the lock) or ``timeout`` passes: real
        seconds, or fake seconds of a pumped clock."""
        with self.cond:
            if self._pump is not None:
                for _ in range(math.ceil(timeout / PUMP_STEP_S)):
                    if predicate():
                        return True
                    self._pump(PUMP_STEP_S)
                return predicate()
            deadline = time.monotonic() + timeout
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(min(left, 0.1))
            return True

    def quiet(self, window: float = 0.5) -> None:
        """Give a callback that must not come ``window`` seconds to come anyway."""
        self.wait(lambda: False, window)

    def close(self, timeout: float = 20.0) -> list[str]:
        """Stop every start that has not exited and wait for the exits; returns what is
        wrong (still running, foreign callbacks)."""
        with self.cond:
            live = [c for c in self.starts if not c.exits and not c.moved]
        for calls in live:
            self.backend.stop(calls.model, calls.instance)
        problems = []
        if not self.wait(lambda: all(c.exits for c in live), timeout):
            problems.append(f"no exit after stop for {[c.instance for c in live if not c.exits]}")
        wait_stopped = getattr(self.backend, "wait_stopped", None)
        if wait_stopped is not None and not wait_stopped(timeout):
            problems.append("a stop thread is still running")
        with self.cond:
            problems += [f"{c.model}#{c.instance}: {b}" for c in self.starts for b in c.foreign()]
        return problems
