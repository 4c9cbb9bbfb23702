"""The config file as the running engine sees it: whether it changed since it was read
(inode, size and modification time), and reading it again into what changed."""

from __future__ import annotations

from pathlib import Path

from gpuwarden.engine.lifecycle.config import Config, ConfigProblem, load_config
from gpuwarden.engine.lifecycle.config_diff import ConfigDiff, diff_configs

Stamp = tuple[int, int, int]


class ConfigFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp = file_stamp(path)  # what the running config was read from

    def changed(self) -> bool:
        return file_stamp(self.path) != self._stamp

    def read(self, running: Config) -> tuple[ConfigDiff, list[ConfigProblem]]:
        """Read it again: what changed against ``running``, and its problems. An empty
        file is an editor between truncating and writing, not "remove every model": it
        changes nothing."""
        self._stamp = file_stamp(self.path)
        new, problems = load_config(self.path)
        diff = diff_configs(running, new, problems)
        if diff.unusable is None and not new.models and _blank(self.path):
            diff = ConfigDiff((), (), (), (), (), running, f"{self.path} is empty")
        return diff, problems


def file_stamp(path: Path) -> Stamp | None:
    """(inode, size, mtime in ns) of the file; None when it cannot be read."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _blank(path: Path) -> bool:
    try:
        return path.stat().st_size == 0
    except OSError:
        return False
