"""Crash policy: classify a death, decide the restart (backoff, downgrade, give up).

Pure functions: a death report and a state in, a decision out.
"""

from __future__ import annotations

import re
import signal as signals
from dataclasses import dataclass

from gpuwarden.engine.events import CrashKind
from gpuwarden.engine.lifecycle.config import Placement, RestartConfig
from gpuwarden.engine.lifecycle.state import ModelState

# Restarting does not help these: the user must fix the model file or the installation.
PERMANENT: frozenset[str] = frozenset({"load_error", "launch_failed"})

# What llama-server prints when the model file itself is bad.
_LOAD_ERROR = re.compile(
    r"failed to load model|error loading model|invalid magic|gguf_init_from_file"
    r"|failed to read|tensor .* data is not within the file bounds"
    r"|invalid argument|unknown argument|error while handling argument",
    re.IGNORECASE,
)

# What llama.cpp / CUDA print when the GPU runs out of memory.
_GPU_OOM = re.compile(
    r"out of memory|cudaMalloc failed|failed to allocate|CUDA error: out of memory"
    r"|ggml_backend_cuda_buffer_type_alloc_buffer|unable to allocate",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class DeathReport:
    """What a backend knows when its process ends."""

    model: str
    instance: int
    exit_code: int | None = None
    signal: int | None = None
    log_tail: tuple[str, ...] = ()
    expected: bool = False  # we asked it to stop
    kind_hint: CrashKind | None = None  # the supervisor already knows (hang, startup timeout)
    oom_evidence: bool | None = None  # kernel OOM-kill counter moved; None = unreadable
    during_startup: bool = False  # it never became ready


def classify(report: DeathReport) -> CrashKind | None:
    """None for a clean exit after our own stop; else what kind of crash it was."""
    if report.expected and report.kind_hint is None:
        return None
    if report.kind_hint is not None:
        return report.kind_hint
    killed = report.signal == signals.SIGKILL or report.exit_code == 137
    if killed and report.oom_evidence is not False:
        return "oom_killed"
    if any(_GPU_OOM.search(line) for line in report.log_tail):
        return "gpu_oom"
    if report.during_startup and any(_LOAD_ERROR.search(line) for line in report.log_tail):
        return "load_error"
    return "crash"


@dataclass(frozen=True)
class CrashDecision:
    restart_at: float | None  # None: no automatic restart
    attempt: int  # consecutive crashes, this one included
    placement: Placement  # for the next load
    exhausted: bool = False


def backoff_s(attempt: int, cfg: RestartConfig) -> float:
    """1 s, 2 s, 4 s ... capped (defaults: base 1 s, cap 60 s)."""
    return float(min(cfg.backoff_cap_s, cfg.backoff_base_s * 2 ** max(0, attempt - 1)))


def downgrade(placement: Placement, gpu_layers: int | None, total_layers: int) -> Placement:
    """After a GPU out-of-memory: full GPU -> half the layers -> ... -> CPU."""
    if placement == "cpu":
        return "cpu"
    current = total_layers if placement in ("gpu", "auto") else int(placement)
    if gpu_layers is not None:
        current = min(current, gpu_layers)
    fewer = current // 2
    return fewer if fewer >= 1 else "cpu"


def decide(state: ModelState, kind: CrashKind, now: float, cfg: RestartConfig) -> CrashDecision:
    healthy = state.ready_since is not None and now - state.ready_since >= cfg.healthy_reset_s
    attempt = 1 if healthy else state.consecutive_crashes + 1
    placement = state.placement
    if kind == "gpu_oom":
        placement = downgrade(placement, state.gpu_layers, state.config.layers)
    if state.user_unloaded or kind in PERMANENT:
        return CrashDecision(None, attempt, placement)
    pinned = state.eviction == "never"
    if attempt >= cfg.max_consecutive and not pinned:
        return CrashDecision(None, attempt, placement, exhausted=True)
    delay = backoff_s(attempt, cfg)
    return CrashDecision(now + delay, attempt, placement)
