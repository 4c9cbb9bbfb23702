"""The token an attached window sends: from ``--token-file``, else ``GPUWARDEN_TOKEN``,
else asked of the person (``ask``); never from the command line itself (it would show in
the process list)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

ENV = "GPUWARDEN_TOKEN"


class TokenMissing(ValueError):
    """No token to attach with, said in words a person can act on."""


def attach_token(token_file: Path | None, ask: Callable[[], str | None] | None = None) -> str:
    if token_file is not None:
        try:
            token = token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise TokenMissing(f"cannot read the token file {token_file}: "
                               f"{exc.strerror or exc}") from None
        if not token:
            raise TokenMissing(f"the token file {token_file} is empty")
        return token
    token = os.environ.get(ENV, "").strip()
    if token:
        return token
    asked = ask() if ask is not None else None
    if not asked:
        raise TokenMissing("no token: give --token-file FILE (a copy of the api-token file "
                           f"in that gpuwarden's data folder) or set {ENV}")
    return asked
