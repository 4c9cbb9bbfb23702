"""The ``command`` backend: any program people run beside their LLMs (ComfyUI, a vLLM or
whisper server, a training script), supervised like llama-server.

The command is an argument list (no shell), started in its own session and process
group: a stop sends SIGTERM to the whole group, SIGKILL after the grace, and whatever the
group still holds once the program has ended is killed. Ready: a 200 from ``health_url``
(asked on llama-server's schedule), else once it has run ``ready_after_s``. With a health
URL a program that stops answering is killed as hung. It cannot offload: pressure
unloads it. Its VRAM is measured by pid (it and its descendants), as for llama-server.
Not adopted after a gpuwarden restart (it runs without the registry's mark).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from gpuwarden.engine.lifecycle.backend import (
    ActivityCallback,
    ExitCallback,
    Launch,
    ReadyCallback,
)
from gpuwarden.engine.supervisor import http
from gpuwarden.engine.supervisor.launch import gpu_environment
from gpuwarden.engine.supervisor.llama_server import LlamaServerBackend, _Server
from gpuwarden.engine.supervisor.watch import HangDetector

log = logging.getLogger(__name__)
_URL = re.compile(r"http://[^:/]+:(\d+)(/\S*)?")


def health_target(url: str | None) -> tuple[int, str] | None:
    """(port, path) of a ``http://127.0.0.1:PORT/path`` URL (checked when the config was
    read); None without one."""
    found = _URL.fullmatch(url) if url else None
    return (int(found[1]), found[2] or "/") if found else None


class CommandBackend(LlamaServerBackend):
    kind = "command"
    program = "the command"
    can_offload = False
    metrics_path = None  # no request counters: it is used or not by its own clients
    port_retries = 0  # its port is its own, not one gpuwarden picks
    own_group = True

    def start(self, launch: Launch, on_ready: ReadyCallback, on_exit: ExitCallback,
              on_activity: ActivityCallback | None = None) -> None:
        cfg = launch.config
        port = (health_target(cfg.health_url) or (0, ""))[0]
        self._spawn(_Server(launch, port, "", on_ready, on_exit, on_activity,
                            binary=Path(cfg.command[0])))

    def argv(self, binary: Path, launch: Launch, port: int, api_key: str) -> list[str]:
        return list(launch.config.command)

    def environment(self, launch: Launch) -> dict[str, str]:
        """The config's ``env``, then the GPU it may use (placement wins)."""
        return {**dict(launch.config.env), **gpu_environment(launch)}

    def workdir(self, launch: Launch) -> Path | None:
        return launch.config.cwd

    def health_path_of(self, launch: Launch) -> str:
        return (health_target(launch.config.health_url) or (0, "/"))[1]

    # -- watching -------------------------------------------------------------------------

    def keeps_watching(self, server: _Server) -> bool:
        """Only with a health URL: without one there is nothing to ask."""
        return health_target(server.launch.config.health_url) is not None

    def ready_vram_mib(self, server: _Server) -> float:
        """What its config says it takes (0 when not said, or on the CPU)."""
        return (server.launch.config.vram_mib or 0.0) if server.launch.device != "cpu" else 0.0

    def _wait_ready(self, server: _Server) -> bool:
        """A 200 from its health URL (llama-server's schedule), or ``ready_after_s`` of
        running without one."""
        if health_target(server.launch.config.health_url) is not None:
            return super()._wait_ready(server)
        proc = server.proc
        assert proc is not None
        server.stop.wait(server.launch.config.ready_after_s)
        return proc.alive and not server.stop.is_set()

    def _watch_running(self, server: _Server) -> None:
        """Its health URL every ``hang_poll_s``; ``hang_failures`` unanswered in a row
        (each waited ``hang_timeout_s``): killed as hung."""
        proc = server.proc
        target = health_target(server.launch.config.health_url)
        assert proc is not None and target is not None
        s, hang = self.settings, HangDetector(self.settings.hang_failures)
        port, path = target
        while not server.stop.wait(s.hang_poll_s) and proc.alive:
            answered = http.get(port, path, timeout_s=s.hang_timeout_s).status == 200
            if hang.feed(answered) and proc.alive and not server.stop.is_set():
                log.warning("%s: no answer from %s %d times: killing it as hung",
                            server.launch.config.name, server.launch.config.health_url,
                            s.hang_failures)
                server.hung = True
                proc.kill()
                return
