"""Watching the config file, so that an edit is picked up while gpuwarden runs.

:class:`ConfigWatcher` watches the file's folder (not the file: editors that save by
writing a new file and renaming it over the old one replace the file being watched) and
calls back once per burst of changes to that one name, from its own daemon thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

import watchfiles

log = logging.getLogger(__name__)
_MAX_BATCH_MS = 1600  # a change that keeps going is reported at least this often
_JOIN_S = 2.0


class ConfigWatcher:
    """Calls ``on_change()`` on its own thread after ``path`` is written, replaced or
    removed, once changes have been quiet for ``debounce_ms``. The callback should hand
    the work to the engine's thread; an exception from it is logged and watching goes on.
    """

    def __init__(self, path: Path, on_change: Callable[[], None], *,
                 debounce_ms: int = 200) -> None:
        self.path = path.expanduser().absolute()
        self.on_change = on_change
        self.debounce_ms = debounce_ms
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start watching; a missing folder is logged and nothing is watched."""
        if self.running:
            return
        if not self.path.parent.is_dir():
            log.warning("not watching %s for changes: folder %s does not exist",
                        self.path, self.path.parent)
            return
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="config-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop watching and wait (briefly) for the thread; safe to call more than once."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is None or thread is threading.current_thread():  # stop() from on_change
            return
        thread.join(_JOIN_S)
        if thread.is_alive():
            log.warning("config watcher for %s did not stop within %g s", self.path, _JOIN_S)

    def _wanted(self, change: watchfiles.Change, path: str) -> bool:
        return Path(path).name == self.path.name

    def _run(self) -> None:
        try:
            for _changes in watchfiles.watch(
                self.path.parent, watch_filter=self._wanted, recursive=False,
                debounce=max(_MAX_BATCH_MS, self.debounce_ms), step=self.debounce_ms,
                stop_event=self._stop, raise_interrupt=False,
                rust_timeout=0,  # no periodic wake-up: stop_event is checked every step
            ):
                self._notify()
        except (OSError, RuntimeError) as exc:  # the folder went away; a notify error
            log.warning("stopped watching %s for changes: %s", self.path, exc)

    def _notify(self) -> None:
        try:
            self.on_change()
        except Exception:  # the callback is not ours: report it and keep watching
            log.exception("config change handler failed for %s", self.path)
