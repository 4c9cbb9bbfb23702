"""The event base class, and the words and units every event's sentence is built from."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

# How serious an event is, for a person: colour and filters in the event log.
Severity = Literal["info", "warning", "error"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Something that happened: ``TYPE`` names it, ``SEVERITY`` says how serious it is."""

    TYPE: ClassVar[str] = "event"
    SEVERITY: ClassVar[Severity] = "info"
    ts: float = 0.0
    seq: int = 0

    @property
    def type(self) -> str:
        return self.TYPE

    @property
    def severity(self) -> Severity:
        """How serious it is for a person: the class's ``SEVERITY`` unless the event's own
        figures say otherwise."""
        return self.SEVERITY

    @property
    def model_name(self) -> str | None:
        """The model this event is about; None for an event about a GPU, the host or
        gpuwarden itself."""
        return None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ts": self.ts, "seq": self.seq, "type": self.TYPE}
        for f in dataclasses.fields(self):
            if f.name not in ("ts", "seq"):
                value = getattr(self, f.name)
                # JSON has no NaN or Infinity: such a reading is "not known".
                out[f.name] = None if isinstance(value, float) and not math.isfinite(value) \
                    else value
        return out

    def describe(self) -> str:
        """One sentence a person can read in the event log, with units."""
        return self.TYPE


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelEvent(Event):
    """An event about one model, named by ``model``."""

    model: str

    @property
    def model_name(self) -> str | None:
        return self.model


# -- words and units ----------------------------------------------------------------------


def size_text(mib: float) -> str:
    """``512 MiB`` below 1 GiB, ``6.3 GiB`` from there on."""
    return f"{mib / 1024:.1f} GiB" if abs(mib) >= 1024 else f"{mib:.0f} MiB"


def figure(value: float, limit: float | None = None) -> str:
    """A reading without needless decimals: a whole number, but one decimal below 10 and
    as many as it takes not to look equal to ``limit`` when it is not."""
    text = f"{value:.0f}" if abs(value) >= 10 or value == round(value) else f"{value:.1f}"
    if limit is None or value == limit:
        return text
    for digits in (0, 1, 2):
        if f"{value:.{digits}f}" != f"{limit:.{digits}f}":
            return text if digits == 0 else f"{value:.{digits}f}"
    return f"{value:g}"


def seconds_text(seconds: float) -> str:
    """``0.5 s``, ``30 s``, ``1 min``, ``2 min 30 s``."""
    if seconds < 60:
        return f"{figure(seconds)} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min" + (f" {rest} s" if rest else "")


def where_text(placement: str, gpu: int | None = None) -> str:
    """Where a model runs, from the ``placement`` events carry: ``gpu``, ``cpu``, ``auto``,
    a layer count, or ``partial (N layers on GPU)``."""
    card = "the GPU" if gpu is None else f"GPU {gpu}"
    if placement == "gpu":
        return f"on {card}"
    if placement == "cpu":
        return "on the CPU"
    if placement == "auto":
        return "where it fits"
    layers = "".join(c for c in placement if c.isdigit())
    if placement.isdigit() or (placement.startswith("partial") and layers):
        return f"with {layers} layers on {card} and the rest on the CPU"
    return f"on {placement}"


def gpu_or_host(gpu: int | None) -> str:
    """``GPU 0``, or ``the host`` for None."""
    return "the host" if gpu is None else f"GPU {gpu}"


def capital(text: str) -> str:
    """The first letter upper case (a sentence that starts with a reason)."""
    return text[:1].upper() + text[1:]
