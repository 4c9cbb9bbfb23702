"""The engine's face for the window, over the control API of a gpuwarden elsewhere
(`gpuwarden --attach URL`): the bridge drives it exactly as it drives a local engine.

Each step reads the remote's status and models (one sample, as the local sampler would
make it); its history is fetched once when attaching and then grows from those samples;
its events come through :class:`~.feed.EventFeed`. Commands go to the API and answer as
locally. When the remote cannot be reached the window keeps what it showed, says so
(``remote.lost``, an alert), and tries again every step; nothing here ever blocks longer
than the request time-out, and never on the UI thread (the bridge's thread calls it)."""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import httpx
import numpy as np

from gpuwarden.engine.details import ModelDetails
from gpuwarden.engine.events import Event, Listener, RemoteLost, RemoteRecovered
from gpuwarden.engine.lifecycle.config import Config
from gpuwarden.engine.lifecycle.core import AdminResult
from gpuwarden.engine.lifecycle.policy import LoadPreview
from gpuwarden.engine.telemetry.history import History
from gpuwarden.engine.telemetry.snapshot import HistoryFrame, Snapshot
from gpuwarden.engine.views import ModelRow
from gpuwarden.remote import decode
from gpuwarden.remote.feed import EventFeed

log = logging.getLogger(__name__)
STEP_S = 1.0
TIMEOUT_S = 5.0
HISTORY_S = 3600.0
KEEP_EVENTS = 1000


