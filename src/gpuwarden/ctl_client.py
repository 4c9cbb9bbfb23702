"""How `gpuwarden ctl` talks to the control API: where and with which token (``Target``),
each failure as a message a person can act on and an exit status (``Failed``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

EXIT_DONE, EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
START_HINT = "start one with `gpuwarden` (the window) or `gpuwarden headless`"


class Failed(Exception):
    """What went wrong, for a person, and the exit status it ends with."""

    def __init__(self, message: str, code: int = EXIT_UNREACHABLE) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Target:
    url: str
    token: str
    token_from: str  # where the token came from, for the message when it is refused


@dataclass(frozen=True)
class Ask:
    client: httpx.Client
    target: Target
    timeout_s: float

    @contextmanager
    def reaching(self) -> Iterator[None]:
        """httpx's failures as what a person can act on."""
        import httpx

        url = self.target.url
        try:
            yield
        except httpx.TimeoutException:
            raise Failed(f"gpuwarden at {url} did not answer within {self.timeout_s:g} s "
                         "(--timeout)") from None
        except httpx.ConnectError:
            raise Failed(f"nothing answers at {url}: is gpuwarden running? {START_HINT} "
                         "(with [api] enabled)") from None
        except httpx.TransportError as exc:
            raise Failed(f"the connection to gpuwarden at {url} broke (did it stop?): "
                         f"{exc or type(exc).__name__}") from None

    def send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        with self.reaching():
            reply = self.client.request(method, path, **kwargs)
        self.check_token(reply)
        return reply

    def check_token(self, reply: httpx.Response) -> None:
        if reply.status_code == 401:
            raise Failed(f"gpuwarden at {self.target.url} refused the token from "
                         f"{self.target.token_from}: it is not that gpuwarden's (for one on "
                         "another machine, --token-file with a copy of its api-token)")


def refusal(reply: httpx.Response) -> str:
    try:
        return str(reply.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return f"gpuwarden answered {reply.status_code}: {reply.text[:200]}"
