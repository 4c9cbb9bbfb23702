"""`gpuwarden headless`: the engine with no window, for servers and scripts."""

from __future__ import annotations

import argparse
import errno
import json
import signal
import sys
import threading

from gpuwarden.engine.clock import SystemClock
from gpuwarden.engine.events import Event
from gpuwarden.engine.facade import Engine
from gpuwarden.engine.runtime import TelemetryOptions
from gpuwarden.startup import catch_stop_signals, run_engine


def _print_event(event: Event) -> None:
    sys.stdout.write(json.dumps(event.to_dict(), default=str, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def cmd_headless(args: argparse.Namespace, telemetry: TelemetryOptions) -> int:
    """A config file nothing could be used from ends it at once (status 2): with no model
    to run, a headless gpuwarden would only hide the mistake."""
    return run_engine(args.config, args.interval, telemetry, lambda engine: _run(engine, args),
                      refuse_unusable=True)


def _run(engine: Engine, args: argparse.Namespace) -> int:
    stop = threading.Event()
    wake = threading.Event()
    reader_gone = threading.Event()

    def print_event(event: Event) -> None:
        """Print one event; a reader that has gone (`| head -1`, a terminal closed under
        it: EIO) stops the run."""
        if reader_gone.is_set():
            return
        try:
            _print_event(event)
        except OSError as exc:
            if not isinstance(exc, BrokenPipeError) and exc.errno != errno.EIO:
                raise
            reader_gone.set()
            stop.set()
            wake.set()

    if args.events == "-":
        for event in engine.events_since(0):  # config problems found while starting
            _print_event(event)
        engine.subscribe(print_event)

    def on_signal(_sig: signal.Signals) -> None:
        stop.set()
        wake.set()

    restore_signals = catch_stop_signals(on_signal)
    try:
        drive(engine, stop, wake, args.duration)
    finally:
        engine.close(leave_running=args.leave_running)
        restore_signals()
    if reader_gone.is_set():
        raise BrokenPipeError  # cli.main ends the command quietly
    return 0


def drive(engine: Engine, stop: threading.Event, wake: threading.Event,
          duration_s: float | None = None) -> None:
    """Start the engine and call its step whenever it asks (or something wakes it),
    until ``stop`` is set or ``duration_s`` has passed."""
    clock = SystemClock()
    engine.set_waker(wake.set)
    engine.start()
    end = None if duration_s is None else clock.monotonic() + duration_s
    while not stop.is_set():
        wake.clear()
        delay = engine.step()
        if end is not None:
            left = end - clock.monotonic()
            if left <= 0:
                break
            delay = min(delay, left)
        wake.wait(delay)
