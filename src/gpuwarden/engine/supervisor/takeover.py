"""At start, before anything is launched: adopt the llama-servers an earlier gpuwarden left
running that the config would launch the same way now, stop the others (and say so), and,
once the first sample is in, load again the models whose servers were stopped for other
settings."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from gpuwarden.engine.events import EventBus, ModelRefused
from gpuwarden.engine.events.servers import LeftoverServerStopped
from gpuwarden.engine.lifecycle.backend import (
    ActivityCallback,
    ExitCallback,
    Launch,
    ReadyCallback,
)
from gpuwarden.engine.lifecycle.core import Attach
from gpuwarden.engine.lifecycle.manager import LifecycleManager
from gpuwarden.engine.supervisor.launch import gpu_layers_of
from gpuwarden.engine.supervisor.leftovers import Stop, plan_takeover
from gpuwarden.engine.supervisor.llama_server import LlamaServerBackend
from gpuwarden.engine.supervisor.registry import ServerRecord

log = logging.getLogger(__name__)

__all__ = ["load_again", "take_over"]


def take_over(backend: LlamaServerBackend, manager: LifecycleManager,
              bus: EventBus) -> list[str]:
    """Adopt or stop every server found running (see :mod:`leftovers`); returns on their
    end. Returns the models stopped for other settings, to be loaded again."""
    plan = plan_takeover(backend.leftovers(), manager.config, backend.kind,
                         backend.launch_changes, backend.answers)
    for record in plan.adopt:
        if not manager.adopt(record.model, gpu_layers_of(record.cmdline),
                             _attach(backend, record), gpu=record.gpu):
            plan.stop.append(Stop(record, "duplicate"))
    killed = [s for s in plan.stop if s.reason == "not_answering"]  # a hung one: no grace
    stopped = [s for s in plan.stop if s.reason != "not_answering"]
    stuck = backend.stop_leftovers([s.record for s in killed], grace_s=0) + \
        backend.stop_leftovers([s.record for s in stopped])
    for stop in (*killed, *stopped):
        record = stop.record
        if record in stuck:
            log.warning("the server of %s (pid %d) left running by an earlier gpuwarden "
                        "would not stop", record.model, record.pid)
            continue
        bus.publish(LeftoverServerStopped(model=record.model, pid=record.pid,
                                          reason=stop.reason, detail=stop.detail))
    return [s.record.model for s in stopped if s.reason == "changed"]


def load_again(manager: LifecycleManager, bus: EventBus, names: Iterable[str]) -> None:
    """Load models whose old servers were stopped for other settings, with the new ones
    (a load that is refused now -- it no longer fits -- is said, as for autostart)."""
    for name in names:
        result = manager.load(name, "restart")
        if not result.ok:
            bus.publish(ModelRefused(model=name, message=result.message))


def _attach(backend: LlamaServerBackend, record: ServerRecord) -> Attach:
    def attach(launch: Launch, on_ready: ReadyCallback, on_exit: ExitCallback,
               on_activity: ActivityCallback) -> None:
        backend.adopt(record, launch, on_ready, on_exit, on_activity)
    return attach
