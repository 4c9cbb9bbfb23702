"""Which engine events become desktop notifications, and how many: a pure policy (no Qt),
tested with a fake clock.

Five kinds notify: pressure raised (not every ``pressure.alert`` after it), a model
crashed, a model's restarts exhausted, a GPU lost and an emergency stop. Each kind can be
turned off. At most one notice per kind every ``per_kind_s`` seconds and ``per_minute``
in any minute: what is held back is counted, and said once the limits open again, either
in the next notice of that kind ("… and 7 more crashes") or, when none comes, in a
summary that :meth:`NoticePolicy.due` hands out.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from gpuwarden.engine.clock import Clock
from gpuwarden.engine.events import (
    EmergencyStop,
    Event,
    GpuLost,
    ModelCrashed,
    ModelRestartExhausted,
    PressureRaised,
)
from gpuwarden.engine.events.base import Severity, seconds_text

PER_KIND_S = 30.0  # at most one notice of a kind in this long
PER_MINUTE = 4  # at most this many notices in any 60 s

# The kinds that notify, by event type, and what one or more held-back ones are called.
KINDS: dict[str, tuple[str, str]] = {
    PressureRaised.TYPE: ("pressure alert", "pressure alerts"),
    ModelCrashed.TYPE: ("crash", "crashes"),
    ModelRestartExhausted.TYPE: ("model that gave up", "models that gave up"),
    GpuLost.TYPE: ("GPU lost", "GPUs lost"),
    EmergencyStop.TYPE: ("emergency stop", "emergency stops"),
}


@dataclass(frozen=True, slots=True)
class Notice:
    """One desktop notification. ``model`` / ``gpu``: what a click on it opens (None:
    just the window)."""

    kind: str
    title: str
    body: str
    severity: Severity
    model: str | None = None
    gpu: int | None = None


@dataclass
class _Held:
    """Notices of one kind held back by the limits."""

    count: int = 0
    since: float = 0.0  # monotonic, the first held back
    models: list[str] = field(default_factory=list)
    gpus: list[int] = field(default_factory=list)
    severity: Severity = "warning"


class NoticePolicy:
    """``offer(event)`` says whether an event is shown now (and as what); ``due()`` hands
    out the summaries of what was held back, once the limits allow; ``next_due()`` says
    when to ask again. ``enabled(kind)``: whether the user wants that kind at all."""

    def __init__(self, clock: Clock, enabled: Callable[[str], bool] = lambda _kind: True,
                 *, per_kind_s: float = PER_KIND_S, per_minute: int = PER_MINUTE) -> None:
        self._clock = clock
        self._enabled = enabled
        self._per_kind_s = per_kind_s
        self._per_minute = per_minute
        self._last: dict[str, float] = {}  # kind -> when its last notice was shown
        self._shown: deque[float] = deque()  # when each notice of the last minute was shown
        self._held: dict[str, _Held] = {}

    def offer(self, event: Event) -> Notice | None:
        """The notice to show now for ``event``, or None: not a kind that notifies, turned
        off, or held back by the limits (and counted for the summary)."""
        if event.TYPE not in KINDS or not self._enabled(event.TYPE):
            return None
        now = self._clock.monotonic()
        notice = notice_for(event)
        if not self._open(event.TYPE, now):
            self._hold(notice, now)
            return None
        held = self._held.pop(event.TYPE, None)
        self._record(event.TYPE, now)
        if held is None:
            return notice
        return Notice(notice.kind, notice.title, f"{notice.body}\n{_more(notice.kind, held)}",
                      notice.severity, notice.model, notice.gpu)

    def due(self) -> list[Notice]:
        """Summaries of what was held back, for each kind whose limits are open now."""
        now = self._clock.monotonic()
        out: list[Notice] = []
        for kind in list(self._held):
            if not self._enabled(kind):
                del self._held[kind]
            elif self._open(kind, now):
                held = self._held.pop(kind)
                self._record(kind, now)
                out.append(_summary(kind, held, now))
        return out

    def next_due(self) -> float | None:
        """Seconds until :meth:`due` may have a summary; None when nothing is held."""
        if not self._held:
            return None
        now = self._clock.monotonic()
        self._forget_old(now)
        overall = 0.0 if len(self._shown) < self._per_minute else self._shown[0] + 60.0 - now
        soonest = min(self._last.get(kind, -1e18) + self._per_kind_s - now
                      for kind in self._held)
        return max(0.0, soonest, overall)

    def _open(self, kind: str, now: float) -> bool:
        self._forget_old(now)
        last = self._last.get(kind)
        return (last is None or now - last >= self._per_kind_s) and \
            len(self._shown) < self._per_minute

    def _record(self, kind: str, now: float) -> None:
        self._last[kind] = now
        self._shown.append(now)

    def _forget_old(self, now: float) -> None:
        while self._shown and now - self._shown[0] >= 60.0:
            self._shown.popleft()

    def _hold(self, notice: Notice, now: float) -> None:
        held = self._held.get(notice.kind)
        if held is None:
            held = self._held[notice.kind] = _Held(since=now)
        held.count += 1
        if notice.model is not None and notice.model not in held.models:
            held.models.append(notice.model)
        if notice.gpu is not None and notice.gpu not in held.gpus:
            held.gpus.append(notice.gpu)
        if notice.severity == "error":
            held.severity = "error"


def notice_for(event: Event) -> Notice:
    """The notice for one event of a kind that notifies: a short title, the event's own
    sentence as the body."""
    body = event.describe()
    match event:
        case PressureRaised():
            return Notice(event.TYPE, f"{event.subject()} under pressure", body,
                          event.severity, gpu=event.gpu)
        case ModelCrashed():
            return Notice(event.TYPE, f"{event.model} crashed", body, event.severity,
                          model=event.model)
        case ModelRestartExhausted():
            return Notice(event.TYPE, f"{event.model} gave up", body, event.severity,
                          model=event.model)
        case GpuLost():
            return Notice(event.TYPE, f"GPU {event.gpu} lost", body, event.severity,
                          gpu=event.gpu)
        case EmergencyStop():
            where = "the host" if event.gpu is None else f"GPU {event.gpu}"
            return Notice(event.TYPE, f"Emergency stop on {where}", body, event.severity,
                          gpu=event.gpu)
    return Notice(event.TYPE, event.TYPE, body, event.severity)


def _count(kind: str, n: int) -> str:
    one, many = KINDS[kind]
    return f"{n} more {one if n == 1 else many}"


def _more(kind: str, held: _Held) -> str:
    return f"… and {_count(kind, held.count)} before it{_names(held)}."


def _names(held: _Held) -> str:
    names = held.models or [f"GPU {g}" for g in held.gpus]
    return f" ({', '.join(names)})" if names else ""


def _summary(kind: str, held: _Held, now: float) -> Notice:
    """``7 more crashes`` in the last 40 s, and what they concern; a click opens the one
    model or GPU they all concern."""
    body = (f"{_count(kind, held.count)} in the last {seconds_text(round(now - held.since))}"
            f"{_names(held)}: the event log has each one.")
    model = held.models[0] if len(held.models) == 1 else None
    gpu = held.gpus[0] if len(held.gpus) == 1 and model is None else None
    return Notice(kind, _count(kind, held.count).capitalize(), body, held.severity,
                  model, gpu)
