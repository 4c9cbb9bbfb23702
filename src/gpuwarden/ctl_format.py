"""What `gpuwarden ctl` prints for a person, from the control API's JSON: the status as
`gpuwarden status` prints a snapshot (plus the safety verdicts), the models as a table,
one line per event with the sentence the event log shows."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from gpuwarden.console import render_status, table
from gpuwarden.engine.events.base import seconds_text
from gpuwarden.engine.telemetry.snapshot import fmt_mib
from gpuwarden.remote import decode

MODEL_COLUMNS = ("Model", "Backend", "State", "Device", "VRAM measured / est.", "Idle",
                 "Priority", "Eviction")


def status_text(status: Mapping[str, Any]) -> str:
    """``GET /api/v1/status`` as a person reads it."""
    snap = status.get("snapshot")
    lines = [render_status(decode.snapshot(snap)) if snap else "no sample yet", ""]
    for key, verdict in sorted(status.get("verdicts", {}).items()):
        lines.append(f"Safety  {key}: {verdict['kind']}"
                     + (f" — {verdict['reason']}" if verdict.get("reason") else ""))
    if status.get("automation_paused"):
        lines.append("Automation is paused: no idle unloads, pressure relief or restarts")
    if not status.get("ready", True):
        lines.append("The engine is not ready yet (starting, or no usable config)")
    return "\n".join(lines).rstrip()


def models_text(rows: list[dict[str, Any]]) -> str:
    """``GET /api/v1/models`` as a table; ``*``: set for this run, not the config's."""
    if not rows:
        return "no models configured (see docs/config.md)"
    lines = table([MODEL_COLUMNS, *(_model_row(r) for r in rows)])
    if any(r["priority_source"] == "user" or r["eviction_source"] == "user" for r in rows):
        lines.append("* set for this run (not the config's)")
    return "\n".join(lines)


def _model_row(r: Mapping[str, Any]) -> tuple[str, ...]:
    device = r["device"]
    if device == "partial" and r.get("gpu_layers") is not None:
        device = f"partial {r['gpu_layers']}/{r['layers']}"
    if device in ("gpu", "partial") or device.startswith("partial"):
        device += f" (GPU {r['gpu']})"
    state = r["state"]
    if r.get("waiting_for"):
        state += f": {r['waiting_for']}"
    elif r.get("serving"):
        state += ", serving"
    vram = f"{fmt_mib(r.get('vram_mib'))} / {fmt_mib(r['vram_est_mib'])}"
    if r.get("vram_mib") is None and not r["vram_est_mib"]:  # not loaded: nothing to say
        vram = "-"
    idle = "-" if r.get("idle_s") is None else seconds_text(float(r["idle_s"]))
    return (r["name"], r["backend"], state, device, vram, idle, _marked(r, "priority"),
            _marked(r, "eviction"))


def _marked(row: Mapping[str, Any], key: str) -> str:
    return f"{row[key]}*" if row[f"{key}_source"] == "user" else str(row[key])


def event_line(data: Mapping[str, Any]) -> str:
    """One event: local time, type, model (``-``: none), and its sentence."""
    stamp = time.strftime("%H:%M:%S", time.localtime(float(data.get("ts", 0.0))))
    return (f"{stamp}  {data.get('type', '?'):<24} {data.get('model') or '-':<16} "
            f"{describe(data)}").rstrip()


def describe(data: Mapping[str, Any]) -> str:
    """The event's own sentence (:meth:`Event.describe`), rebuilt from its JSON; an event
    this gpuwarden does not know (a newer server) as its fields."""
    try:
        return decode.event(data).describe()
    except (ValueError, KeyError, AttributeError):  # a type or fields it does not know
        return _fields(data)


def _fields(data: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in data.items() if k not in ("ts", "seq", "type"))
