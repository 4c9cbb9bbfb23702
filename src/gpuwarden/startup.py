"""What the window and `gpuwarden headless` share when they start: reading the config."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from gpuwarden.engine.lifecycle.config import Config, default_config_path, load_config
from gpuwarden.engine.supervisor.instance_lock import (
    AlreadyRunning,
    InstanceLock,
    default_lock_path,
)

EXIT_ALREADY_RUNNING = 3
EXIT_CANNOT_START = 1


class ConfigFileMissing(FileNotFoundError):
    pass


def read_config(path: Path | None) -> tuple[Config, list[str]]:
    """The config and the problems a person should read (file:line: ...).

    An explicit path that does not exist raises ConfigFileMissing; a missing default file
    means no models yet, which is said as a note, not an error.
    """
    if path is None:
        default = default_config_path()
        if not default.exists():
            return Config(), [f"no config file at {default} yet: no models to manage "
                              "(see docs/config.md)"]
        path = default
    elif not path.exists():
        raise ConfigFileMissing(f"{path}: no such config file")
    elif not path.is_file():
        raise ConfigFileMissing(f"{path}: not a regular file")
    config, problems = load_config(path)
    notes = [str(p) for p in problems]
    if problems:
        notes.append(f"{len(config.models)} valid model(s) loaded from {path}; the entries "
                     "above were skipped")
    return config, notes


def run_single_instance(body: Callable[[], int]) -> int:
    """Run ``body`` as the only gpuwarden of this user; a second one says who runs and
    exits with status 3, so no model is ever started twice."""
    lock = InstanceLock(default_lock_path())
    try:
        lock.acquire()
    except AlreadyRunning as exc:
        print(f"gpuwarden: {exc}", file=sys.stderr)
        return EXIT_ALREADY_RUNNING
    except OSError as exc:
        print(f"gpuwarden: error: cannot create {lock.path}: {exc.strerror or exc}",
              file=sys.stderr)
        return EXIT_CANNOT_START
    try:
        return body()
    finally:
        lock.release()
