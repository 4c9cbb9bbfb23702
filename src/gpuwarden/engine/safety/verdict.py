"""Whether the machine is safe to run on, read from every sample: one verdict per GPU and
one for the host.

Kinds, mildest first (the worst one found applies):

* ``proceed``: within every known limit.
* ``reduce_intensity``: power at or over its warn level, or VRAM / CPU / RAM percent at
  or over its limit. ``throttle`` says how hard to back off: 0 at the warn level (the
  percent limit), 1 at the hard level (100 %).
* ``wait_cooldown``: the temperature reached its warn level: no new loads there until it
  is back under warn minus ``cooldown_margin_c`` (it holds while the temperature lies
  between the two).
* ``abort``: a temperature or the GPU's power at or over its hard level: every model on
  that GPU (every model, for the host) must be stopped now. A temperature abort holds
  until the temperature is under warn minus the margin; a power abort until the power is
  under its warn level.

A reading that is n/a (None, NaN) is skipped and named in ``unknown``; the other limits
are still checked. Judging is pure: the previous verdict carries the hysteresis.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from gpuwarden.engine.events import SafetyVerdictChanged
from gpuwarden.engine.safety.limits import (
    GpuLimits,
    HostLimits,
    Limit,
    SafetyConfig,
    gpu_limits,
    host_limits,
)
from gpuwarden.engine.telemetry.snapshot import GpuSample, HostSample, Snapshot

VerdictKind = Literal["proceed", "reduce_intensity", "wait_cooldown", "abort"]
Scope = Literal["gpu", "host"]
# What a verdict was decided by (and the names ``unknown`` lists).
Cause = Literal["temperature", "power", "vram", "cpu_temperature", "cpu", "ram"]

PERCENT_BAND = 5.0  # a reduce-intensity verdict for VRAM, CPU or RAM holds until this many
POWER_BAND = 0.05  # points under its limit (power: 5 % under its warn level)
SEVERITY: Mapping[VerdictKind, int] = {
    "proceed": 0, "reduce_intensity": 1, "wait_cooldown": 2, "abort": 3}


@dataclass(frozen=True, slots=True)
class Verdict:
    """What one GPU (``scope="gpu"``, ``gpu`` its index) or the host may do now.

    ``reason`` is one sentence for a person (the reading and the limit); ``reading`` and
    ``limit`` are the figures of the deciding ``cause`` (None for ``proceed``);
    ``throttle`` (0..1) is the strongest of the reduce-intensity conditions, 1 for an
    abort; ``cooling`` is True while a temperature hysteresis holds (the temperature
    reached warn and has not yet fallen under warn minus the margin); ``unknown`` names
    the readings that were n/a."""

    scope: Scope
    gpu: int | None
    kind: VerdictKind
    reason: str
    throttle: float = 0.0
    reading: float | None = None
    limit: float | None = None
    cause: Cause | None = None
    cooling: bool = False
    unknown: tuple[Cause, ...] = ()

    @property
    def key(self) -> str:
        """``"gpu0"`` or ``"host"``."""
        return "host" if self.gpu is None else f"gpu{self.gpu}"

    @property
    def allows_loads(self) -> bool:
        """Whether a new model may be loaded here (no cooldown, no abort)."""
        return SEVERITY[self.kind] < SEVERITY["wait_cooldown"]


@dataclass(frozen=True, slots=True)
class VerdictChange:
    """A verdict whose kind differs from the previous sample's (``"proceed"`` before the
    first sample)."""

    previous: VerdictKind
    verdict: Verdict

    def event(self) -> SafetyVerdictChanged:
        v = self.verdict
        return SafetyVerdictChanged(
            scope=v.scope, gpu=v.gpu, kind=v.kind, previous=self.previous, reason=v.reason,
            reading=v.reading, limit=v.limit, throttle=v.throttle)


@dataclass(frozen=True, slots=True)
class _Finding:
    kind: VerdictKind
    cause: Cause
    reason: str
    reading: float
    limit: float
    throttle: float = 0.0


def _value(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def _pct(used: float | None, total: float | None) -> float | None:
    used, total = _value(used), _value(total)
    if used is None or total is None or total <= 0:
        return None
    return 100.0 * used / total


def _ramp(reading: float, low: float, high: float) -> float:
    """0 at ``low``, 1 at ``high`` (and beyond); 1 when there is no room between them."""
    if high <= low:
        return 1.0
    return min(1.0, max(0.0, (reading - low) / (high - low)))


def _n(x: float) -> str:
    return f"{x:.0f}" if abs(x - round(x)) < 0.05 or abs(x) >= 100 else f"{x:.1f}"


def _temperature(
    who: str, cause: Cause, reading: float, warn: Limit, hard: Limit, margin: float,
    previous: Verdict | None,
) -> _Finding | None:
    floor = warn.value - margin
    held_abort = previous is not None and previous.kind == "abort" and previous.cause == cause
    held_cool = previous is not None and previous.cooling
    at = f"{who} at {_n(reading)} C"
    if reading >= hard.value:
        return _Finding("abort", cause, f"{at}, hard limit {_n(hard.value)} C ({hard.origin})",
                        reading, hard.value, 1.0)
    if held_abort and reading >= floor:
        return _Finding("abort", cause, f"{at}, still not under {_n(floor)} C after reaching "
                        f"its hard limit {_n(hard.value)} C ({hard.origin})",
                        reading, hard.value, 1.0)
    if reading >= warn.value:
        return _Finding("wait_cooldown", cause,
                        f"{at}, warn limit {_n(warn.value)} C ({warn.origin})",
                        reading, warn.value)
    if held_cool and reading >= floor:
        return _Finding("wait_cooldown", cause,
                        f"{at}, cooling down to under {_n(floor)} C "
                        f"(warn limit {_n(warn.value)} C ({warn.origin}) minus {_n(margin)} C)",
                        reading, warn.value)
    return None


def _power(
    who: str, reading: float, warn: Limit, hard: Limit, previous: Verdict | None
) -> _Finding | None:
    at = f"{who} at {_n(reading)} W"
    if reading >= hard.value:
        return _Finding("abort", "power", f"{at}, hard limit {_n(hard.value)} W ({hard.origin})",
                        reading, hard.value, 1.0)
    if previous is not None and previous.kind == "abort" and previous.cause == "power" \
            and reading >= warn.value:
        return _Finding("abort", "power", f"{at}, still not under its warn limit "
                        f"{_n(warn.value)} W after reaching its hard limit {_n(hard.value)} W "
                        f"({hard.origin})", reading, hard.value, 1.0)
    if reading >= warn.value or (_holding(previous, "power") and
                                 reading >= warn.value * (1 - POWER_BAND)):
        return _Finding("reduce_intensity", "power",
                        f"{at}, warn limit {_n(warn.value)} W ({warn.origin})",
                        reading, warn.value, _ramp(reading, warn.value, hard.value))
    return None


def _holding(previous: Verdict | None, cause: Cause) -> bool:
    """A reduce-intensity verdict for ``cause`` holds until the reading is a band under
    its limit, so a reading hovering at the limit does not flap."""
    return previous is not None and previous.kind == "reduce_intensity" and \
        previous.cause == cause


def _percent(who: str, what: str, cause: Cause, reading: float, limit: Limit,
             previous: Verdict | None) -> _Finding | None:
    if reading < limit.value and not (_holding(previous, cause) and
                                      reading >= limit.value - PERCENT_BAND):
        return None
    return _Finding("reduce_intensity", cause,
                    f"{who} {what} at {_n(reading)} %, limit {_n(limit.value)} % ({limit.origin})",
                    reading, limit.value, _ramp(reading, limit.value, 100.0))


def _verdict(
    scope: Scope, gpu: int | None, who: str, findings: list[_Finding], unknown: list[Cause],
    cooling: bool,
) -> Verdict:
    reduce = max((f.throttle for f in findings if f.kind == "reduce_intensity"), default=0.0)
    if not findings:
        gap = f" ({', '.join(unknown)} n/a)" if unknown else ""
        return Verdict(scope, gpu, "proceed", f"{who} is within its limits{gap}", 0.0,
                       unknown=tuple(unknown))
    # The worst kind; among equals the strongest throttle, then the first checked.
    worst = max(findings, key=lambda f: (SEVERITY[f.kind], f.throttle))
    throttle = 1.0 if worst.kind == "abort" else reduce
    return Verdict(scope, gpu, worst.kind, worst.reason, throttle, worst.reading, worst.limit,
                   worst.cause, cooling, tuple(unknown))


def judge_gpu(sample: GpuSample, limits: GpuLimits, previous: Verdict | None) -> Verdict:
    """The verdict of one GPU's sample against its limits; ``previous`` (this GPU's last
    verdict, or None) carries the hysteresis."""
    who = f"GPU {sample.index}"
    if not sample.available:
        return Verdict("gpu", sample.index, "proceed",
                       f"{who} is not answering; its limits cannot be checked",
                       unknown=("temperature", "power", "vram"))
    findings: list[_Finding] = []
    unknown: list[Cause] = []
    cooling = False
    temp = _value(sample.temperature_c)
    if temp is None:
        unknown.append("temperature")
    else:
        found = _temperature(who, "temperature", temp, limits.temp_warn_c, limits.temp_hard_c,
                             limits.cooldown_margin_c, previous)
        if found is not None:
            findings.append(found)
            cooling = True
    power = _value(sample.power_draw_w)
    if power is None:
        unknown.append("power")
    else:
        found = _power(who, power, limits.power_warn_w, limits.power_hard_w, previous)
        if found is not None:
            findings.append(found)
    vram = _pct(sample.memory_used_mib, sample.memory_total_mib)
    if vram is None:
        unknown.append("vram")
    else:
        found = _percent(who, "VRAM", "vram", vram, limits.vram_pct, previous)
        if found is not None:
            findings.append(found)
    return _verdict("gpu", sample.index, who, findings, unknown, cooling)


def judge_host(host: HostSample, limits: HostLimits, previous: Verdict | None) -> Verdict:
    """The host's verdict: CPU temperature (warn: wait for cooldown, hard: abort), CPU
    percent and RAM percent (reduce intensity)."""
    who = "host"
    findings: list[_Finding] = []
    unknown: list[Cause] = []
    cooling = False
    temp = _value(host.cpu_temp_c)
    if temp is None:
        unknown.append("cpu_temperature")
    else:
        found = _temperature("CPU", "cpu_temperature", temp, limits.cpu_temp_warn_c,
                             limits.cpu_temp_hard_c, limits.cooldown_margin_c, previous)
        if found is not None:
            findings.append(found)
            cooling = True
    cpu = _value(host.cpu_pct)
    if cpu is None:
        unknown.append("cpu")
    else:
        found = _percent("host", "CPU", "cpu", cpu, limits.cpu_pct, previous)
        if found is not None:
            findings.append(found)
    ram = _pct(host.ram_used_mib, host.ram_total_mib)
    if ram is None:
        unknown.append("ram")
    else:
        found = _percent("host", "RAM", "ram", ram, limits.ram_pct, previous)
        if found is not None:
            findings.append(found)
    return _verdict("host", None, who, findings, unknown, cooling)


class SafetyMonitor:
    """Keeps the last verdict of every GPU and of the host; :meth:`check` judges one
    snapshot and says which verdicts changed kind. Not thread-safe: call it from the one
    place that handles samples (the lifecycle manager, under its lock)."""

    def __init__(self) -> None:
        self._verdicts: dict[str, Verdict] = {}

    def check(self, snap: Snapshot, cfg: SafetyConfig) -> list[VerdictChange]:
        """Judge ``snap``; the verdicts whose kind changed since the last sample, GPUs in
        snapshot order, then the host. A GPU missing from the snapshot is forgotten."""
        changes: list[VerdictChange] = []
        now: dict[str, Verdict] = {}
        old = self._verdicts
        for sample in snap.gpus:
            key = f"gpu{sample.index}"
            verdict = judge_gpu(sample, gpu_limits(sample, cfg), old.get(key))
            now[key] = verdict
            _note(changes, old.get(key), verdict)
        host = judge_host(snap.host, host_limits(cfg), old.get("host"))
        now["host"] = host
        _note(changes, old.get("host"), host)
        self._verdicts = now
        return changes

    def verdicts(self) -> Mapping[str, Verdict]:
        """The last verdicts: ``"gpu0"``, ``"gpu1"``, ..., ``"host"``."""
        return dict(self._verdicts)

    def verdict(self, key: str) -> Verdict | None:
        return self._verdicts.get(key)

    def reset(self) -> None:
        """Forget every verdict (the hysteresis starts over)."""
        self._verdicts = {}


def _note(changes: list[VerdictChange], old: Verdict | None, new: Verdict) -> None:
    before: VerdictKind = "proceed" if old is None else old.kind
    if before != new.kind:
        changes.append(VerdictChange(before, new))
