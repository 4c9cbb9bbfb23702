"""`gpuwarden doctor`: one report of what this machine can do and what gpuwarden needs.

Capabilities (OS, driver, GPUs, torch, CPU, RAM), the dtype policy, llama-server, the
config's problems, the files gpuwarden writes, and the safety limits in force per GPU and
for the host with where each came from (the card, the config, the built-in table).
Printed as text (or ``--json``) and the text saved to the data folder as
``doctor-YYYYmmdd-HHMMSS.txt`` (or ``--save PATH``), whose path is printed last. Never
imports Qt.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from gpuwarden import __version__
from gpuwarden.cli import simulate_arg
from gpuwarden.engine import paths
from gpuwarden.engine.atomic import atomic_write_text
from gpuwarden.engine.journal import default_journal_path
from gpuwarden.engine.runtime import (
    SimulateSpec,
    TelemetryOptions,
    take_snapshot,
)
from gpuwarden.engine.safety.capabilities import Capabilities, inspect_capabilities
from gpuwarden.engine.safety.dtype import DTYPES, select_safe_dtype
from gpuwarden.engine.safety.limits import (
    GpuLimits,
    HostLimits,
    Limit,
    SafetyConfig,
    gpu_limits,
    host_limits,
)
from gpuwarden.engine.supervisor.locate import LlamaServerNotFound, find_llama_server
from gpuwarden.engine.telemetry.scenario import ScenarioError
from gpuwarden.engine.telemetry.snapshot import Snapshot
from gpuwarden.startup import ConfigFileMissing, read_config

__all__ = ["build_parser", "collect", "collect_limits", "limits_section", "main",
           "render_text"]

EXIT_OK = 0
EXIT_SAVE_FAILED = 1
EXIT_USAGE = 2
_GIB = 1024.0**3
SETUP_HINT = "gpuwarden setup llama-server"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gpuwarden doctor",
        description="Check this machine: GPUs, driver, torch, dtype policy, llama-server, "
                    "config and files. The text report is saved to the data folder.")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("--config", type=Path, metavar="FILE",
                   help="the config to check (default: ~/.config/gpuwarden/config.toml)")
    p.add_argument("--save", type=Path, metavar="PATH",
                   help="save the text report here (default: the data folder, "
                        "doctor-YYYYmmdd-HHMMSS.txt)")
    p.add_argument("--simulate", nargs="?", const=SimulateSpec(), type=simulate_arg,
                   metavar="N|SCENARIO",
                   help="read the limits of simulated GPU(s) instead of NVML's: a count "
                        "(1-8, default 1) or a scenario file")
    return p


# -- limits --------------------------------------------------------------------------------

# (JSON key, label, unit) of each limit, in the order they are printed.
_GPU_LIMITS: tuple[tuple[str, str, str], ...] = (
    ("temp_warn_c", "temperature warn", "C"),
    ("temp_hard_c", "temperature hard", "C"),
    ("power_warn_w", "power warn", "W"),
    ("power_hard_w", "power hard", "W"),
    ("vram_pct", "VRAM", "%"),
)
_HOST_LIMITS: tuple[tuple[str, str, str], ...] = (
    ("cpu_temp_warn_c", "CPU temperature warn", "C"),
    ("cpu_temp_hard_c", "CPU temperature hard", "C"),
    ("cpu_pct", "CPU use", "%"),
    ("ram_pct", "RAM", "%"),
)


def _limit(limit: Limit) -> dict[str, Any]:
    return {"value": round(limit.value, 3), "source": limit.source, "note": limit.note or None}


def _gpu_dict(limits: GpuLimits, name: str) -> dict[str, Any]:
    out: dict[str, Any] = {"gpu": limits.gpu, "name": name}
    out.update((key, _limit(getattr(limits, key))) for key, _, _ in _GPU_LIMITS)
    return out


def _host_dict(limits: HostLimits) -> dict[str, Any]:
    return {key: _limit(getattr(limits, key)) for key, _, _ in _HOST_LIMITS}


def collect_limits(cfg: SafetyConfig, snap: Snapshot | None,
                   note: str | None = None) -> dict[str, Any]:
    """The limits in force, as plain data: each GPU in ``snap`` (one that is lost is left
    out) and the host, every limit with its value, source ("card", "config", "default")
    and how it was derived; with no GPU, ``gpu_note`` says so and ``gpu_reason`` why
    (``note``: why ``snap`` is None)."""
    gpus = [] if snap is None else [
        _gpu_dict(gpu_limits(g, cfg), g.name) for g in snap.gpus if g.available]
    gpu_note = None if gpus else "no GPU found: only the host's limits apply"
    return {
        "gpu_source": None if snap is None else snap.gpu_source,
        "gpus": gpus,
        "gpu_note": gpu_note,
        "gpu_reason": None if gpus else (note or (None if snap is None else snap.gpu_note)),
        "host": _host_dict(host_limits(cfg)),
        "cooldown_margin_c": cfg.cooldown_margin_c,
        "cooldown_timeout_s": cfg.cooldown_timeout_s,
    }


def _limit_line(label: str, unit: str, limit: Mapping[str, Any]) -> str:
    value = f"{limit['value']:g}"
    amount = f"{value} %" if unit == "%" else f"{value} {unit}"
    source, note = str(limit["source"]), limit["note"]
    origin = source if not note else note if note.startswith(source) else f"{source}: {note}"
    return f"  {label + ':':<22}{amount:<10} ({origin})"


def limits_section(limits: Mapping[str, Any] | None) -> list[str]:
    """Lines of the "Limits" section (no heading is printed when there are none): each
    GPU's limits, then the host's, each with where it came from."""
    if not limits:
        return []
    lines: list[str] = []
    for g in limits["gpus"]:
        lines.append(f"GPU {g['gpu']} ({g['name']})")
        lines += [_limit_line(label, unit, g[key]) for key, label, unit in _GPU_LIMITS]
    if limits["gpu_note"]:
        lines.append(str(limits["gpu_note"]))
        if limits["gpu_reason"]:
            lines.append(f"  {limits['gpu_reason']}")
    lines.append("host")
    lines += [_limit_line(label, unit, limits["host"][key])
              for key, label, unit in _HOST_LIMITS]
    lines.append(f"cooldown: {limits['cooldown_margin_c']:g} C under warn before loads go "
                 f"on; a load waits up to {limits['cooldown_timeout_s']:g} s")
    return lines


# -- gathering ---------------------------------------------------------------------------


def _writable(path: Path, is_dir: bool) -> dict[str, Any]:
    """Whether gpuwarden can write ``path`` (a folder, or a file in it), tested by really
    creating a file where the folder exists; a missing folder is judged by the nearest
    existing parent (it will be created)."""
    folder = path if is_dir else path.parent
    if not is_dir and path.exists():
        ok = path.is_file() and os.access(path, os.W_OK)
        return {"path": str(path), "exists": True, "writable": ok,
                "note": None if ok else "exists but cannot be written"}
    if folder.is_dir():
        try:
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".gpuwarden-doctor-"):
                pass
        except OSError as exc:
            return {"path": str(path), "exists": path.exists(), "writable": False,
                    "note": f"cannot write in {folder}: {exc.strerror or exc}"}
        note = None if path.exists() else "not created yet; it will be"
        return {"path": str(path), "exists": path.exists(), "writable": True, "note": note}
    parent = folder
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        return {"path": str(path), "exists": False, "writable": False,
                "note": f"{parent} is a file, not a folder"}
    ok = os.access(parent, os.W_OK | os.X_OK)
    note = (f"not created yet; {parent} is writable, so it will be" if ok
            else f"cannot be created: {parent} is not writable")
    return {"path": str(path), "exists": False, "writable": ok, "note": note}


def _llama_server(configured: Path | None) -> dict[str, Any]:
    try:
        found = find_llama_server(configured)
    except LlamaServerNotFound as exc:
        return {"found": False, "path": None, "message": str(exc), "hint": SETUP_HINT}
    return {"found": True, "path": str(found), "message": None, "hint": None}


def _snapshot(simulate: SimulateSpec | None) -> tuple[Snapshot | None, str | None]:
    """One reading of the GPUs (for their limits), or None and why. Raises ScenarioError
    for a bad scenario file given with --simulate."""
    try:
        return take_snapshot(TelemetryOptions(simulate=simulate)), None
    except ScenarioError:
        raise
    except (OSError, RuntimeError, ValueError) as exc:  # a report never dies of a GPU
        return None, f"the GPUs could not be read: {type(exc).__name__}: {exc}"


def collect(config_path: Path | None, caps: Capabilities,
            simulate: SimulateSpec | None = None) -> dict[str, Any]:
    """Everything the report says, as plain data (the ``--json`` output). Raises
    :class:`ConfigFileMissing` for an explicit config path that does not exist, and
    ScenarioError for a bad ``--simulate`` scenario file."""
    config, notes, watched = read_config(config_path)
    snap, snap_note = _snapshot(simulate)
    policy = [select_safe_dtype(d, caps).to_dict() for d in DTYPES]
    return {
        "version": __version__,
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "capabilities": caps.to_dict(),
        "dtype_policy": policy,
        "llama_server": _llama_server(config.llama_server),
        "config": {"path": None if watched is None else str(watched),
                   "exists": watched is not None and watched.is_file(),
                   "models": len(config.models), "notes": notes},
        "files": {"data_dir": _writable(paths.data_dir(), is_dir=True),
                  "journal": _writable(default_journal_path(), is_dir=False)},
        "limits": collect_limits(config.safety, snap, snap_note),
    }


# -- rendering -----------------------------------------------------------------------------


def _na(value: object) -> str:
    return "n/a" if value is None else str(value)


def _gib(n: int | None) -> str:
    return "n/a" if n is None else f"{n / _GIB:.1f} GiB"


def _yes(value: bool | None) -> str:
    return "n/a" if value is None else ("yes" if value else "no")


def _system_lines(c: dict[str, Any]) -> list[str]:
    wsl = " (WSL2)" if c["wsl2"] else ""
    cores = c["cpu_cores"]
    threads = c["cpu_threads"]
    count = f"{_na(cores)} cores, {_na(threads)} threads"
    return [
        "System",
        f"  OS:      {c['os_description']}{wsl}",
        f"  CPU:     {_na(c['cpu_model'])} ({count})",
        f"  RAM:     {_gib(c['ram_total_bytes'])}",
        f"  Python:  {c['python_version']}",
    ]


def _gpu_lines(c: dict[str, Any]) -> list[str]:
    lines = [
        "NVIDIA",
        f"  driver:  {_na(c['driver_version'])} (supports CUDA {_na(c['cuda_driver_version'])})",
    ]
    for g in c["gpus"]:
        lines.append(f"  GPU {g['index']}:   {_na(g['name'])}: compute capability "
                     f"{_na(g['compute_capability'])}, {_gib(g['total_vram_bytes'])}, "
                     f"bfloat16 {_yes(g['bf16'])}")
    if c["gpu_source"] == "torch":
        lines.append("  (GPUs as torch sees them: NVML could not be read)")
    if c["gpu_note"]:
        lines.append(f"  {c['gpu_note']}")
    return lines


def _torch_lines(c: dict[str, Any]) -> list[str]:
    if c["torch_version"] is None:
        return ["PyTorch", f"  {_na(c['torch_note'])}"]
    build = c["torch_cuda_version"]
    lines = [
        "PyTorch",
        f"  torch:   {c['torch_version']} "
        f"({'CUDA ' + build if build else 'CPU-only build'})",
        f"  CUDA available: {_yes(c['torch_cuda_available'])}; "
        f"bfloat16: {_yes(c['torch_bf16_supported'])}; Apple MPS: {_yes(c['mps_available'])}",
    ]
    if c["torch_note"]:
        lines.append(f"  {c['torch_note']}")
    return lines


def _file_line(label: str, f: dict[str, Any]) -> str:
    state = "writable" if f["writable"] else "NOT writable"
    note = f" ({f['note']})" if f["note"] else ""
    return f"  {label}{f['path']}: {state}{note}"


def render_text(report: dict[str, Any]) -> str:
    """The report a person reads (and the file saved)."""
    c = report["capabilities"]
    lines = [f"gpuwarden doctor: gpuwarden {report['version']}, {report['generated_at']}", ""]
    lines += [*_system_lines(c), "", *_gpu_lines(c), "", *_torch_lines(c), ""]
    lines.append("dtype policy (what a PyTorch model's dtype becomes here)")
    for d in report["dtype_policy"]:
        lines.append(f"  {d['requested']:<8} -> {d['dtype']:<8} {d['reason']}")
    lines.append("")
    ls = report["llama_server"]
    lines.append("llama-server")
    if ls["found"]:
        lines.append(f"  found:   {ls['path']}")
    else:
        lines += ["  not found.", f"  {ls['message']}", f"  To get it, run: {ls['hint']}"]
    lines.append("")
    cfg = report["config"]
    lines.append("Config")
    where = cfg["path"] or "n/a"
    lines.append(f"  file:    {where}" + ("" if cfg["exists"] else " (does not exist)"))
    lines.append(f"  models:  {cfg['models']}")
    if cfg["notes"]:
        lines += [f"  {note}" for note in cfg["notes"]]
    else:
        lines.append("  no problems")
    lines.append("")
    files = report["files"]
    lines += ["Files", _file_line("data folder: ", files["data_dir"]),
              _file_line("journal:     ", files["journal"])]
    limits = limits_section(report["limits"])
    if limits:
        lines += ["", "Limits (what the engine keeps, and where each came from)",
                  *(f"  {line}" for line in limits)]
    return "\n".join(lines) + "\n"


# -- saving ----------------------------------------------------------------------------------


def default_report_path(now: float | None = None) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    path = paths.data_dir() / f"doctor-{stamp}.txt"
    n = 2
    while path.exists():  # two runs in one second keep both reports
        path = paths.data_dir() / f"doctor-{stamp}-{n}.txt"
        n += 1
    return path


def main(argv: list[str], *,
         inspect: Callable[[], Capabilities] = inspect_capabilities) -> int:
    """`gpuwarden doctor [--json] [--config FILE] [--save PATH] [--simulate [N]]`. 0:
    report printed (also when the machine has problems: they are the report); 2: the
    --config file is missing, or a --simulate scenario file is bad; 1: an explicit --save
    PATH could not be written."""
    args = build_parser().parse_args(argv)
    try:
        report = collect(args.config, inspect(), args.simulate)
    except (ConfigFileMissing, ScenarioError) as exc:
        print(f"gpuwarden doctor: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    text = render_text(report)
    target: Path = args.save if args.save is not None else default_report_path()
    saved_error: str | None = None
    try:
        atomic_write_text(target, text)
    except OSError as exc:
        saved_error = f"could not save the report to {target}: {exc.strerror or exc}"
    report["report_file"] = None if saved_error else str(target)

    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
        # stdout stays one JSON document; the path is in it and on stderr
        print(saved_error or f"report saved to {target}", file=sys.stderr)
    else:
        print(text, end="")
        print()
        if saved_error:
            print(saved_error, file=sys.stderr)
        else:
            print(f"report saved to {target}")
    if saved_error and args.save is not None:
        return EXIT_SAVE_FAILED
    return EXIT_OK
