"""`gpuwarden ctl`: a running gpuwarden steered through its control API (docs/api.md).

It finds the local one by itself: ``api.json`` in the data folder says where it listens,
``api-token`` beside it is the token. ``--url`` and ``--token-file`` (or the
``GPUWARDEN_TOKEN`` variable) name another, e.g. one on a GPU box through an SSH tunnel.
Exit status: 0 done, 1 refused or no such model, 2 usage, 3 cannot reach gpuwarden (none
running, its API off, a wrong token, no answer in time, gone)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from gpuwarden.api.token import read_token, token_path
from gpuwarden.api.where import WHERE_FILE, read_where
from gpuwarden.ctl_client import (
    EXIT_DONE,
    EXIT_REFUSED,
    EXIT_USAGE,
    START_HINT,
    Ask,
    Failed,
    Target,
    refusal,
)
from gpuwarden.ctl_events import print_events
from gpuwarden.ctl_format import models_text, status_text
from gpuwarden.engine.paths import data_dir
from gpuwarden.engine.supervisor.instance_lock import default_lock_path

if TYPE_CHECKING:
    import httpx

EXIT_TEXT = """exit status: 0 done, 1 refused or no such model, 2 usage, 3 cannot reach
gpuwarden (none running, its API off, a wrong token, no answer in time, gone)"""
ACTIONS = {"load": "load a model (the pre-flight and the safety limits decide, as in the "
                   "panel)",
           "unload": "unload a model", "offload": "move a model to the CPU",
           "restart": "restart a model's server"}


def _url_arg(text: str) -> str:
    if not text.startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError(f"expected http://HOST:PORT, got '{text}'")
    return text.rstrip("/")


def _seconds_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got '{text}'") from None
    if not 0 < value <= 3600:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most 3600, got {text}")
    return value


def _seq_arg(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected an event seq (0 or more), got '{text}'")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", type=_url_arg, help="the API's address (default: the local "
                        "gpuwarden's, from api.json in its data folder)")
    common.add_argument("--token-file", type=Path, metavar="FILE",
                        help="the API's token (default: $GPUWARDEN_TOKEN, else api-token in "
                             "the data folder)")
    common.add_argument("--timeout", type=_seconds_arg, default=10.0, metavar="SECONDS",
                        help="how long to wait for an answer (default 10)")
    common.add_argument("--json", action="store_true", help="print the API's JSON as it is")
    parser = argparse.ArgumentParser(
        prog="gpuwarden ctl", epilog=EXIT_TEXT,
        description="Ask a running gpuwarden (the window or headless) through its control API.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    sub.add_parser("status", parents=[common], help="GPUs, host and safety verdicts now")
    sub.add_parser("models", parents=[common], help="every model, as the panel shows it")
    for action, text in ACTIONS.items():
        one = sub.add_parser(action, parents=[common], help=text)
        one.add_argument("name", metavar="NAME")
        if action == "load":
            one.add_argument("--how", choices=("auto", "swap", "partial"), default="auto",
                             help="for a model that will not fit whole: auto (as the "
                                  "pre-flight allows), swap (unload what is in the way), "
                                  "partial (the layers that fit)")
    events = sub.add_parser("events", parents=[common], help="the kept events (--follow: "
                            "then every new one, until Ctrl+C)")
    events.add_argument("--since", type=_seq_arg, default=0, metavar="SEQ",
                        help="only the events after this seq (default 0: every kept one)")
    events.add_argument("-f", "--follow", action="store_true", help="keep printing new events")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse: -h (0) or a usage error (2), already printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    import httpx  # not before it is needed: `gpuwarden --help` stays fast

    try:
        target = find_target(args.url, args.token_file, data_dir())
        with httpx.Client(base_url=target.url, timeout=args.timeout,
                          headers={"Authorization": f"Bearer {target.token}"}) as client:
            return COMMANDS[args.command](Ask(client, target, args.timeout), args)
    except Failed as exc:
        print(f"gpuwarden ctl: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130


# -- finding it ----------------------------------------------------------------------------


def find_target(url: str | None, token_file: Path | None, folder: Path) -> Target:
    """Where to ask and with which token: given, or the local gpuwarden's in ``folder``."""
    url = url or _local_url(folder)
    token, token_from = _token(token_file, folder)
    return Target(url, token, token_from)


