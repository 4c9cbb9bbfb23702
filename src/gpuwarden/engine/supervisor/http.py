"""The few HTTP calls supervision makes to a local server: health, metrics, models, and
a worker's admin requests."""

from __future__ import annotations

import http.client
import json
import re
from dataclasses import dataclass

_METRIC = re.compile(r"^(llamacpp:[a-z_]+)\s+([-+0-9.eE]+|nan|inf)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class Reply:
    status: int | None  # None: no answer at all (refused, timed out)
    body: str = ""
    error: str = ""


def get(port: int, path: str, *, timeout_s: float, api_key: str | None = None) -> Reply:
    return _ask("GET", port, path, None, timeout_s, api_key)


def post(port: int, path: str, body: dict[str, object], *, timeout_s: float,
         api_key: str | None = None) -> Reply:
    """A JSON body POSTed (a worker's admin request)."""
    return _ask("POST", port, path, json.dumps(body).encode(), timeout_s, api_key)


def _ask(method: str, port: int, path: str, body: bytes | None, timeout_s: float,
         api_key: str | None) -> Reply:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    if body is not None:
        headers["Content-Type"] = "application/json"
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return Reply(resp.status, resp.read(1 << 20).decode("utf-8", errors="replace"))
    except (OSError, http.client.HTTPException) as exc:
        return Reply(None, error=f"{type(exc).__name__}: {exc}")
    finally:
        conn.close()


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text from llama-server's /metrics: ``{"requests_processing": 0.0, ...}``."""
    out: dict[str, float] = {}
    for name, value in _METRIC.findall(text):
        try:
            out[name.removeprefix("llamacpp:")] = float(value)
        except ValueError:
            continue
    return out
