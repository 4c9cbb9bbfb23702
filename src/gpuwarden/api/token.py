"""The API's bearer token: made on first start, kept in the data folder readable by its
owner only (a file others can read is narrowed to the owner and said in the log)."""

from __future__ import annotations

import logging
import os
import secrets
import stat
from pathlib import Path

from gpuwarden.engine.atomic import atomic_write_text

log = logging.getLogger(__name__)
TOKEN_FILE = "api-token"


class TokenUnusable(OSError):
    """The token file exists but cannot be read or holds no token."""


def token_path(folder: Path) -> Path:
    return folder / TOKEN_FILE


def read_token(folder: Path) -> str:
    """The token kept in ``folder`` (FileNotFoundError: none yet; TokenUnusable: a file
    that holds none)."""
    path = token_path(folder)
    text = path.read_text(encoding="utf-8", errors="replace").strip()
    if not text or any(c.isspace() for c in text):
        raise TokenUnusable(f"{path} holds no token: delete it and a new one is made")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        log.warning("%s could be read by others (mode %o): narrowed to its owner", path, mode)
        os.chmod(path, 0o600)
    return text


def api_token(folder: Path) -> str:
    """The token, made (owner-only, written atomically) when there is none yet."""
    try:
        return read_token(folder)
    except FileNotFoundError:
        token = secrets.token_urlsafe(32)
        atomic_write_text(token_path(folder), token + "\n")  # a new file is 0600 (mkstemp)
        return token
