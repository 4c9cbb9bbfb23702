"""Loading a model for a request that names it: one load however many requests wait for
it, then the wait until its server answers, as the engine's events tell it.

The load is the panel's (``Engine.load(name, "auto")``: the pre-flight and a swap
decide). Under a ``wait_cooldown`` safety verdict the engine holds the load and the
request waits; under ``abort`` it is refused at once. A crash, a refusal or an unload
of the model during the wait ends it with the engine's own words."""

from __future__ import annotations

import asyncio
import logging

from gpuwarden.engine.events import Event
from gpuwarden.engine.facade import Engine
from gpuwarden.engine.views import ModelRow

log = logging.getLogger(__name__)

POLL_S = 1.0  # the state is looked at again this often even when no event comes
# What a load asked for by a request may answer with, for the request.
ENDINGS = frozenset({"model.crashed", "model.refused", "model.restart_exhausted",
                     "model.unloaded"})
LOADABLE = frozenset({"unloaded", "crashed", "gave_up"})  # others: wait for what happens

Endpoint = tuple[str, str]  # ("http://127.0.0.1:PORT", api key)


class Unavailable(Exception):
    """The model cannot answer now; the message says why, for the caller."""


class OnDemand:
    """Each model's endpoint, loading it first when it is not loaded. Use it from one
    event loop (the API server's)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._pending: dict[str, asyncio.Task[Endpoint]] = {}

    async def endpoint(self, name: str) -> Endpoint:
        """Where ``name`` answers, loading it and waiting for it if need be; raises
        :class:`Unavailable`. Requests that arrive meanwhile share the one load."""
        found = self._engine.endpoint(name)
        if found is not None:
            return found
        task = self._pending.get(name)
        if task is None or task.done():
            task = asyncio.get_running_loop().create_task(self._ready(name))
            self._pending[name] = task
            task.add_done_callback(lambda done: self._forget(name, done))
        # shielded: a caller that goes away does not cancel the others' wait
        return await asyncio.shield(task)

    def _forget(self, name: str, task: asyncio.Task[Endpoint]) -> None:
        if self._pending.get(name) is task:
            del self._pending[name]
        if not task.cancelled() and task.exception() is not None:
            log.debug("%s was not made ready: %s", name, task.exception())

    async def _ready(self, name: str) -> Endpoint:
        loop = asyncio.get_running_loop()
        news: asyncio.Queue[Event] = asyncio.Queue()

        def heard(event: Event) -> None:  # any thread
            if getattr(event, "model", None) == name:
                loop.call_soon_threadsafe(news.put_nowait, event)

        timeout = self._engine.config.restart.startup_timeout_s
        deadline = loop.time() + timeout
        self._engine.subscribe(heard)  # first: nothing falls between a look and a load
        try:
            asked = False
            while True:
                found = self._engine.endpoint(name)
                if found is not None:
                    return found
                row = self._current(name)
                if row.state in LOADABLE and not asked:
                    _drain(news)  # what happened before this load is not its answer
                    await self._load(row)
                    asked = True
                    continue
                if row.state == "stopping":
                    asked = False  # moved or swapped out meanwhile: load it once stopped
                left = deadline - loop.time()
                if left <= 0:
                    raise Unavailable(_too_long(row, timeout))
                try:
                    event = await asyncio.wait_for(news.get(), min(left, POLL_S))
                except TimeoutError:
                    continue
                if asked and event.type in ENDINGS:
                    raise Unavailable(event.describe())
        finally:
            self._engine.unsubscribe(heard)

    def _current(self, name: str) -> ModelRow:
        row = self._engine.model(name)
        if row is None:
            raise Unavailable(f"{name} was removed from the config")
        if (why := self._aborted(row)) is not None:
            raise Unavailable(f"{name} cannot be loaded now: {why}")
        return row

    async def _load(self, row: ModelRow) -> None:
        result = await asyncio.to_thread(self._engine.load, row.name, "auto")
        if not result.ok:
            raise Unavailable(result.message)
        log.info("loading %s for a request: %s", row.name, result.message)

    def _aborted(self, row: ModelRow) -> str | None:
        """Why a load of ``row`` is refused outright (an ``abort`` safety verdict on its
        GPU or the host), or None."""
        keys = ("host",) if row.placement == "cpu" else ("host", f"gpu{row.gpu}")
        verdicts = self._engine.verdicts()
        for key in keys:
            verdict = verdicts.get(key)
            if verdict is not None and verdict.kind == "abort":
                return verdict.reason
        return None


def _too_long(row: ModelRow, timeout: float) -> str:
    why = f": it waits to load until it is safe: {row.waiting_for}" if row.waiting_for \
        else f" (it is {row.state})"
    return f"{row.name} was not ready after {timeout:g} s{why}"


def _drain(queue: asyncio.Queue[Event]) -> None:
    while not queue.empty():
        queue.get_nowait()