class RemoteEngine:
    def __init__(self, url: str, token: str, *, timeout_s: float = TIMEOUT_S,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.url = url.rstrip("/")
        self._client = httpx.Client(base_url=self.url, timeout=timeout_s, transport=transport,
                                    headers={"Authorization": f"Bearer {token}"})
        self.config = Config(source=self.url)  # nothing to edit here: no config file
        self.config_path = None
        self.automation_paused = False
        self._snapshot: Snapshot | None = None
        self._rows: tuple[ModelRow, ...] = ()
        self._history = History(int(HISTORY_S / STEP_S) + 1)
        self._before: HistoryFrame | None = None  # what the remote had when we attached
        self._listeners: list[Listener] = []
        self._events: deque[Event] = deque(maxlen=KEEP_EVENTS)
        self._lock = threading.Lock()
        self._lost: str | None = None  # why it cannot be reached, while it cannot
        self._feed = EventFeed(self._client, self._deliver)

    # -- what the bridge drives ---------------------------------------------------------------

    def set_waker(self, wake: Callable[[], None]) -> None:
        return None  # events are delivered as they come; the samples on the step's clock

    def start(self) -> None:
        reply = self._ask("GET", "/api/v1/history", params={"since": time.time() - HISTORY_S})
        if reply is not None:
            try:
                self._before = decode.frame(reply)
            except decode.Undecodable as exc:
                log.warning("the remote's history was not readable: %s", exc)
        self._feed.start()
        self.step()

    def step(self, now: float | None = None) -> float:
        status = self._ask("GET", "/api/v1/status")
        models = self._ask("GET", "/api/v1/models") if status is not None else None
        if status is None or not isinstance(models, list):
            return STEP_S
        try:
            snap = decode.snapshot(status["snapshot"]) if status.get("snapshot") else None
            rows = tuple(decode.row(r) for r in models)
        except (decode.Undecodable, KeyError, TypeError) as exc:
            self._unreachable(f"its answer was not readable: {exc}")
            return STEP_S
        self.automation_paused = bool(status.get("automation_paused"))
        with self._lock:
            if snap is not None and (self._snapshot is None or snap.seq != self._snapshot.seq):
                self._history.append(snap)
            self._snapshot, self._rows = snap, rows
        return STEP_S

    def close(self, leave_running: bool = False) -> None:
        """Detach: the remote's models are its own and keep running."""
        self._feed.stop()
        self._client.close()

    def use_simulated(self, count: int = 1) -> None:
        return None  # the remote's GPUs are what they are

    # -- views ---------------------------------------------------------------------------------

    def snapshot(self) -> Snapshot | None:
        return self._snapshot

    def models(self) -> tuple[ModelRow, ...]:
        return self._rows

    def model(self, name: str) -> ModelRow | None:
        return next((r for r in self._rows if r.name == name), None)

    def history(self, since: float | None = None) -> HistoryFrame:
        with self._lock:
            live = self._history.frame(since=since)
        return _joined(self._before, live, since)

    def events_since(self, seq: int = 0) -> list[Event]:
        with self._lock:
            return [e for e in self._events if e.seq > seq]

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        self._listeners.remove(listener)

    def details(self, name: str) -> ModelDetails | None:
        found = self._ask("GET", f"/api/v1/models/{name}/details")
        if not isinstance(found, dict):
            return None
        try:
            return decode.details(found, self.url)
        except decode.Undecodable as exc:
            log.warning("%s's details were not readable: %s", name, exc)
            return None

    def preflight(self, name: str) -> None:
        return None

    def endpoint(self, name: str) -> None:
        return None  # the model's server is on the remote's loopback

    def load_preview(self, name: str) -> LoadPreview | AdminResult:
        found = self._ask("GET", f"/api/v1/models/{name}/load-preview", refusal=True)
        if isinstance(found, AdminResult):
            return found
        if found is None:
            return AdminResult(False, self._lost or f"{self.url} did not answer")
        try:
            return decode.preview(found)
        except decode.Undecodable as exc:
            return AdminResult(False, f"{self.url} answered something unreadable: {exc}")

    # -- commands: as the local engine's, answered by the remote ----------------------------------

    def load(self, name: str, how: str = "auto") -> AdminResult:
        return self._command("POST", f"/models/{name}/load", {"how": how})

    def unload(self, name: str) -> AdminResult:
        return self._command("POST", f"/models/{name}/unload")

    def offload(self, name: str) -> AdminResult:
        return self._command("POST", f"/models/{name}/offload")

    def restart(self, name: str) -> AdminResult:
        return self._command("POST", f"/models/{name}/restart")

    def set_policy(self, name: str, eviction: str | None) -> AdminResult:
        return self._command("PUT", f"/models/{name}/policy", {"eviction": eviction})

    def set_priority(self, name: str, priority: int | None) -> AdminResult:
        return self._command("PUT", f"/models/{name}/priority", {"priority": priority})

    def pin(self, name: str) -> AdminResult:
        return self.set_policy(name, "never")

    def unpin(self, name: str) -> AdminResult:
        return self.set_policy(name, None)

    def emergency_stop(self, gpu: int | None = None) -> AdminResult:
        return self._command("POST", "/emergency-stop", {"gpu": gpu})

    def pause_automation(self, paused: bool = True) -> AdminResult:
        return self._command("PUT", "/automation", {"paused": paused})

    def make_room(self, gpu: int, gib: float | None) -> AdminResult:
        return AdminResult(False, "Free VRAM is not offered through the API yet: use it on "
                                  "the machine itself")

    def reload_config(self) -> AdminResult:
        return AdminResult(False, f"the config file is on {self.url}'s machine: it is "
                                  "read again there when it changes")

    def _command(self, method: str, path: str, body: Mapping[str, Any] | None = None
                 ) -> AdminResult:
        found = self._ask(method, f"/api/v1{path}", json=body, refusal=True)
        if isinstance(found, AdminResult):
            return found
        if not isinstance(found, dict):
            return AdminResult(False, self._lost or f"{self.url} did not answer")
        return AdminResult(bool(found.get("ok")), str(found.get("message", "")))

    # -- plumbing ----------------------------------------------------------------------------------

    def _ask(self, method: str, path: str, *, refusal: bool = False, **kw: Any) -> Any:
        """The JSON answer; an AdminResult for a refusal (4xx) when ``refusal``; None
        when the remote cannot be reached (said once, as ``remote.lost``)."""
        try:
            reply = self._client.request(method, path, **kw)
        except httpx.HTTPError as exc:
            self._unreachable(f"{type(exc).__name__}: {exc}" if str(exc) else
                              type(exc).__name__)
            return None
        if reply.status_code == 401:
            self._unreachable("it refused the token (401)")
            return None
        self._reachable()
        try:
            data = reply.json()
        except ValueError:
            self._unreachable(f"HTTP {reply.status_code} without JSON")
            return None
        if reply.status_code >= 400:
            message = (data.get("error") or {}).get("message", "") if isinstance(data, dict) \
                else ""
            return AdminResult(False, message or f"HTTP {reply.status_code}") if refusal \
                else None
        return data

    def _unreachable(self, why: str) -> None:
        if self._lost is None:
            self._lost = why
            self._local(RemoteLost(url=self.url, message=why))

    def _reachable(self) -> None:
        if self._lost is not None:
            self._lost = None
            self._local(RemoteRecovered(url=self.url))

    def _local(self, event: Event) -> None:
        """An event of the attached window's own, between the remote's."""
        self._deliver(dataclasses.replace(event, ts=time.time(), seq=self._feed.last_seq))

    def _deliver(self, event: Event) -> None:
        with self._lock:
            self._events.append(event)
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("event listener %r failed on %s", listener, event.TYPE)


def _joined(before: HistoryFrame | None, live: HistoryFrame, since: float | None
            ) -> HistoryFrame:
    """The remote's history up to the first sample read here, then those."""
    if before is None or len(before) == 0:
        return live
    first = live.t[0] if len(live) else math.inf
    keep = (before.t < first) & (before.t >= (since if since is not None else -math.inf))
    keys = set(before.series) | set(live.series)

    def column(key: str) -> np.ndarray[Any, np.dtype[np.float64]]:
        old = before.series.get(key)
        new = live.series.get(key)
        old_part = old[keep] if old is not None else np.full(int(keep.sum()), math.nan)
        new_part = new if new is not None else np.full(len(live), math.nan)
        return np.concatenate([old_part, new_part])

    return HistoryFrame(np.concatenate([before.t[keep], live.t]),
                        {key: column(key) for key in keys})
