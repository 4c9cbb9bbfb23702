"""What a GPU process holds beyond its buffers (the CUDA context and library workspace:
hundreds of MiB), learned per GPU from what loaded models really held, and kept in a small
file in the data folder so the next start knows it."""

from __future__ import annotations

import logging
import math
import threading
from pathlib import Path

from gpuwarden.engine.atomic import atomic_write_json
from gpuwarden.engine.clock import Clock
from gpuwarden.engine.jsondoc import DocSpec, read_doc

log = logging.getLogger(__name__)

DEFAULT_OVERHEAD_MIB = 650.0  # until a GPU has shown its own (an H200 with CUDA 13: ~640)
MAX_OVERHEAD_MIB = 8192.0
FORMAT_VERSION = 1
_SPEC = DocSpec(FORMAT_VERSION, "gpus", dict, "starting from the default CUDA overhead")


class OverheadBook:
    """Per-GPU overhead in MiB: the last one learned, else the default. ``path`` None:
    kept in memory only."""

    def __init__(self, path: Path | None, clock: Clock,
                 default_mib: float = DEFAULT_OVERHEAD_MIB) -> None:
        self.path = path
        self._clock = clock
        self._default = default_mib
        self._learned: dict[str, float] = {}
        self._lock = threading.Lock()

    def load(self) -> list[str]:
        """Read the file; the problems a person should see (never raises)."""
        if self.path is None:
            return []
        entries, problems = read_doc(self.path, _SPEC, self._clock)
        for key, value in (entries or {}).items():
            if _plausible(value):
                self._learned[str(key)] = float(value)
        return problems

    def get(self, gpu: int) -> tuple[float, str]:
        """(MiB, where it came from: "learned on this GPU" or "default")."""
        with self._lock:
            learned = self._learned.get(_key(gpu))
        if learned is None:
            return self._default, "default"
        return learned, "learned on this GPU"

    def learn(self, gpu: int, mib: float) -> None:
        """A model on ``gpu`` held ``mib`` more than its buffers: remember (and save)."""
        if not _plausible(mib):
            return
        with self._lock:
            if self._learned.get(_key(gpu)) == round(mib, 1):
                return
            self._learned[_key(gpu)] = round(mib, 1)
            doc = {"version": FORMAT_VERSION, "gpus": dict(self._learned)}
        if self.path is None:
            return
        try:
            atomic_write_json(self.path, doc)
        except OSError:
            log.warning("cannot save the learned CUDA overhead to %s", self.path, exc_info=True)


def _key(gpu: int) -> str:
    return f"gpu{gpu}"


def _plausible(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and \
        math.isfinite(value) and 0 <= value <= MAX_OVERHEAD_MIB
