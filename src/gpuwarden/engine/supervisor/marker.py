"""The mark gpuwarden leaves in the environment of every server it launches, so that its
own servers are known as its own: through a wrapper script that ``exec``s the real binary
(a different executable and argv[0], the same environment), and without any registry.

``GPUWARDEN_SERVER`` is the model's name, ``GPUWARDEN_OWNER`` says which gpuwarden (a
hash of the user and the registry file, so two data folders never claim each other's
servers) and ``GPUWARDEN_GPU`` the GPU it was started on.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path

__all__ = ["GPU", "MODEL", "OWNER", "mark_of", "marker_env", "owner_token"]

MODEL = "GPUWARDEN_SERVER"
OWNER = "GPUWARDEN_OWNER"
GPU = "GPUWARDEN_GPU"


def owner_token(registry_path: Path) -> str:
    """This gpuwarden's name in its servers' environments: its user and registry file."""
    key = f"{os.getuid()}:{os.path.abspath(registry_path)}"
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def marker_env(model: str, owner: str, gpu: int) -> dict[str, str]:
    """The variables to add to a server's environment."""
    return {MODEL: model, OWNER: owner, GPU: str(gpu)}


def mark_of(env: Mapping[str, str], owner: str) -> tuple[str, int] | None:
    """(model, GPU) when ``env`` carries ``owner``'s mark; None when it is not ours."""
    model = env.get(MODEL)
    if env.get(OWNER) != owner or not model:
        return None
    gpu = env.get(GPU, "")
    return model, int(gpu) if gpu.isdigit() else 0
