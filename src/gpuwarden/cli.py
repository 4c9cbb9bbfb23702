"""Command line: `gpuwarden` (the window) and its sub-commands. Never imports Qt itself."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from gpuwarden import __version__, desktop_install
from gpuwarden.console import render_status
from gpuwarden.engine.runtime import (
    SimulateSpec,
    TelemetryOptions,
    parse_simulate,
    take_snapshot,
)
from gpuwarden.engine.telemetry.sampler import MAX_INTERVAL_S, MIN_INTERVAL_S, check_interval
from gpuwarden.engine.telemetry.scenario import ScenarioError

SUBCOMMANDS = ("status", "headless", "setup", "doctor", "estimate", "install-desktop", "ctl")
EXIT_USAGE = 2
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what the shell reports for `ls | head -1`


def simulate_arg(text: str) -> SimulateSpec:
    """argparse type of ``--simulate``: N GPUs or a scenario file."""
    try:
        return parse_simulate(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _path_arg(text: str) -> Path:
    """argparse type of a path: an empty one is refused (Path("") would be ".")."""
    if not text:
        raise argparse.ArgumentTypeError("the path is empty")
    return Path(text)


def _interval_arg(text: str) -> float:
    try:
        return check_interval(float(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


MAX_SECONDS = 10 * 365 * 86400.0  # ten years: longer is surely a typo
MAX_HISTORY_S = 86400.0  # a day of samples; memory grows with it


def _positive_seconds(text: str, limit: float = MAX_SECONDS) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got '{text}'") from None
    if not 0 < value <= limit:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(
            f"must be more than 0 and at most {limit:g} seconds, got {text}")
    return value


def _history_seconds(text: str) -> float:
    return _positive_seconds(text, MAX_HISTORY_S)


def _add_telemetry_options(p: argparse.ArgumentParser, top: bool) -> None:
    """Options both before and after a sub-command. Only the top parser sets defaults, so
    `gpuwarden --simulate status` and `gpuwarden status --simulate` mean the same."""
    if not top:
        p.argument_default = argparse.SUPPRESS
    p.add_argument(
        "--simulate", nargs="?", const=SimulateSpec(), type=simulate_arg, metavar="N|SCENARIO",
        help="use simulated GPU(s) instead of NVML: a count (1-8, default 1) or a scenario "
             "TOML file (see docs/scenario.md)")
    p.add_argument("--models-dir", action="append", type=_path_arg, metavar="DIR",
                   help="a folder whose free disk space to watch (repeatable); the data "
                        "folder is always watched")
    p.add_argument("--per-core", action="store_true", help="also read per-core CPU use")
    p.argument_default = None


def _add_config_option(p: argparse.ArgumentParser, top: bool) -> None:
    p.add_argument("--config", type=_path_arg, metavar="FILE",
                   default=None if top else argparse.SUPPRESS,
                   help="the models and limits (default: ~/.config/gpuwarden/config.toml)")


def _add_interval_option(p: argparse.ArgumentParser, top: bool) -> None:
    p.add_argument(
        "--interval", type=_interval_arg, metavar="SECONDS",
        default=None if top else argparse.SUPPRESS,
        help=f"sample interval, {MIN_INTERVAL_S} to {MAX_INTERVAL_S} s (default: the "
             "config's sample_interval_s, 1 s)")


def _add_quit_option(p: argparse.ArgumentParser, top: bool) -> None:
    p.add_argument("--leave-running", action="store_true",
                   default=False if top else argparse.SUPPRESS,
                   help="on exit, leave the llama-server processes running; the next "
                        "gpuwarden adopts them instead of starting new ones")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpuwarden",
        description="Live GPU and host graphs, and the models that run on them.",
    )
    parser.add_argument("--version", action="version", version=f"gpuwarden {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    _add_telemetry_options(parser, top=True)
    parser.set_defaults(models_dir=[])
    _add_interval_option(parser, top=True)
    parser.add_argument("--history", type=_history_seconds, default=None, metavar="SECONDS",
                        help="how much history to keep (default 3600 s; the window's "
                             "Settings can change the default)")
    parser.add_argument("--theme", choices=("auto", "dark", "light"), default="auto")
    _add_config_option(parser, top=True)
    _add_quit_option(parser, top=True)
    parser.add_argument("--minimized", action="store_true",
                        help="start hidden in the system tray (the window shows where the "
                             "desktop has no tray)")
    parser.add_argument("--quit-after", type=_positive_seconds, metavar="SECONDS",
                        help=argparse.SUPPRESS)
    parser.add_argument("--attach", metavar="URL",
                        help="open the window on a gpuwarden running elsewhere, through its "
                             "control API (e.g. http://127.0.0.1:8737 through an SSH tunnel)")
    parser.add_argument("--token-file", type=Path, metavar="FILE",
                        help="with --attach: a copy of that gpuwarden's api-token file "
                             "(else GPUWARDEN_TOKEN, else the window asks)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    status = sub.add_parser("status", help="print one snapshot of the GPU(s) and host")
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _add_telemetry_options(status, top=False)
    headless = sub.add_parser(
        "headless", help="run the engine (telemetry and model lifecycle) with no window")
    _add_config_option(headless, top=False)
    _add_interval_option(headless, top=False)
    headless.add_argument("--duration", type=_positive_seconds, metavar="SECONDS",
                          help="stop after this long (default: until Ctrl+C / SIGTERM)")
    headless.add_argument("--events", choices=("-",), metavar="-",
                          help="print every event as one JSON line to stdout")
    _add_quit_option(headless, top=False)
    _add_telemetry_options(headless, top=False)
    setup = sub.add_parser("setup", help="install a component gpuwarden can run: "
                                         "`setup llama-server` builds llama.cpp's server, "
                                         "`setup llama-cpp-python` builds and installs "
                                         "llama-cpp-python")
    setup.add_argument("component", choices=("llama-server", "llama-cpp-python"))
    setup.add_argument("options", nargs=argparse.REMAINDER,
                       help="--version V, --jobs N, --force (llama-server: --cuda)")
    doctor = sub.add_parser("doctor", help="what this machine can do, the limits in force, "
                                           "and what is wrong: a report for bug reports")
    doctor.add_argument("--json", action="store_true", help="print JSON instead of text")
    doctor.add_argument("--save", type=_path_arg, metavar="PATH",
                        help="where to save the text report (default: the data folder)")
    _add_config_option(doctor, top=False)
    _add_telemetry_options(doctor, top=False)
    estimate = sub.add_parser("estimate", add_help=False,
                              help="whether a GGUF model fits before it is loaded "
                                   "(gpuwarden estimate MODEL.gguf -h)")
    estimate.add_argument("options", nargs=argparse.REMAINDER)
    ctl = sub.add_parser("ctl", add_help=False, help="ask a running gpuwarden through its "
                         "control API: status, models, load/unload/offload/restart NAME, "
                         "events (gpuwarden ctl -h)")
    ctl.add_argument("options", nargs=argparse.REMAINDER)
    install = sub.add_parser("install-desktop", help="put gpuwarden in this user's "
                             "application menu (Linux), and with --autostart start it at login",
                             description=desktop_install.DESCRIPTION)
    desktop_install.add_arguments(install)
    return parser


def _normalise(argv: Sequence[str]) -> list[str]:
    """`gpuwarden --simulate status` means a bare --simulate, not a file named 'status'."""
    out = list(argv)
    for i, arg in enumerate(out[:-1]):
        if arg == "--simulate" and out[i + 1] in SUBCOMMANDS:
            out[i] = "--simulate=1"
    return out


def _options(args: argparse.Namespace) -> TelemetryOptions:
    return TelemetryOptions(
        simulate=args.simulate,
        interval_s=getattr(args, "interval", None) or 1.0,
        history_s=getattr(args, "history", None) or 3600.0,
        disk_paths=tuple(args.models_dir),
        per_core=args.per_core,
    )


def cmd_status(args: argparse.Namespace) -> int:
    snap = take_snapshot(_options(args))
    if args.json:
        print(json.dumps({"version": __version__, **snap.to_dict()}, indent=2))
    else:
        print(render_status(snap))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command. A reader that closes the pipe early (`gpuwarden status | head -1`)
    ends it quietly with status 141, as it does `ls`: no traceback."""
    try:
        code = _dispatch(argv)
        if sys.stdout is not None:  # None in a Windows GUI process
            sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's last flush
    except BrokenPipeError:
        # Python's recipe: stdout to devnull, so the final flush at exit cannot raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_BROKEN_PIPE
    return code


