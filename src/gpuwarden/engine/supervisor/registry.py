"""What gpuwarden started, so that after a restart it can adopt its servers, not kill them.

Stored in ``servers.json`` as ``{"version": 1, "servers": [{...}, ...]}`` with 0600
permissions (the records hold API keys). A file that cannot be read is moved aside (never
deleted) and reported in words; one bad entry is dropped and reported while the others
load. :func:`process_matches` tells whether a record's pid is still *that* process, and
:func:`find_marked` finds this gpuwarden's servers by the mark in their environment
(:mod:`marker`) when no record is left to say where they are.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from gpuwarden.engine import paths
from gpuwarden.engine.atomic import atomic_write_json
from gpuwarden.engine.clock import Clock, SystemClock
from gpuwarden.engine.events import Event, StorageError, StorageRecovered
from gpuwarden.engine.jsondoc import DocSpec, read_doc
from gpuwarden.engine.supervisor.marker import mark_of, owner_token

log = logging.getLogger(__name__)

__all__ = [
    "FORMAT_VERSION",
    "START_TIME_TOLERANCE_S",
    "ServerRecord",
    "ServerRegistry",
    "default_registry_path",
    "find_marked",
    "process_matches",
]

FORMAT_VERSION = 1
START_TIME_TOLERANCE_S = 5.0


@dataclass(frozen=True)
class ServerRecord:
    model: str
    pid: int
    port: int
    api_key: str
    executable: str  # absolute path of the binary
    cmdline: tuple[str, ...]  # full argv as launched
    started_ts: float  # unix seconds
    instance: int = 0
    gpu: int = 0  # the GPU it was started on (gpu = "auto" may have picked any)

    def __post_init__(self) -> None:
        problem = _check(self)
        if problem:
            raise ValueError(problem)


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check(r: ServerRecord) -> str:
    """Why this record is invalid, or ``""``."""
    if not isinstance(r.model, str) or not r.model:
        return f"model must be a non-empty name, not {r.model!r}"
    if not _is_int(r.pid) or r.pid <= 0:
        return f"pid must be a whole number > 0, not {r.pid!r}"
    if not _is_int(r.port) or not 0 < r.port < 65536:
        return f"port must be 1..65535, not {r.port!r}"
    if not isinstance(r.api_key, str):
        return "api_key must be text"
    if not isinstance(r.executable, str) or not os.path.isabs(r.executable):
        return f"executable must be an absolute path, not {r.executable!r}"
    if (not isinstance(r.cmdline, tuple) or not r.cmdline
            or not all(isinstance(a, str) for a in r.cmdline)):
        return "cmdline must be a non-empty list of arguments"
    ts = r.started_ts
    if isinstance(ts, bool) or not isinstance(ts, int | float) or not math.isfinite(ts):
        return f"started_ts must be unix seconds, not {ts!r}"
    if not _is_int(r.instance) or r.instance < 0:
        return f"instance must be a whole number >= 0, not {r.instance!r}"
    if not _is_int(r.gpu) or r.gpu < 0:
        return f"gpu must be a whole number >= 0, not {r.gpu!r}"
    return ""


_FIELDS = tuple(f.name for f in dataclasses.fields(ServerRecord))


def default_registry_path() -> Path:
    return paths.data_dir() / "servers.json"


_SPEC = DocSpec(FORMAT_VERSION, "servers", list,
                "servers started before this run are looked for by the mark in their "
                "environment instead")


class ServerRegistry:
    """The servers gpuwarden launched and has not yet seen stop, saved on every change.

    Saving never raises: a save that fails (a read-only or full disk) is one log line and
    one ``storage.error`` handed to ``publish`` per outage, and the first save that works
    again one ``storage.recovered``; the records stay in memory meanwhile."""

    def __init__(self, path: Path | None = None, clock: Clock | None = None, *,
                 publish: Callable[[Event], object] | None = None) -> None:
        self.path = Path(path) if path is not None else default_registry_path()
        self._clock: Clock = clock or SystemClock()
        self._records: dict[str, ServerRecord] = {}
        self._loaded = False
        self._publish = publish
        self._failing = False

    def load(self) -> list[str]:
        """Replace the records in memory with the file's. Returns problems; never raises."""
        self._records = {}
        self._loaded = True
        entries, problems = read_doc(self.path, _SPEC, self._clock)
        if entries is None:
            return problems
        for n, entry in enumerate(entries, start=1):
            record, why = _parse_entry(entry)
            if record is None:
                name = entry.get("model") if isinstance(entry, dict) else None
                what = f"model {name!r}" if isinstance(name, str) else f"entry {n}"
                problems.append(f"the server record for {what} in {self.path.name} was "
                                f"invalid ({why}) and was dropped; that server, if still "
                                "running, is looked for by its mark instead")
            else:
                self._records[record.model] = record
        return problems

    @property
    def owner(self) -> str:
        """This gpuwarden's mark in the environment of the servers it launches."""
        return owner_token(self.path)

    def records(self) -> dict[str, ServerRecord]:
        """A copy of the records, by model name."""
        return dict(self._records)

    def add(self, record: ServerRecord) -> None:
        """Record (or replace) the server of ``record.model`` and save (never raises: a
        failed save is reported, and the record stays in memory for a later save)."""
        self._ensure_loaded()
        self._records[record.model] = record
        self._save()

    def remove(self, model: str, pid: int | None = None) -> None:
        """Forget the server of ``model`` (no-op if unknown; with ``pid``, only if its
        record is that process) and save (never raises)."""
        self._ensure_loaded()
        record = self._records.get(model)
        if record is not None and pid in (None, record.pid):
            del self._records[model]
            self._save()

    def _ensure_loaded(self) -> None:
        """A change before any load must not overwrite the records already on disk."""
        if not self._loaded:
            for problem in self.load():
                log.warning("%s", problem)

    def _save(self) -> None:
        doc = {
            "version": FORMAT_VERSION,
            "servers": [_to_json(r) for _, r in sorted(self._records.items())],
        }
        # The atomic write keeps an existing file's mode, and mkstemp makes a new one 0600;
        # tighten a file someone loosened before writing keys into it.
        try:
            with contextlib.suppress(FileNotFoundError):
                os.chmod(self.path, 0o600)
            atomic_write_json(self.path, doc)
        except OSError as exc:
            self._save_failed(exc)
            return
        if self._failing:
            self._failing = False
            self._tell(StorageRecovered(path=str(self.path)))

    def _save_failed(self, exc: OSError) -> None:
        if self._failing:
            return  # one report per outage
        self._failing = True
        reason = exc.strerror or str(exc)
        log.warning("cannot save %s (%s); servers left running may not be adopted",
                    self.path, reason)
        self._tell(StorageError(path=str(self.path), message=f"{reason}; servers left "
                                "running may not be adopted by the next gpuwarden"))

    def _tell(self, event: Event) -> None:
        if self._publish is not None:
            self._publish(event)


