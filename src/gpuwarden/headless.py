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
from gpuwarden.engine.journal import default_journal_path
from gpuwarden.engine.lifecycle.config import Config, default_config_path, load_config
from gpuwarden.engine.lifecycle.hints import default_hints_path
from gpuwarden.engine.runtime import TelemetryOptions
from gpuwarden.engine.service import EngineService, ServicePaths

EXIT_USAGE = 2


def _load(args: argparse.Namespace) -> Config | None:
    path = args.config
    if path is None:
        path = default_config_path()
        if not path.exists():
            print(f"gpuwarden: no config file at {path}; running with no models "
                  "(see docs/config.md)", file=sys.stderr)
            return Config()
    elif not path.is_file():
        print(f"gpuwarden: error: {path}: no such config file", file=sys.stderr)
        return None
    config, problems = load_config(path)
    for problem in problems:
        print(f"gpuwarden: {problem}", file=sys.stderr)
    if problems:
        print(f"gpuwarden: {len(config.models)} valid model(s) loaded from {path}; "
              "the entries above were skipped", file=sys.stderr)
    return config


def _print_event(event: Event) -> None:
    sys.stdout.write(json.dumps(event.to_dict(), default=str, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def cmd_headless(args: argparse.Namespace, telemetry: TelemetryOptions) -> int:
    config = _load(args)
    if config is None:
        return EXIT_USAGE
    telemetry = replace(telemetry, interval_s=config.sample_interval_s)
    service = EngineService(config, telemetry,
                            ServicePaths(journal=default_journal_path(),
                                         hints=default_hints_path()))
    for problem in service.hint_problems:
        print(f"gpuwarden: {problem}", file=sys.stderr)
    if args.events == "-":
        service.subscribe(_print_event)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        service.run(stop, args.duration)
    finally:
        service.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
