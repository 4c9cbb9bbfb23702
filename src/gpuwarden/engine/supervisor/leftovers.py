"""Servers an earlier gpuwarden left running (``--leave-running``, or it was killed): which
to adopt, which to stop, and stopping them before anything new is started.

A found server is adopted only when the config still names its model, for the same
backend, and would launch it with the same command line now, apart from what each launch
picks for itself (port, API key, GPU layers, a throttle's ``--parallel``). Otherwise it is
stopped: ``removed`` (no model of that name any more: a removed or renamed model),
``changed`` (other settings: it is loaded again with the new ones), ``duplicate`` (a second
server for one model) or ``not_answering``.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import psutil

from gpuwarden.engine.events.servers import LeftoverReason
from gpuwarden.engine.lifecycle.config import Config, ModelConfig
from gpuwarden.engine.supervisor.registry import START_TIME_TOLERANCE_S, ServerRecord

log = logging.getLogger(__name__)

__all__ = ["Stop", "Takeover", "argv_changes", "plan_takeover", "stop_servers"]

# What each launch picks for itself: compared as a placeholder.
_PER_LAUNCH = frozenset({"--port", "--api-key", "--n-gpu-layers"})
_SAID_MAX = 160  # characters of a changed command line shown in an event
_POLL_S = 0.02  # how often a stopping server is looked at


@dataclass(frozen=True)
class Stop:
    record: ServerRecord
    reason: LeftoverReason
    detail: str = ""  # for "changed": what differs


@dataclass
class Takeover:
    adopt: list[ServerRecord] = field(default_factory=list)
    stop: list[Stop] = field(default_factory=list)


def plan_takeover(found: Sequence[ServerRecord], config: Config, backend_kind: str,
                  changes: Callable[[ServerRecord, ModelConfig], str],
                  answers: Callable[[ServerRecord], bool]) -> Takeover:
    """What to do with each server found, first come first served per model. ``changes``
    says how a record's command line differs from what its model would launch now ("":
    not at all); ``answers`` whether it answers its health check."""
    plan, claimed = Takeover(), set[str]()
    for record in found:
        model = config.model(record.model)
        if model is None or model.backend != backend_kind:
            plan.stop.append(Stop(record, "removed"))
        elif record.model in claimed:
            plan.stop.append(Stop(record, "duplicate"))
        elif said := changes(record, model):
            plan.stop.append(Stop(record, "changed", said))
        elif not answers(record):
            plan.stop.append(Stop(record, "not_answering"))
        else:
            plan.adopt.append(record)
        claimed.add(record.model)
    return plan


def argv_changes(recorded: Sequence[str], expected: Sequence[str]) -> str:
    """How the command line a server was started with differs from the one its model
    would be launched with now, in a few words ("": the same). Per-launch values are not
    compared, nor a ``--parallel N [--kv-unified]`` a throttled launch appended."""
    old, new = _comparable(recorded), _comparable(expected)
    if len(old) > len(new) and _is_throttle(old[len(new):]):
        old = old[:len(new)]
    if old == new:
        return ""
    start = 0
    while start < min(len(old), len(new)) and old[start] == new[start]:
        start += 1
    end = 0
    while end < min(len(old), len(new)) - start and old[-1 - end] == new[-1 - end]:
        end += 1
    flag = f"{old[start - 1]} " if start > 0 and old[start - 1].startswith("-") else ""
    said = f"{flag}{_words(old[start:len(old) - end])} -> {_words(new[start:len(new) - end])}"
    return said if len(said) <= _SAID_MAX else said[:_SAID_MAX - 3] + "..."


def _comparable(argv: Sequence[str]) -> list[str]:
    out = [os.path.realpath(argv[0])] if argv else []
    for i, arg in enumerate(argv[1:], start=1):
        out.append("*" if argv[i - 1] in _PER_LAUNCH else arg)
    return out


def _is_throttle(tail: Sequence[str]) -> bool:
    return (len(tail) in (2, 3) and tail[0] == "--parallel" and tail[1].isdigit()
            and tail[2:] in ([], ["--kv-unified"]))


def _words(args: Sequence[str]) -> str:
    return " ".join(args) if args else "(nothing)"


def stop_servers(records: Sequence[ServerRecord], grace_s: float) -> list[ServerRecord]:
    """SIGTERM (after SIGCONT: a stopped process cannot act on it) to each server that is
    still the recorded process, wait up to ``grace_s`` for all, SIGKILL the rest and wait
    for them (``grace_s`` 0: SIGKILL at once). Returns those still alive afterwards (not
    ours to kill, or stuck in the kernel)."""
    procs: dict[int, tuple[psutil.Process, ServerRecord]] = {}
    for record in records:
        try:
            proc = psutil.Process(record.pid)
            if abs(proc.create_time() - record.started_ts) > START_TIME_TOLERANCE_S:
                continue  # it ended and its pid was reused since it was found
            proc.send_signal(signal.SIGCONT)
            proc.send_signal(signal.SIGTERM if grace_s > 0 else signal.SIGKILL)
        except psutil.NoSuchProcess:
            continue
        except psutil.Error as exc:
            log.warning("cannot stop pid %d (%s): %s", record.pid, record.model, exc)
        procs[record.pid] = (proc, record)
    alive = _wait_ended([p for p, _ in procs.values()], max(grace_s, 0.1))
    for proc in alive:
        log.warning("pid %d ignored SIGTERM for %.0f s: killing it", proc.pid, grace_s)
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            continue
        except psutil.Error as exc:
            log.warning("cannot kill pid %d: %s", proc.pid, exc)
    return [procs[proc.pid][1] for proc in _wait_ended(alive, 5.0)]


def _wait_ended(procs: Sequence[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    """Wait until each has ended (a zombie has: its parent, not us, reaps it); returns
    those still running at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        alive = [p for p in procs if _running(p)]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(_POLL_S)


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True
