"""Runtimes benchmark (not a test: run it by hand on a quiet machine): each runtime's tiny
model on the CPU, through the real `gpuwarden headless --config CFG --events -`.

Per runtime (llama-server, llama-cpp, torch, command) and restart backoff:
  load       model.loading -> model.ready as the events arrive (the process start, the
             model's load, the first answer to the readiness check);
  first tok  a streamed /v1/chat/completions to the running server, as a client sends it:
             request -> the first chunk with text (text runtimes only);
  idle       what the ready, unused process costs over --idle-s seconds: CPU (% of one
             core, the process and its children) and resident memory (MiB);
  kill       SIGKILL of the model's process -> model.crashed, and -> model.ready again
             minus the backoff (attempt 1 each time: ready longer than healthy_reset_s).

    GPUWARDEN_LLAMA_SERVER=... python bench/runtimes.py [--kills 5] [--backoffs 1.0 0.001]
        [--runtimes llama-server llama-cpp torch command] [--idle-s 10]
"""

from __future__ import annotations

import argparse
import http.client
import importlib.util
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]

from restart import start_headless, stop_headless  # noqa: E402

from gguf_factory import write_tiny_llama  # noqa: E402
from standin_server import STANDIN  # noqa: E402

HEALTHY_RESET_S = 0.2
TEXT = ("llama-server", "llama-cpp", "torch")


@dataclass
class Result:
    runtime: str
    backoff_s: float
    load_ms: float = 0.0
    first_token_ms: float | None = None
    idle_cpu_pct: float = 0.0
    idle_rss_mib: float = 0.0
    crashed_ms: list[float] = field(default_factory=list)
    ready_ms: list[float] = field(default_factory=list)  # minus the backoff


def model_entry(runtime: str, tmp: Path) -> str:
    if runtime in ("llama-server", "llama-cpp"):
        model = tmp / "tiny.gguf"
        if not model.exists():
            write_tiny_llama(model)
        extra = 'args = ["--parallel", "1"]\n' if runtime == "llama-server" else ""
        return f'path = "{model}"\ncontext_size = 256\nthreads = 1\n{extra}'
    if runtime == "torch":
        folder = tmp / "tiny-torch"
        if not folder.exists():
            from torch_factory import write_tiny_transformers
            write_tiny_transformers(folder)
        return f'path = "{folder}"\nthreads = 1\n'
    spec = tmp / "standin.json"
    spec.write_text("{}")
    port = _free_port()
    return (f'command = ["{sys.executable}", "{STANDIN}", "--model", "{spec}", '
            f'"--port", "{port}"]\nhealth_url = "http://127.0.0.1:{port}/health"\n')


def _free_port() -> int:
    from gpuwarden.engine.supervisor.launch import free_port
    return free_port()


def write_config(folder: Path, runtime: str, backoff_s: float, tmp: Path) -> Path:
    path = folder / "config.toml"
    path.write_text(f"""\
[restart]
backoff_base_s = {backoff_s}
healthy_reset_s = {HEALTHY_RESET_S}

[[models]]
name = "tiny"
backend = "{runtime}"
placement = "cpu"
eviction = "never"
autostart = true
{model_entry(runtime, tmp)}""", encoding="utf-8")
    return path


def model_process(parent: int) -> psutil.Process:
    """The model's process: the child of gpuwarden that carries its name or port."""
    for child in psutil.Process(parent).children():
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "--port" in child.cmdline():
                return child
        except psutil.NoSuchProcess:
            continue
    raise RuntimeError(f"no model process under pid {parent}")


def _arg(cmdline: list[str], *names: str) -> str | None:
    for name in names:
        if name in cmdline[:-1]:
            return cmdline[cmdline.index(name) + 1]
    return None


