"""llama.cpp's own projection of a launch's memory, from ``llama-fit-params``.

The fit tool (tools/fit-params, built beside llama-server from the same sources) loads
the model file's metadata and tensor list without the weights (``no_alloc``), builds the
context it would get from the launch's arguments, and with ``--fit-print on`` prints the
buffers llama.cpp would allocate, in whole MiB (rounded down), one line per device and
one for the host::

    CUDA0 17904 384 898
    Host 58259 0 12

(name, model, context, compute). It takes the arguments llama-server takes, less the
server-only ones; :func:`project` runs it with exactly the launch's model, context size,
GPU layers, slots and the config's extra arguments (dropping, and logging, those the tool
does not know), parses the answer into a :class:`Projection`, and :func:`to_plan` turns
that into a :class:`~gpuwarden.engine.safety.memory.MemoryPlan` that prices any ``-ngl``.

Never raises: a missing tool, a timeout, a non-zero exit or an answer that does not parse
give None and a logged reason, and the caller falls back on the metadata estimate.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from gpuwarden.engine.safety.memory import MemoryPlan

log = logging.getLogger(__name__)

HOST = "Host"
CACHE_SIZE = 256
HELP_TIMEOUT_S = 10.0
# One line of --fit-print: a device name (or "Host"), then model, context, compute MiB.
_LINE = re.compile(r"^(?P<name>\S(?:.*\S)?)\s+(?P<model>\d+)\s+(?P<context>\d+)\s+"
                   r"(?P<compute>\d+)\s*$")
# An option in --help: "-c,    --ctx-size N" / "-fa,   --flash-attn [on|off|auto]".
_HELP_OPTION = re.compile(r"^\s*(-[-\w]+(?:\s*,\s*-[-\w]+)*)")
_NUMBER = re.compile(r"^-\d")


@dataclass(frozen=True, slots=True)
class Buffers:
    """What llama.cpp projects for one device (or the host), in whole MiB (rounded down)."""

    name: str
    model_mib: int
    context_mib: int  # KV cache (and recurrent state)
    compute_mib: int

    @property
    def total_mib(self) -> int:
        return self.model_mib + self.context_mib + self.compute_mib


@dataclass(frozen=True, slots=True)
class Projection:
    """The fit tool's answer for one launch: the GPU devices (none on a CPU build) and the
    host, with the arguments it was asked about."""

    devices: tuple[Buffers, ...]
    host: Buffers
    context_size: int
    gpu_layers: int
    argv: tuple[str, ...] = ()  # the tool's command line, for the log
    dropped_args: tuple[str, ...] = ()  # launch arguments the tool does not take

    @property
    def device_mib(self) -> int:
        """All GPU buffers together (0 on a CPU build)."""
        return sum(d.total_mib for d in self.devices)

    @property
    def model_mib(self) -> int:
        return self.host.model_mib + sum(d.model_mib for d in self.devices)

    @property
    def context_mib(self) -> int:
        return self.host.context_mib + sum(d.context_mib for d in self.devices)

    @property
    def compute_mib(self) -> int:
        return self.host.compute_mib + sum(d.compute_mib for d in self.devices)

    @property
    def total_mib(self) -> int:
        return self.device_mib + self.host.total_mib


class FitParseError(ValueError):
    """The fit tool's stdout is not the --fit-print table."""


def parse(text: str, *, context_size: int = 0, gpu_layers: int = 0) -> Projection:
    """The --fit-print table in ``text`` (the tool's stdout; other lines are ignored).
    FitParseError when there is no ``Host`` line, or a device line follows it."""
    rows = [m for m in map(_LINE.match, text.splitlines()) if m is not None]
    buffers = [Buffers(m["name"], int(m["model"]), int(m["context"]), int(m["compute"]))
               for m in rows]
    hosts = [i for i, b in enumerate(buffers) if b.name == HOST]
    if len(hosts) != 1 or hosts[0] != len(buffers) - 1:
        raise FitParseError(f"expected one '{HOST} <model> <context> <compute>' line last, "
                            f"got {text[-400:]!r}")
    return Projection(tuple(buffers[:-1]), buffers[-1], context_size, gpu_layers)


# A buffer line of llama-server's log: "load_tensors:   CPU_Mapped model buffer size =
# 0.52 MiB", "llama_kv_cache:        CPU KV buffer size = ...", "... compute buffer size".
_SERVER_BUFFER = re.compile(r"(?P<buffer>\S+)\s+(?P<kind>model|KV|RS|output|compute) buffer "
                            r"size\s*=\s*(?P<mib>\d+(?:\.\d+)?) MiB")


@dataclass(frozen=True, slots=True)
class Allocated:
    """What a running llama-server reported allocating (its log's "buffer size" lines),
    in MiB, summed over devices and the host: to check a projection against."""

    model_mib: float
    context_mib: float  # KV and recurrent-state buffers
    compute_mib: float
    output_mib: float  # logits/embeddings: not part of the fit tool's projection

    @property
    def total_mib(self) -> float:
        """What the projection covers (model, context, compute)."""
        return self.model_mib + self.context_mib + self.compute_mib


