"""Where a running gpuwarden's control API listens: ``api.json`` in the data folder,
written by the server, read by `gpuwarden ctl`. Light on purpose (no FastAPI, no uvicorn),
so a client that only reads it starts fast."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

WHERE_FILE = "api.json"


@dataclass(frozen=True)
class Where:
    """Where a running gpuwarden's API listens (its ``api.json``)."""

    url: str
    pid: int


def read_where(folder: Path) -> Where | None:
    """The running API's address from ``folder``; None when there is none to read."""
    try:
        data = json.loads((folder / WHERE_FILE).read_text(encoding="utf-8"))
        return Where(str(data["url"]), int(data["pid"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
