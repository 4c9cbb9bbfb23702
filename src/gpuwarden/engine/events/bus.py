"""The EventBus: stamps events and delivers them in order, never under the engine's lock."""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from gpuwarden.engine.clock import Clock, SystemClock
from gpuwarden.engine.events.base import Event

log = logging.getLogger(__name__)

Listener = Callable[[Event], None]


@dataclass
class EventBus:
    """Stamps events with ``ts`` and ``seq`` and hands them to every listener, in ``seq``
    order, one event at a time.

    Inside :meth:`deferred` (the lifecycle manager wraps its lock in it) events are only
    stamped and queued; they are delivered when the outermost ``deferred`` block of that
    thread ends, after the lock is released, so no listener (journal, stdout, Qt) ever
    runs while the engine's lock is held. A listener that raises is logged with its
    traceback and does not stop the others. The last ``keep`` events are kept, so a window
    opened later (or an API client resuming from a ``seq``) can have them.
    """

    clock: Clock = field(default_factory=SystemClock)
    keep: int = 1000
    _seq: int = 0
    _recent: deque[Event] = field(init=False)
    _pending: deque[Event] = field(init=False)
    _listeners: list[Listener] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _deliver: threading.Lock = field(default_factory=threading.Lock)
    _local: threading.local = field(default_factory=threading.local)

    def __post_init__(self) -> None:
        self._recent = deque(maxlen=self.keep)
        self._pending = deque()

    def since(self, seq: int) -> list[Event]:
        """The kept events with a ``seq`` above ``seq``, oldest first."""
        with self._lock:
            return [e for e in self._recent if e.seq > seq]

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        self._listeners.remove(listener)

    def publish(self, event: Event) -> Event:
        """Stamp and deliver ``event``; inside :meth:`deferred`, keep it for the end of
        the block (it is stamped then, and the unstamped event is returned)."""
        if getattr(self._local, "depth", 0):
            self._local.held.append(event)
            return event
        stamped = self._stamp([event])[0]
        self.flush()
        return stamped

    def _stamp(self, events: list[Event]) -> list[Event]:
        with self._lock:
            out = []
            for event in events:
                self._seq += 1
                stamped = dataclasses.replace(event, ts=self.clock.time(), seq=self._seq)
                self._recent.append(stamped)
                self._pending.append(stamped)
                out.append(stamped)
            return out

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """Hold what this thread publishes inside; stamp and deliver it when the
        outermost block ends (after the lock it wraps is released)."""
        depth = getattr(self._local, "depth", 0)
        if not depth:
            self._local.held = []
        self._local.depth = depth + 1
        try:
            yield
        finally:
            self._local.depth -= 1
            if not self._local.depth:
                held, self._local.held = self._local.held, []
                self._stamp(held)
                self.flush()

    def flush(self) -> None:
        """Deliver every queued event in ``seq`` order. One thread delivers at a time; a
        listener that publishes has its event delivered after the current one."""
        if getattr(self._local, "delivering", False):
            return
        with self._deliver:
            self._local.delivering = True
            try:
                while True:
                    with self._lock:
                        if not self._pending:
                            return
                        event = self._pending.popleft()
                    self._deliver_one(event)
            finally:
                self._local.delivering = False

    def _deliver_one(self, event: Event) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("event listener %r failed on %s", listener, event.TYPE)