def allocated(log_text: str) -> Allocated | None:
    """The buffers in a llama-server log, or None when it reports none (yet)."""
    sums = {"model": 0.0, "context": 0.0, "compute": 0.0, "output": 0.0}
    found = False
    for match in _SERVER_BUFFER.finditer(log_text):
        kind = match["kind"]
        sums["context" if kind in ("KV", "RS") else kind] += float(match["mib"])
        found = True
    if not found:
        return None
    return Allocated(sums["model"], sums["context"], sums["compute"], sums["output"])


# -- running the tool ------------------------------------------------------------------

_lock = threading.Lock()
_cache: OrderedDict[tuple[object, ...], Projection] = OrderedDict()
_options: dict[tuple[str, int], frozenset[str] | None] = {}


def clear_cache() -> None:
    with _lock:
        _cache.clear()
        _options.clear()


def _stamp(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns)


def accepted_options(tool: Path, timeout_s: float = HELP_TIMEOUT_S) -> frozenset[str] | None:
    """The options the tool takes (from its --help), cached per binary; None when the
    help cannot be read (then every argument is passed through)."""
    try:
        key = (str(tool), tool.stat().st_mtime_ns)
    except OSError:
        return None
    with _lock:
        if key in _options:
            return _options[key]
    try:
        done = subprocess.run([str(tool), "--help"], capture_output=True, text=True,
                              timeout=timeout_s, check=False, env=_env())
    except (OSError, subprocess.SubprocessError) as exc:
        log.info("fit tool %s: cannot read --help: %s", tool, exc)
        return None
    found: set[str] = set()
    for line in (done.stdout + "\n" + done.stderr).splitlines():
        match = _HELP_OPTION.match(line)
        if match:
            found.update(o.strip() for o in match[1].split(","))
    options = frozenset(found) if "--ctx-size" in found else None
    with _lock:
        _options[key] = options
    return options


def filter_args(args: Sequence[str], accepted: frozenset[str] | None
                ) -> tuple[list[str], list[str]]:
    """(kept, dropped): ``args`` without the options the tool does not take, each with the
    values that follow it (tokens that are not options; negative numbers are values)."""
    if accepted is None:
        return list(args), []
    kept: list[str] = []
    dropped: list[str] = []
    into = kept
    for arg in args:
        if arg.startswith("-") and not _NUMBER.match(arg):
            into = kept if arg.split("=", 1)[0] in accepted else dropped
        into.append(arg)
    return kept, dropped