def _to_json(r: ServerRecord) -> dict[str, object]:
    d = dataclasses.asdict(r)
    d["cmdline"] = list(r.cmdline)
    return d


def _parse_entry(entry: object) -> tuple[ServerRecord | None, str]:
    if not isinstance(entry, dict):
        return None, f"expected an object, got {type(entry).__name__}"
    known = {k: v for k, v in entry.items() if k in _FIELDS}  # unknown keys: newer versions
    if isinstance(known.get("cmdline"), list):
        known["cmdline"] = tuple(known["cmdline"])
    try:
        return ServerRecord(**known), ""
    except (TypeError, ValueError) as exc:
        return None, str(exc)


def process_matches(record: ServerRecord, owner: str | None = None,
                    tolerance_s: float = START_TIME_TOLERANCE_S) -> bool:
    """Whether ``record.pid`` is still the process gpuwarden started: alive, not a zombie,
    created within ``tolerance_s`` of ``started_ts`` (a reused pid fails this), and either
    carrying ``owner``'s mark for ``record.model`` in its environment (which survives a
    wrapper script's ``exec``) or, for a server launched without the mark, the same binary
    (symlinks resolved) and argv. Any doubt -- the process is gone, is not ours to inspect,
    or vanishes mid-check -- is ``False``."""
    try:
        proc = psutil.Process(record.pid)
        with proc.oneshot():
            if proc.status() == psutil.STATUS_ZOMBIE:
                return False
            if abs(proc.create_time() - record.started_ts) > tolerance_s:
                return False
            if owner is not None and _marked_as(proc, record.model, owner):
                return True
            if proc.cmdline() != list(record.cmdline):
                return False
            exe = proc.exe()
    except (psutil.Error, OSError):
        return False
    if not exe:
        return False
    return os.path.realpath(exe) == os.path.realpath(record.executable)


def _marked_as(proc: psutil.Process, model: str, owner: str) -> bool:
    try:
        mark = mark_of(proc.environ(), owner)
    except (psutil.Error, OSError):
        return False
    return mark is not None and mark[0] == model


def find_marked(owner: str) -> list[ServerRecord]:
    """The user's live processes that carry ``owner``'s mark, as records, oldest first. A
    marked process whose parent is marked too (the real server under a wrapper script that
    did not ``exec``) belongs to that parent and is not listed on its own."""
    me, uid = os.getpid(), os.getuid()
    marked: dict[int, tuple[psutil.Process, str, int]] = {}
    for proc in psutil.process_iter(["uids", "ppid", "status"]):
        uids = proc.info["uids"]
        if proc.pid == me or uids is None or uids.real != uid \
                or proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        try:
            mark = mark_of(proc.environ(), owner)
        except (psutil.Error, OSError):
            continue
        if mark is not None:
            marked[proc.pid] = (proc, *mark)
    records = [_record_of(proc, model, gpu) for proc, model, gpu in marked.values()
               if proc.info["ppid"] not in marked]
    return sorted((r for r in records if r is not None), key=lambda r: r.started_ts)


def _record_of(proc: psutil.Process, model: str, gpu: int) -> ServerRecord | None:
    """A record for a marked process, read from the process itself (None: it vanished,
    or its command line names no port to reach it on)."""
    try:
        with proc.oneshot():
            argv = tuple(proc.cmdline())
            exe, started = proc.exe(), proc.create_time()
    except (psutil.Error, OSError):
        return None
    port = _option(argv, "--port")
    try:
        return ServerRecord(model=model, pid=proc.pid, port=int(port or 0),
                            api_key=_option(argv, "--api-key") or "", executable=exe,
                            cmdline=argv, started_ts=started, gpu=gpu)
    except ValueError as exc:
        log.warning("pid %d carries gpuwarden's mark for %s but cannot be reached (%s)",
                    proc.pid, model, exc)
        return None


def _option(argv: tuple[str, ...], flag: str) -> str | None:
    """The value after ``flag`` in ``argv`` (None: absent)."""
    if flag in argv[:-1]:
        return argv[argv.index(flag) + 1]
    return None
