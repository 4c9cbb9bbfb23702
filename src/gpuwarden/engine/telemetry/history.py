"""Fixed-size ring buffers of every numeric series: memory stays flat whatever the run time."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from gpuwarden.engine.telemetry.snapshot import (
    GPU_SERIES_FIELDS,
    HOST_SERIES_FIELDS,
    HistoryFrame,
    Snapshot,
    gpu_key,
    host_key,
)

DEFAULT_HISTORY_S = 3600.0

FloatArray = npt.NDArray[np.float64]


def capacity_for(history_s: float, interval_s: float) -> int:
    """How many samples hold ``history_s`` seconds at ``interval_s``."""
    return max(2, math.ceil(history_s / interval_s))


class History:
    """Time stamps and one column per series, in a single preallocated ring.

    A series that appears later (a GPU that comes back, a second GPU) gets a column
    whose earlier rows are NaN. Only the engine thread writes; readers take
    :meth:`frame`, which copies.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 2:
            raise ValueError("history capacity must be at least 2")
        self.capacity = capacity
        self._t: FloatArray = np.full(capacity, np.nan)
        self._cols: dict[str, FloatArray] = {}
        self._head = 0  # next row to write
        self._count = 0

    def __len__(self) -> int:
        return self._count

    @property
    def nbytes(self) -> int:
        return int(self._t.nbytes + sum(c.nbytes for c in self._cols.values()))

    def append(self, snapshot: Snapshot) -> None:
        row = self._head
        self._t[row] = snapshot.ts
        for col in self._cols.values():
            col[row] = np.nan
        for gpu in snapshot.gpus:
            for name in GPU_SERIES_FIELDS:
                self._put(gpu_key(gpu.index, name), row, getattr(gpu, name))
        host = snapshot.host
        for name in HOST_SERIES_FIELDS:
            self._put(host_key(name), row, getattr(host, name))
        self._head = (row + 1) % self.capacity
        self._count = min(self._count + 1, self.capacity)

    def _put(self, key: str, row: int, value: float | None) -> None:
        col = self._cols.get(key)
        if col is None:
            if value is None:
                return
            col = np.full(self.capacity, np.nan)
            self._cols[key] = col
        col[row] = np.nan if value is None else value

    def keys(self) -> list[str]:
        return sorted(self._cols)

    def frame(self, since: float | None = None) -> HistoryFrame:
        """Copy of the samples (oldest first), only those with ``t >= since`` if given."""
        order = self._order()
        t = self._t[order]
        if since is not None:
            start = int(np.searchsorted(t, since, side="left"))
            order = order[start:]
            t = t[start:]
        series = {}
        for key, col in self._cols.items():
            values = col[order]
            values.flags.writeable = False
            series[key] = values
        t.flags.writeable = False
        return HistoryFrame(t=t, series=series)

    def _order(self) -> npt.NDArray[np.intp]:
        if self._count < self.capacity:
            return np.arange(self._count)
        return (np.arange(self.capacity) + self._head) % self.capacity
