"""`gpuwarden headless`: the engine with no window, for servers and scripts."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from dataclasses import replace
from types import FrameType

from gpuwarden.engine.events import Event
from gpuwarden.engine.runtime import TelemetryOptions
from gpuwarden.engine.service import EngineService, default_service_paths
from gpuwarden.startup import ConfigFileMissing, read_config, run_single_instance

EXIT_USAGE = 2


def _print_event(event: Event) -> None:
    sys.stdout.write(json.dumps(event.to_dict(), default=str, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def cmd_headless(args: argparse.Namespace, telemetry: TelemetryOptions) -> int:
    return run_single_instance(lambda: _run(args, telemetry))


def _run(args: argparse.Namespace, telemetry: TelemetryOptions) -> int:
    try:
        config, notes = read_config(args.config)
    except ConfigFileMissing as exc:
        print(f"gpuwarden: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    for note in notes:
        print(f"gpuwarden: {note}", file=sys.stderr)
    telemetry = replace(telemetry, interval_s=args.interval or config.sample_interval_s)
    service = EngineService.build(config, telemetry, default_service_paths(), problems=notes)
    for problem in (*service.hint_problems, *service.registry_problems):
        print(f"gpuwarden: {problem}", file=sys.stderr)
    if args.events == "-":
        for event in service.bus.recent():  # config problems found while starting
            _print_event(event)
        service.subscribe(_print_event)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        service.run(stop, args.duration)
    finally:
        service.close(leave_running=args.leave_running)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
