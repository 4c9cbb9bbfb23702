"""What the graphs show besides curves, without Qt: event marks (kept, aged, placed on the
'seconds ago' axis, merged when they would overlap) and the hover read-out's figures."""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import time
from collections import deque
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

MarkLevel = Literal["info", "warning", "error"]
LEVELS: tuple[MarkLevel, ...] = ("info", "warning", "error")  # index = severity

MAX_MARKS = 300
MAX_MARK_AGE_S = 3600.0  # the longest window a graph shows


@dataclass(frozen=True, slots=True)
class Mark:
    ts: float  # unix seconds of the event
    text: str
    level: MarkLevel
    label: str = dataclasses.field(init=False)  # the tooltip line: clock time and text

    def __post_init__(self) -> None:
        clock = time.strftime("%H:%M:%S", time.localtime(self.ts))
        object.__setattr__(self, "label", f"{clock}  {self.text}")


@dataclass(frozen=True, slots=True)
class MarkSet:
    """Marks placed on a graph's x axis, oldest first: x (seconds before the newest
    sample, <= 0), severity (index into LEVELS) and the tooltip text of each."""

    x: FloatArray
    severity: IntArray
    text: tuple[str, ...]

    @staticmethod
    def empty() -> MarkSet:
        return MarkSet(np.empty(0), np.empty(0, dtype=np.int64), ())

    def __len__(self) -> int:
        return len(self.text)

    def text_near(self, x: float, tolerance: float) -> str | None:
        """The text of the mark nearest ``x``, if one lies within ``tolerance``."""
        if not len(self):
            return None
        i = int(np.argmin(np.abs(self.x - x)))
        return self.text[i] if abs(self.x[i] - x) <= tolerance else None


class MarkBook:
    """The marks of one panel: at most ``cap`` (the oldest go first), none older than
    ``max_age_s`` before the newest sample, kept in time order."""

    def __init__(self, cap: int = MAX_MARKS, max_age_s: float = MAX_MARK_AGE_S) -> None:
        self._marks: deque[Mark] = deque(maxlen=cap)
        self._max_age_s = max_age_s

    def add(self, mark: Mark) -> None:
        if not self._marks or mark.ts >= self._marks[-1].ts:
            self._marks.append(mark)
            return
        # Late arrival: keep the order (rare, so rebuilding the deque is fine).
        marks = list(self._marks)
        bisect.insort(marks, mark, key=lambda m: m.ts)
        self._marks = deque(marks, maxlen=self._marks.maxlen)  # keeps the newest

    def placed(self, newest: float) -> MarkSet:
        """Drop marks too old to be seen, and place the rest relative to ``newest`` (the
        newest sample's time). An event after the newest sample sits at 0 until the next."""
        oldest = newest - self._max_age_s
        while self._marks and self._marks[0].ts < oldest:
            self._marks.popleft()
        if not self._marks:
            return MarkSet.empty()
        ts = np.fromiter((m.ts for m in self._marks), dtype=np.float64, count=len(self._marks))
        severity = np.fromiter((LEVELS.index(m.level) for m in self._marks), dtype=np.int64,
                               count=len(self._marks))
        return MarkSet(np.minimum(ts - newest, 0.0), severity,
                       tuple(m.label for m in self._marks))

    def __len__(self) -> int:
        return len(self._marks)


def group_marks(marks: MarkSet, tolerance: float) -> MarkSet:
    """Marks within ``tolerance`` of the first of a run merged into one at that first x:
    the worst severity, every text (one a line). Input and output are in x order."""
    n = len(marks)
    if n < 2 or bool(np.all(np.diff(marks.x) > tolerance)):
        return marks  # the usual case, without a Python loop
    starts = [0]
    for i in range(1, n):
        if marks.x[i] - marks.x[starts[-1]] > tolerance:
            starts.append(i)
    bounds = [*starts, n]
    return MarkSet(
        marks.x[starts].copy(),
        np.maximum.reduceat(marks.severity, starts),
        tuple("\n".join(marks.text[a:b]) for a, b in itertools.pairwise(bounds)),
    )


def value_at(x: FloatArray, y: FloatArray, at: float) -> float | None:
    """The value a step curve shows at ``at``: each sample holds until the next one.
    None before the first sample, past the data, or where the reading was n/a."""
    i = int(np.searchsorted(x, at, side="right")) - 1
    if i < 0 or i >= len(y) or at > x[-1] + 1e-9:
        return None
    value = float(y[i])
    return value if np.isfinite(value) else None


def format_offset(seconds_ago: float) -> str:
    """A time on the graph's axis for the read-out: 'now', '-12 s', '-3 min 05 s'."""
    ago = round(-seconds_ago)
    if ago <= 0:
        return "now"
    if ago < 60:
        return f"-{ago} s"
    return f"-{ago // 60} min {ago % 60:02d} s"