def _local_url(folder: Path) -> str:
    where = read_where(folder)
    if where is not None and _alive(where.pid):
        return where.url
    if where is not None:
        raise Failed(f"the gpuwarden that served {where.url} (pid {where.pid}) is no longer "
                     f"running: {START_HINT}")
    holder = _lock_holder(folder)
    if holder is not None:
        raise Failed(f"gpuwarden runs (pid {holder}) but serves no control API: its config "
                     "says [api] enabled = false, or its port was taken (see its log or event "
                     "log); set [api] enabled = true (or another port) and start it again")
    raise Failed(f"no gpuwarden is running here (no {folder / WHERE_FILE}): {START_HINT}, "
                 "or name one with --url")


def _lock_holder(folder: Path) -> int | None:
    """The pid in gpuwarden's lock file when that process lives (its lock is not taken:
    that would stop a gpuwarden starting at this moment)."""
    try:
        text = (folder / default_lock_path().name).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() and _alive(int(text)) else None


def _alive(pid: int) -> bool:
    if pid <= 0:  # 0 and below name process groups
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's: alive
        return True
    return True


def _token(token_file: Path | None, folder: Path) -> tuple[str, str]:
    if token_file is not None:
        return _read_token_file(token_file), str(token_file)
    given = os.environ.get("GPUWARDEN_TOKEN", "").strip()
    if given:
        return given, "GPUWARDEN_TOKEN"
    try:
        return read_token(folder), str(token_path(folder))
    except FileNotFoundError:
        raise Failed(f"no token at {token_path(folder)}: gpuwarden makes it when it first "
                     f"serves its API ({START_HINT}); for one on another machine, pass "
                     "--token-file with a copy of its token") from None
    except OSError as exc:
        raise Failed(str(exc)) from None


def _read_token_file(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError as exc:
        raise Failed(f"cannot read the token file {path}: {exc.strerror or exc}",
                     EXIT_USAGE) from None
    if not text or any(c.isspace() for c in text):
        raise Failed(f"{path} holds no token", EXIT_USAGE)
    return text


def answer(reply: httpx.Response, args: argparse.Namespace,
           text: Callable[[Any], str]) -> int:
    """Print a reply: the JSON as it is, or ``text`` of it; a refusal on stderr (its JSON
    on stdout with --json), exit status 1."""
    if reply.status_code == 200:
        print(reply.text.rstrip() if args.json else text(reply.json()))
        return EXIT_DONE
    if args.json:
        print(reply.text.rstrip())
    else:
        print(f"gpuwarden ctl: {refusal(reply)}", file=sys.stderr)
    return EXIT_REFUSED


def cmd_status(ask: Ask, args: argparse.Namespace) -> int:
    return answer(ask.send("GET", "/api/v1/status"), args, status_text)


def cmd_models(ask: Ask, args: argparse.Namespace) -> int:
    return answer(ask.send("GET", "/api/v1/models"), args, models_text)


def cmd_action(ask: Ask, args: argparse.Namespace) -> int:
    body = {"json": {"how": args.how}} if args.command == "load" else {}
    reply = ask.send("POST", f"/api/v1/models/{quote(args.name, safe='')}/{args.command}",
                     **body)
    return answer(reply, args, lambda result: str(result["message"]))


COMMANDS: dict[str, Callable[[Ask, argparse.Namespace], int]] = {
    "status": cmd_status, "models": cmd_models, "events": print_events,
    **dict.fromkeys(ACTIONS, cmd_action)}
