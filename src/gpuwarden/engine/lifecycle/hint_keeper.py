"""Keeps the persisted hints in step with the manager and saves them now and then."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace

from gpuwarden.engine.clock import Clock
from gpuwarden.engine.events import EventBus, StorageError, StorageRecovered
from gpuwarden.engine.lifecycle.hints import HintStore
from gpuwarden.engine.lifecycle.state import ModelState

log = logging.getLogger(__name__)

SAVE_EVERY_S = 60.0
_KEPT = "use counts and the choices made in the window are kept in memory and saved when it works"


class HintKeeper:
    """A no-op without a store, so the manager never has to ask."""

    def __init__(self, store: HintStore | None, bus: EventBus, clock: Clock) -> None:
        self._store = store
        self._bus = bus
        self._clock = clock
        self._saved_at = clock.time()
        self._failing = False

    def restore(self, states: Mapping[str, ModelState]) -> dict[str, ModelState]:
        """The states with last use, counts and the user's overrides from the store."""
        if self._store is None:
            return dict(states)
        out = {}
        for name, s in states.items():
            h = self._store.get(name)
            out[name] = replace(s, last_access=h.last_access_ts, access_count=h.access_count,
                                  eviction_override=h.eviction_override,
                                  priority_override=h.priority_override)
        return out

    def remember(self, name: str, **changes: object) -> None:
        if self._store is not None:
            self._store.update(name, **changes)

    def save_if_due(self) -> None:
        if self._clock.time() - self._saved_at >= SAVE_EVERY_S:
            self.save()

    def save(self) -> None:
        """Write now; a failure is one storage.error per outage (and one line in the log),
        the next save that works one storage.recovered."""
        if self._store is None:
            return
        self._saved_at = self._clock.time()
        path = str(self._store.path)
        try:
            self._store.save()
        except OSError as exc:
            if not self._failing:
                reason = exc.strerror or str(exc)
                log.warning("cannot save hints to %s: %s", path, reason)
                self._bus.publish(StorageError(path=path, message=f"{reason}; {_KEPT}"))
            self._failing = True
            return
        if self._failing:
            self._bus.publish(StorageRecovered(path=path))
        self._failing = False
