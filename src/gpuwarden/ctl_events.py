"""`gpuwarden ctl events`: the kept events, read from the API's event stream up to the
newest one there was when asked (``GET /api/v1/events/latest``), so it stops; with
``--follow`` every new one after them, until Ctrl+C or until gpuwarden goes away."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Iterator
from typing import Any

from gpuwarden.ctl_client import EXIT_DONE, Ask, Failed, refusal
from gpuwarden.ctl_format import event_line

FOLLOW_READ_S = 45.0  # three of the server's 15 s keep-alive comments: silent longer is gone


def print_events(ask: Ask, args: argparse.Namespace) -> int:
    """Print them, one line each (the JSON as sent, with --json)."""
    last = None if args.follow else _latest(ask)
    if last is not None and last <= args.since:
        return EXIT_DONE  # nothing kept after --since
    try:
        return _stream(ask, args, last)
    except KeyboardInterrupt:  # Ctrl+C: how --follow is meant to end
        return EXIT_DONE


def _latest(ask: Ask) -> int:
    reply = ask.send("GET", "/api/v1/events/latest")
    if reply.status_code != 200:
        raise Failed(refusal(reply))
    return int(reply.json()["seq"])


def _stream(ask: Ask, args: argparse.Namespace, last: int | None) -> int:
    """Print until ``last`` (None: until the stream ends, which means gpuwarden stopped)."""
    import httpx

    read = FOLLOW_READ_S if last is None else ask.timeout_s
    timeout = httpx.Timeout(ask.timeout_s, read=max(read, ask.timeout_s))
    with ask.reaching(), ask.client.stream("GET", "/api/v1/events",
                                           params={"since": args.since},
                                           timeout=timeout) as reply:
        ask.check_token(reply)
        if reply.status_code != 200:
            reply.read()
            raise Failed(refusal(reply))
        for raw, data in sse_data(reply.iter_lines()):
            seq = int(data.get("seq", 0))
            if last is not None and seq > last:
                return EXIT_DONE  # (the newest was no longer kept)
            print(raw if args.json else event_line(data), flush=True)
            if last is not None and seq >= last:
                return EXIT_DONE
    raise Failed(f"gpuwarden at {ask.target.url} stopped: its event stream ended")


def sse_data(lines: Iterable[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """The ``data:`` of each Server-Sent Event: the text as sent, and its JSON."""
    for line in lines:
        if line.startswith("data:"):
            raw = line.removeprefix("data:").removeprefix(" ")
            yield raw, json.loads(raw)
