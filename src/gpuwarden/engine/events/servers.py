"""What gpuwarden does at start with the servers an earlier run left behind."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Literal

from gpuwarden.engine.events.base import ModelEvent, Severity

# Why a server left running was stopped instead of adopted.
LeftoverReason = Literal["removed", "changed", "duplicate", "not_answering"]

_WHY: Mapping[LeftoverReason, str] = {
    "removed": "the config no longer has a llama-server model of that name",
    "changed": "it ran with other settings ({detail}); it is loaded again with the "
               "config's",
    "duplicate": "another server already runs this model",
    "not_answering": "it did not answer its health check",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class LeftoverServerStopped(ModelEvent):
    """A server an earlier gpuwarden started and left running was stopped at start, not
    adopted: nothing gpuwarden does not manage is left holding memory."""

    TYPE: ClassVar[str] = "server.leftover_stopped"
    pid: int
    reason: LeftoverReason
    detail: str = ""  # for "changed": what differs, e.g. "--ctx-size 256 -> 512"

    @property
    def severity(self) -> Severity:
        return "warning" if self.reason in ("duplicate", "not_answering") else "info"

    def describe(self) -> str:
        why = _WHY[self.reason].format(detail=self.detail or "its command line")
        return (f"the server of {self.model} (pid {self.pid}) left running by an earlier "
                f"gpuwarden was stopped: {why}")