def _dispatch(argv: Sequence[str] | None) -> int:
    given = list(sys.argv[1:] if argv is None else argv)
    if given[:1] == ["estimate"]:  # its own options, -h included
        from gpuwarden.estimate_cmd import main as estimate

        return estimate(given[1:])
    if given[:1] == ["ctl"]:  # its own sub-commands and options, -h included
        from gpuwarden.ctl import main as ctl

        return ctl(given[1:])
    parser = build_parser()
    args = parser.parse_args(_normalise(given))
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command == "status":
            return cmd_status(args)
        if args.command == "setup" and args.component == "llama-cpp-python":
            from gpuwarden.llama_cpp_build import main as setup_llama_cpp_python

            return setup_llama_cpp_python(args.options)
        if args.command == "setup":
            from gpuwarden.llama_build import main as setup_llama_server

            return setup_llama_server(args.options)
        if args.command == "doctor":
            from gpuwarden.doctor import main as doctor

            simulated = args.simulate
            return doctor([*(["--json"] if args.json else []),
                           *(["--simulate", str(simulated.scenario or simulated.count)]
                             if simulated is not None else []),
                           *(["--save", str(args.save)] if args.save else []),
                           *(["--config", str(args.config)] if args.config else [])])
        if args.command == "ctl":
            from gpuwarden.ctl import main as ctl

            return ctl(args.options)
        if args.command == "estimate":
            from gpuwarden.estimate_cmd import main as estimate

            simulated = args.simulate
            given = ["--simulate", str(simulated.count)] if simulated is not None and \
                simulated.scenario is None else []
            return estimate([*args.options, *given])
        if args.command == "install-desktop":
            return desktop_install.run(args)
        if args.command == "headless":
            from gpuwarden.headless import cmd_headless

            return cmd_headless(args, _options(args))
        from gpuwarden.app.main import run_gui

        return run_gui(args, _options(args))
    except ScenarioError as exc:  # a bad scenario file: one clear line naming file and line
        print(f"gpuwarden: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


def gui_main() -> int:
    return main()