def _env() -> dict[str, str]:
    """The environment without LLAMA_ARG_* (the launch's arguments are given explicitly)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("LLAMA_ARG_")}


_PARALLEL = ("-np", "--parallel")
_UNIFIED = ("-kvu", "--kv-unified")
_NOT_UNIFIED = ("-no-kvu", "--no-kv-unified")


def _slots(args: Sequence[str]) -> tuple[int, bool]:
    """(slots, unified KV cache) of the server these arguments launch: llama-server's own
    default is 4 slots sharing one unified cache ("auto", also -np -1); an explicit -np N
    gives N caches unless --kv-unified."""
    slots: int | None = None
    unified: bool | None = None
    for i, arg in enumerate(args):
        name, _, value = arg.partition("=")
        if name in _PARALLEL:
            text = value or (args[i + 1] if i + 1 < len(args) else "")
            slots = int(text) if text.lstrip("-").isdigit() else None
        elif name in _UNIFIED:
            unified = True
        elif name in _NOT_UNIFIED:
            unified = False
    if slots is None or slots < 0:  # auto
        return 4, True if unified is None else unified
    return slots, bool(unified)


def _without(args: Sequence[str], names: Sequence[str]) -> list[str]:
    """``args`` less the options ``names`` and their values."""
    out: list[str] = []
    skip = False
    for arg in args:
        if skip and not (arg.startswith("-") and not _NUMBER.match(arg)):
            continue
        skip = arg.split("=", 1)[0] in names
        if not skip:
            out.append(arg)
    return out


def fit_argv(tool: Path, model: Path, *, context_size: int, gpu_layers: int, parallel: int,
             extra_args: Sequence[str]) -> tuple[list[str], list[str]]:
    """(the tool's command line, the launch arguments left out of it).

    Slots: the tool takes ``--parallel`` but not ``--kv-unified``; a unified cache (the
    server's default: 4 slots, one cache) is priced as one sequence, which is what it
    allocates (one stream of the whole context, the same compute graph); separate caches
    (an explicit ``-np N`` in the arguments, or ``parallel`` > 1 without one) as N
    sequences. Every other argument the tool knows goes through as it is.
    """
    kept, dropped = filter_args(_without(extra_args, _PARALLEL), accepted_options(tool))
    if any(a.split("=", 1)[0] in _PARALLEL for a in extra_args):
        slots, unified = _slots(extra_args)
    else:
        slots, unified = max(1, parallel), any(a in _UNIFIED for a in extra_args)
    sequences = 1 if unified else slots
    argv = [str(tool), "--model", str(model), "--n-gpu-layers", str(gpu_layers),
            "--ctx-size", str(context_size), "--parallel", str(sequences), *kept,
            "--fit-print", "on"]
    return argv, dropped


def project(tool: Path, model: Path, *, context_size: int, gpu_layers: int,
            parallel: int = 1, extra_args: Sequence[str] = (),
            timeout_s: float = 10.0) -> Projection | None:
    """llama.cpp's projection of launching ``model`` with these arguments (the same that
    llama-server gets: ``extra_args`` are the config's ``args``), or None with a logged
    reason. ``parallel``: the server's slots when each has its own KV cache; llama-server's
    default (no ``-np`` in the args: 4 slots, one unified cache) prices as 1, the default.
    Cached per (tool, model path, size and mtime, arguments)."""
    try:
        key = (_stamp(tool), _stamp(model), context_size, gpu_layers, parallel,
               tuple(extra_args))
    except OSError as exc:
        log.info("no llama.cpp projection: %s", exc)
        return None
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    projection = _run(tool, model, context_size=context_size, gpu_layers=gpu_layers,
                      parallel=parallel, extra_args=extra_args, timeout_s=timeout_s)
    if projection is not None:
        with _lock:
            _cache[key] = projection
            while len(_cache) > CACHE_SIZE:
                _cache.popitem(last=False)
    return projection


def _run(tool: Path, model: Path, *, context_size: int, gpu_layers: int, parallel: int,
         extra_args: Sequence[str], timeout_s: float) -> Projection | None:
    argv, dropped = fit_argv(tool, model, context_size=context_size, gpu_layers=gpu_layers,
                             parallel=parallel, extra_args=extra_args)
    if dropped:
        log.info("fit tool: not passing server-only arguments %s", " ".join(dropped))
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s,
                              check=False, env=_env())
    except subprocess.TimeoutExpired:
        log.warning("no llama.cpp projection for %s: %s took over %.0f s", model.name,
                    tool.name, timeout_s)
        return None
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("no llama.cpp projection for %s: %s", model.name, exc)
        return None
    if done.returncode != 0:
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
        log.warning("no llama.cpp projection for %s: %s exited %d: %s", model.name,
                    tool.name, done.returncode, tail)
        return None
    try:
        parsed = parse(done.stdout, context_size=context_size, gpu_layers=gpu_layers)
    except FitParseError as exc:
        log.warning("no llama.cpp projection for %s: %s", model.name, exc)
        return None
    return Projection(parsed.devices, parsed.host, context_size, gpu_layers,
                      tuple(argv), tuple(dropped))


# -- pricing any number of layers --------------------------------------------------------

def to_plan(projection: Projection, layers: int,
            layer_weights_share: Sequence[float] | None = None) -> MemoryPlan:
    """A :class:`MemoryPlan` (source "llama.cpp") from one projection, so any ``-ngl`` can
    be priced. The projection is exact at its own ``-ngl`` when that is a full offload
    (what gpuwarden asks for); otherwise the model buffer is split over the ``layers``
    repeating layers, evenly or by ``layer_weights_share`` (each
    layer's fraction of all the model's weights, in order, from the GGUF metadata; what
    they leave over is the non-repeating weights: token embeddings and output).

    Which of the non-repeating weights follow a full offload (output) and which stay on
    the host (token embeddings) is read off the projection where it shows it (a full
    offload on a GPU: what stays on the host is host-only); otherwise they are counted as
    output, which errs on the side of a larger GPU figure. KV: the context buffers over
    the layers, evenly. Compute: the devices' and the host's as projected.
    """
    layers = max(1, layers)
    total = float(projection.model_mib)
    gpu_model = float(sum(d.model_mib for d in projection.devices))
    host_model = float(projection.host.model_mib)
    n_gpu = max(0, min(projection.gpu_layers, layers)) if projection.devices else 0

    if layer_weights_share is not None and len(layer_weights_share) == layers and all(
            s >= 0 for s in layer_weights_share) and sum(layer_weights_share) > 0:
        shares = [float(s) for s in layer_weights_share]
        scale = 1.0 / sum(shares) if sum(shares) > 1.0 else 1.0
        weights = tuple(total * s * scale for s in shares)
    elif n_gpu == layers:
        weights = (gpu_model / layers,) * layers  # output counted within the layers
    else:
        weights = (total / layers,) * layers  # all on the host: nothing to tell apart
    rest = max(0.0, total - sum(weights))
    # A full offload leaves only the host-only weights on the host.
    host_only = min(rest, host_model) if n_gpu == layers else 0.0
    return MemoryPlan(
        source="llama.cpp",
        layer_weights_mib=weights,
        output_mib=rest - host_only,
        host_only_mib=host_only,
        kv_per_layer_mib=projection.context_mib / layers,
        compute_gpu_mib=float(sum(d.compute_mib for d in projection.devices)),
        compute_host_mib=float(projection.host.compute_mib),
        context_size=projection.context_size,
    )
