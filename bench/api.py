"""Control API benchmark (not a test: run it by hand on a quiet machine).

Through the real ApiServer (uvicorn on a thread, loopback HTTP, httpx as the client), over
an engine on 4 simulated GPUs with 50 simulated models (20 loaded, spread over the GPUs):

  scrape   GET /metrics, request -> whole body, over --scrapes requests (target < 5 ms
           median); and the render alone, without HTTP;
  sse      an event published on the engine's bus -> its line read by a client of
           GET /api/v1/events (target < 10 ms median), over --events events.

    QT_QPA_PLATFORM=offscreen .venv/bin/python bench/api.py [--scrapes 200] [--events 200]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from window import config_text

from gpuwarden.api.server import ApiServer
from gpuwarden.api.token import read_token
from gpuwarden.engine.events import ConfigProblemFound
from gpuwarden.engine.facade import Engine, ServicePaths
from gpuwarden.engine.lifecycle.config import ApiConfig, parse_config
from gpuwarden.engine.runtime import SimulateSpec, TelemetryOptions


def ms(values: list[float]) -> str:
    return f"median {statistics.median(values):.2f} ms, p95 " \
           f"{sorted(values)[int(0.95 * len(values))]:.2f} ms, max {max(values):.2f} ms"


def engine_with_models(tmp: Path) -> Engine:
    config, problems = parse_config(config_text(), "bench.toml", tmp)
    assert not problems, problems
    engine = Engine.build(config, TelemetryOptions(simulate=SimulateSpec(count=4),
                                                   interval_s=1.0), ServicePaths(None, None))
    engine.start(watch_config=False)
    deadline = time.monotonic() + 30
    while sum(r.state == "ready" for r in engine.models()) < 20:
        assert time.monotonic() < deadline, "the autostart models did not load"
        time.sleep(min(engine.step(), 0.05))
    return engine


def scrape(client: httpx.Client, server: ApiServer, count: int) -> None:
    book = server._metrics  # the render alone, for comparison
    assert book is not None
    rendered, http = [], []
    for _ in range(count):
        started = time.perf_counter()
        body, _ = book.render()
        rendered.append(1000 * (time.perf_counter() - started))
        started = time.perf_counter()
        reply = client.get("/metrics")
        http.append(1000 * (time.perf_counter() - started))
        assert reply.status_code == 200
    lines = [line for line in reply.text.splitlines() if not line.startswith("#")]
    print(f"/metrics: {len(lines)} samples, {len(body)} bytes")
    print(f"  render alone       {ms(rendered)}")
    print(f"  GET /metrics       {ms(http)}   [target < 5 ms median]")


def sse(client: httpx.Client, engine: Engine, count: int) -> None:
    delays: list[float] = []
    ready = threading.Event()
    last = engine.events_since(0)[-1].seq if engine.events_since(0) else 0

    def read() -> None:
        with client.stream("GET", f"/api/v1/events?since={last}",
                           timeout=httpx.Timeout(30.0)) as reply:
            ready.set()
            for line in reply.iter_lines():
                if line.startswith("data: "):
                    event = json.loads(line[6:])
                    if event["type"] == "config.problem":
                        delays.append(1000 * (time.perf_counter() - float(event["message"])))
                        if len(delays) == count:
                            return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    ready.wait(10)
    time.sleep(0.5)  # the stream is open and the replay done
    for _ in range(count):
        engine.publish(ConfigProblemFound(message=repr(time.perf_counter())))
        time.sleep(0.01)
    reader.join(30)
    print(f"SSE: {len(delays)} events, publish -> read by the client: {ms(delays)}"
          "   [target < 10 ms median]")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scrapes", type=int, default=200)
    parser.add_argument("--events", type=int, default=200)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="gpuwarden-api-bench-"))
    engine = engine_with_models(tmp)
    server = ApiServer(engine, ApiConfig(port=0), tmp / "data")
    url = server.start()
    assert url is not None
    headers = {"Authorization": f"Bearer {read_token(tmp / 'data')}"}
    try:
        with httpx.Client(base_url=url, headers=headers, timeout=10) as client:
            for _ in range(20):
                client.get("/metrics")  # warm up
            scrape(client, server, args.scrapes)
            sse(client, engine, args.events)
    finally:
        server.stop()
        engine.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