def first_token_ms(proc: psutil.Process) -> float:
    """A streamed chat completion: request -> the first chunk that carries text."""
    cmdline = proc.cmdline()
    port = int(_arg(cmdline, "--port") or 0)
    key = _arg(cmdline, "--api-key", "--api_key") or ""
    body = json.dumps({"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 8,
                       "temperature": 0, "stream": True})
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    started = time.monotonic()
    try:
        conn.request("POST", "/v1/chat/completions", body,
                     {"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
        reply = conn.getresponse()
        for line in reply:
            if line.startswith(b"data: {") and b'"content":' in line:
                return 1000 * (time.monotonic() - started)
    finally:
        conn.close()
    raise RuntimeError("no text chunk in the streamed answer")


def idle_cost(proc: psutil.Process, seconds: float) -> tuple[float, float]:
    """(% of one core, resident MiB) of the process and its children over ``seconds``."""
    family = [proc, *proc.children(recursive=True)]

    def cpu() -> float:
        return sum(sum(p.cpu_times()[:2]) for p in family if p.is_running())

    before, started = cpu(), time.monotonic()
    time.sleep(seconds)
    pct = 100 * (cpu() - before) / (time.monotonic() - started)
    rss = sum(p.memory_info().rss for p in family if p.is_running()) / 2**20
    return pct, rss


def run(runtime: str, backoff_s: float, kills: int, idle_s: float, tmp: Path) -> Result:
    folder = Path(tempfile.mkdtemp(prefix=f"{runtime}-", dir=tmp))
    config = write_config(folder, runtime, backoff_s, tmp)
    proc, stamps = start_headless(folder, config, "--simulate", "1")
    result = Result(runtime, backoff_s)
    try:
        ready = stamps.next("model.ready", 0.0, timeout=300)
        result.load_ms = 1000 * (ready - stamps.next("model.loading", 0.0))
        model = model_process(proc.pid)
        if runtime in TEXT:
            result.first_token_ms = first_token_ms(model)
        result.idle_cpu_pct, result.idle_rss_mib = idle_cost(model, idle_s)
        for _ in range(kills):
            time.sleep(HEALTHY_RESET_S + 0.1)
            pid = model_process(proc.pid).pid
            killed = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            result.crashed_ms.append(1000 * (stamps.next("model.crashed", killed) - killed))
            back = stamps.next("model.ready", killed, timeout=300)
            result.ready_ms.append(1000 * (back - killed - backoff_s))
        return result
    finally:
        stop_headless(proc)


def available(runtime: str) -> str | None:
    """Why ``runtime`` cannot be measured here (None: it can)."""
    needs = {"llama-cpp": "llama_cpp", "torch": "transformers"}.get(runtime)
    if needs and importlib.util.find_spec(needs) is None:
        return f"{needs} is not installed"
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--backoffs", type=float, nargs="+", default=[1.0, 0.001])
    parser.add_argument("--runtimes", nargs="+", choices=("llama-server", "llama-cpp",
                                                           "torch", "command"),
                        default=["llama-server", "llama-cpp", "torch", "command"])
    parser.add_argument("--idle-s", type=float, default=10.0)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="gpuwarden-runtimes-"))
    print(f"{'runtime':<13}{'backoff':>8}{'load':>10}{'first tok':>11}{'idle CPU':>10}"
          f"{'idle RSS':>10}{'kill->crashed':>15}{'kill->ready-backoff':>21}")
    for runtime in args.runtimes:
        why = available(runtime)
        if why:
            print(f"{runtime:<13} skipped: {why}")
            continue
        for backoff in args.backoffs:
            r = run(runtime, backoff, args.kills, args.idle_s, tmp)
            token = f"{r.first_token_ms:.0f} ms" if r.first_token_ms is not None else "n/a"
            print(f"{runtime:<13}{backoff:>7g}s{r.load_ms:>7.0f} ms{token:>11}"
                  f"{r.idle_cpu_pct:>8.2f} %{r.idle_rss_mib:>6.0f} MiB"
                  f"{statistics.median(r.crashed_ms):>9.1f} ms (max {max(r.crashed_ms):.1f})"
                  f"{statistics.median(r.ready_ms):>9.0f} ms (max {max(r.ready_ms):.0f})",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
