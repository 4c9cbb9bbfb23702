"""The pre-flight estimate of a model file, run off the UI thread.

:class:`EstimateWorker` takes the latest :class:`EstimateRequest` (a burst of changes is
run once, after a short pause), prices it on a thread pool with the same engine function
as ``gpuwarden estimate`` (:func:`gpuwarden.engine.safety.estimate.estimate_file`) and
hands the :class:`EstimateOutcome` back on the UI thread through a queued signal. An
outcome for anything but the latest request is dropped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QObject, QRunnable, QThreadPool, QTimer, Signal, Slot

from gpuwarden.engine.safety.estimate import Estimate, FitToolLocator, estimate_file
from gpuwarden.engine.safety.gguf_plan import ModelRefused
from gpuwarden.engine.safety.preflight import GpuChoice, Requested

log = logging.getLogger(__name__)
DEBOUNCE_MS = 150


@dataclass(frozen=True)
class EstimateRequest:
    path: Path
    context_size: int
    gpu: GpuChoice
    requested: Requested
    free_mib_by_gpu: tuple[tuple[int, float | None], ...]  # (GPU, free MiB) at request time

    @property
    def inputs(self) -> tuple[object, ...]:
        """What the user chose (the free VRAM moves on every sample: not a reason to ask
        again)."""
        return self.path, self.context_size, self.gpu, self.requested


@dataclass(frozen=True)
class EstimateOutcome:
    """``estimate`` when the file could be priced; else ``refused`` (the file is no usable
    GGUF model: Save must wait) or ``error`` (it could not be priced this time)."""

    request: EstimateRequest
    estimate: Estimate | None = None
    refused: str | None = None
    error: str | None = None


def run_estimate(request: EstimateRequest, fit_tool: FitToolLocator | None) -> EstimateOutcome:
    """The outcome of one request (blocking: call it off the UI thread)."""
    try:
        estimate = estimate_file(request.path, request.context_size,
                                 dict(request.free_mib_by_gpu), gpu=request.gpu,
                                 requested=request.requested,
                                 source="auto" if fit_tool is not None else "metadata",
                                 fit_tool=fit_tool)
    except ModelRefused as exc:
        return EstimateOutcome(request, refused=str(exc))
    except (OSError, ValueError) as exc:
        return EstimateOutcome(request, error=str(exc))
    return EstimateOutcome(request, estimate=estimate)


class _Relay(QObject):
    """Lives on the UI thread; a job emits through it (a queued call) and holds it alive,
    so a job that ends after the dialog closed emits into nothing."""

    done = Signal(object)


class _Job(QRunnable):
    def __init__(self, request: EstimateRequest, fit_tool: FitToolLocator | None,
                 relay: _Relay) -> None:
        super().__init__()
        self.request, self.fit_tool, self.relay = request, fit_tool, relay

    def run(self) -> None:
        try:
            outcome = run_estimate(self.request, self.fit_tool)
        except Exception as exc:  # a bug in pricing must not leave "Estimating…" forever
            log.exception("estimate of %s failed", self.request.path)
            outcome = EstimateOutcome(self.request, error=f"{type(exc).__name__}: {exc}")
        self.relay.done.emit(outcome)


class EstimateWorker(QObject):
    """``request()`` the latest inputs; ``finished(outcome)`` for the latest only."""

    finished = Signal(object)  # EstimateOutcome

    def __init__(self, fit_tool: FitToolLocator | None = None,
                 pool: QThreadPool | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.fit_tool = fit_tool
        self.pool = pool if pool is not None else QThreadPool.globalInstance()
        self.latest: EstimateRequest | None = None
        self._relay = _Relay()  # no parent: the jobs keep it alive
        self._relay.done.connect(self._on_done)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(DEBOUNCE_MS)
        self._timer.timeout.connect(self._start)

    def request(self, request: EstimateRequest | None) -> None:
        """Price ``request`` after a short pause, unless it asks what the last one asked
        (None: nothing to price; a pending request is dropped)."""
        if _inputs(request) == _inputs(self.latest):
            return
        self.latest = request
        if request is None:
            self._timer.stop()
        else:
            self._timer.start()

    @Slot()
    def _start(self) -> None:
        if self.latest is not None:
            self.pool.start(_Job(self.latest, self.fit_tool, self._relay))

    @Slot(object)
    def _on_done(self, outcome: EstimateOutcome) -> None:
        if outcome.request == self.latest:  # else stale: the inputs changed meanwhile
            self.finished.emit(outcome)


def _inputs(request: EstimateRequest | None) -> tuple[object, ...] | None:
    return None if request is None else request.inputs
