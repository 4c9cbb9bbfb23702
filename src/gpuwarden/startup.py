"""How the window and `gpuwarden headless` start, written once: read the config (and say
what is wrong with it), pick the interval, build the engine, all as the only gpuwarden of
this user."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from gpuwarden.api.token import token_path
from gpuwarden.engine.facade import Engine, default_service_paths
from gpuwarden.engine.lifecycle.config import Config, default_config_path, load_config
from gpuwarden.engine.paths import data_dir
from gpuwarden.engine.runtime import TelemetryOptions
from gpuwarden.engine.supervisor.instance_lock import (
    AlreadyRunning,
    InstanceLock,
    default_lock_path,
)
from gpuwarden.engine.tomlcheck import printable

if TYPE_CHECKING:
    from gpuwarden.api.server import ApiServer

EXIT_ALREADY_RUNNING = 3
EXIT_CANNOT_START = 1
EXIT_USAGE = 2
# What ends gpuwarden cleanly (every model stopped, as on Ctrl+C): the signals whose
# default would kill it with its servers running. SIGHUP is a closed terminal or ssh
# session; there is no reload signal (the config file is watched) and no status signal.
STOP_SIGNALS: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1",
                                       "SIGUSR2") if hasattr(signal, name))


def shown(path: Path) -> str:
    """A path as a message echoes it: control characters escaped."""
    return printable(str(path))


class ConfigFileMissing(FileNotFoundError):
    pass


class ConfigFileUnusable(ValueError):
    """Nothing in the config file could be used (unreadable, not TOML): ``str()`` is the
    problem, ``file:line: what``."""


def read_config(path: Path | None, *, refuse_unusable: bool = False
                ) -> tuple[Config, list[str], Path | None]:
    """The config, the problems a person should read (file:line: ...), and the file to
    watch for changes.

    An explicit path that does not exist raises ConfigFileMissing; a missing default file
    means no models yet, which is said as a note, not an error. A file nothing could be
    used from raises ConfigFileUnusable when ``refuse_unusable``; else it is a note, and
    the file is watched until it is fixed.
    """
    if path is None:
        default = default_config_path()
        if not default.exists():  # watched all the same: it is read once it is written
            return Config(), [f"no config file at {shown(default)} yet: no models to manage "
                              "(see docs/config.md)"], default
        path = default
    elif not path.exists():
        raise ConfigFileMissing(f"{shown(path)}: no such config file")
    elif not path.is_file():
        raise ConfigFileMissing(f"{shown(path)}: not a regular file")
    config, problems = load_config(path)
    notes = [str(p) for p in problems]
    unusable = next((p for p in problems if p.whole_file), None)
    if unusable is not None and refuse_unusable:
        raise ConfigFileUnusable(str(unusable))
    if unusable is not None:
        notes.append(f"nothing in {shown(path)} could be used: no models until it is fixed (it is "
                     "read again when it changes)")
    elif problems:
        notes.append(f"{len(config.models)} valid model(s) loaded from {shown(path)}; the entries "
                     "above were skipped")
    return config, notes, path


def open_engine(config_path: Path | None, interval_s: float | None,
                telemetry: TelemetryOptions, *, refuse_unusable: bool = False
                ) -> Engine | int:
    """The engine the user asked for, its start-up problems printed to stderr; or the
    exit status when it cannot be built (a missing config file, or one nothing could be
    used from when ``refuse_unusable``: headless, which would run nothing)."""
    try:
        config, notes, watched = read_config(config_path, refuse_unusable=refuse_unusable)
    except ConfigFileMissing as exc:
        print(f"gpuwarden: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ConfigFileUnusable as exc:
        print(f"gpuwarden: error: {exc}\ngpuwarden: error: nothing in the config file could "
              "be used: fix it and start again", file=sys.stderr)
        return EXIT_USAGE
    telemetry = replace(telemetry, interval_s=interval_s or config.sample_interval_s)
    engine = Engine.build(config, telemetry, default_service_paths(), problems=notes,
                          config_path=watched)
    for note in (*notes, *engine.startup_problems):
        print(f"gpuwarden: {note}", file=sys.stderr)
    return engine


def run_single_instance(body: Callable[[], int],
                        on_already_running: Callable[[], int | None] | None = None) -> int:
    """Run ``body`` as the only gpuwarden of this user; a second one says who runs and
    exits with status 3, so no model is ever started twice.

    ``on_already_running`` (the window: ask the running one to come forward) is tried
    first when another gpuwarden runs; the status it returns ends this start, and None
    falls back to the message."""
    lock = InstanceLock(default_lock_path())
    try:
        lock.acquire()
    except AlreadyRunning as exc:
        handed_over = on_already_running() if on_already_running is not None else None
        if handed_over is not None:
            return handed_over
        print(f"gpuwarden: {exc}", file=sys.stderr)
        return EXIT_ALREADY_RUNNING
    except OSError as exc:
        print(f"gpuwarden: error: cannot create {shown(lock.path)}: {exc.strerror or exc}",
              file=sys.stderr)
        return EXIT_CANNOT_START
    try:
        return body()
    finally:
        lock.release()


def serve_api(engine: Engine) -> ApiServer | None:
    """The control API beside ``engine``, as its config's ``[api]`` says (None: off)."""
    settings = engine.config.api
    if not settings.enabled:
        return None
    from gpuwarden.api.server import ApiServer  # FastAPI and uvicorn: only when served

    server = ApiServer(engine, settings, data_dir())
    url = server.start()
    if url is not None:
        print(f"gpuwarden: control API on {url} (its token: {shown(token_path(data_dir()))})",
              file=sys.stderr)
    return server


def run_engine(config_path: Path | None, interval_s: float | None,
               telemetry: TelemetryOptions, body: Callable[[Engine], int],
               on_already_running: Callable[[], int | None] | None = None, *,
               refuse_unusable: bool = False) -> int:
    """Open the engine as the only gpuwarden and hand it to ``body`` (the window or the
    headless loop), which drives it and closes it; ``on_already_running`` as in
    :func:`run_single_instance`, ``refuse_unusable`` as in :func:`open_engine`."""
    def opened() -> int:
        engine = open_engine(config_path, interval_s, telemetry,
                             refuse_unusable=refuse_unusable)
        if isinstance(engine, int):
            return engine
        api = serve_api(engine)
        try:
            return body(engine)
        finally:
            if api is not None:
                api.stop()

    return run_single_instance(opened, on_already_running)


def catch_stop_signals(stop: Callable[[signal.Signals], None]) -> Callable[[], None]:
    """From now on, each of :data:`STOP_SIGNALS` calls ``stop`` (on the main thread, so it
    must only ask for the stop) instead of killing gpuwarden; the function returned puts
    the handlers before back. A signal ignored when gpuwarden started stays ignored
    (``nohup gpuwarden headless`` outlives its terminal)."""
    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop(signal.Signals(signum))

    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    for sig, handler in previous.items():
        if handler != signal.SIG_IGN:
            signal.signal(sig, on_signal)

    def restore() -> None:
        for sig, handler in previous.items():
            if handler is not None:  # None: set outside Python, cannot be put back
                signal.signal(sig, handler)

    return restore
