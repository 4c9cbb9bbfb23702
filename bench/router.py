"""Router benchmark (not a test: run it by hand on a quiet machine).

The real control API (uvicorn on its thread, loopback HTTP) over an engine running two
tiny real llama-server models on a simulated 8 GiB GPU that holds one of them
(tests/router_rig.py), httpx as the client, one kept-alive connection each way:

  overhead  POST /v1/completions (a cached 2-token prompt, 1 token out) through the
            router, minus the same request to llama-server directly; requests
            alternate, --requests of each (target < 1 ms median);
  first     a streamed /v1/chat/completions -> the first chunk with text, for a loaded
            model, for one loaded on demand (nothing loaded), and for one loaded on
            demand that swaps the other out; --loads of each (and the loaded one asked
            directly, without the router).

    GPUWARDEN_LLAMA_SERVER=... .venv/bin/python bench/router.py [--requests 500] [--loads 10]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from gguf_factory import write_tiny_llama
from gpuwarden.engine.supervisor.locate import find_llama_server
from router_rig import RouterRig, llama, router_rig

COMPLETION = {"prompt": "hello", "max_tokens": 1, "temperature": 0, "cache_prompt": True}
CHAT = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 8,
        "temperature": 0, "stream": True}


def ms(values: list[float]) -> str:
    ordered = sorted(values)
    return f"median {statistics.median(values):.2f} ms, p95 " \
           f"{ordered[int(0.95 * (len(values) - 1))]:.2f} ms, max {max(values):.2f} ms"


def timed(client: httpx.Client, url: str, body: dict[str, object]) -> float:
    start = time.perf_counter()
    reply = client.post(url, json=body)
    elapsed = (time.perf_counter() - start) * 1000
    assert reply.status_code == 200, reply.text
    return elapsed


def overhead(rig: RouterRig, count: int) -> None:
    found = rig.engine.endpoint("alpha")
    assert found is not None
    base, key = found
    routed, direct = [], []
    with httpx.Client(base_url=base, timeout=30,
                      headers={"Authorization": f"Bearer {key}"}) as own:
        for _ in range(20):  # warm both connections and the prompt cache
            timed(own, "/v1/completions", COMPLETION)
            timed(rig.client, "/v1/completions", {**COMPLETION, "model": "alpha"})
        for _ in range(count):
            direct.append(timed(own, "/v1/completions", COMPLETION))
            routed.append(timed(rig.client, "/v1/completions", {**COMPLETION, "model": "alpha"}))
    print(f"direct to llama-server: {ms(direct)}")
    print(f"through the router:     {ms(routed)}")
    pairs = [r - d for r, d in zip(routed, direct, strict=True)]
    medians = statistics.median(routed) - statistics.median(direct)
    print(f"router overhead: median of the differences {statistics.median(pairs):.2f} ms; "
          f"difference of the medians {medians:.2f} ms")


def first_token(rig: RouterRig, name: str) -> float:
    start = time.perf_counter()
    with rig.client.stream("POST", "/v1/chat/completions", json={**CHAT, "model": name}) as r:
        assert r.status_code == 200, r.read()
        lines = r.iter_lines()
        for line in lines:
            if line.startswith("data: {"):
                delta = json.loads(line[6:])["choices"][0]["delta"]
                if delta.get("content"):
                    elapsed = (time.perf_counter() - start) * 1000
                    for _ in lines:  # the rest of the answer, so the model is free again
                        pass
                    return elapsed
    raise AssertionError("no text in the answer")


def unloaded(rig: RouterRig, name: str) -> None:
    """Unload ``name`` and wait until a sample shows its memory free again (a load planned
    on the sample before would still see it held)."""
    rig.engine.unload(name)
    deadline = time.monotonic() + 30
    while (snap := rig.engine.snapshot()) is None or snap.gpus[0].memory_used_mib > 1000:
        assert time.monotonic() < deadline, f"{name} did not unload"
        time.sleep(0.01)


def first_token_direct(rig: RouterRig, name: str) -> float:
    found = rig.engine.endpoint(name)
    assert found is not None
    base, key = found
    with httpx.Client(base_url=base, timeout=30,
                      headers={"Authorization": f"Bearer {key}"}) as own:
        start = time.perf_counter()
        with own.stream("POST", "/v1/chat/completions", json=CHAT) as r:
            lines = r.iter_lines()
            for line in lines:
                if line.startswith("data: {") and \
                        json.loads(line[6:])["choices"][0]["delta"].get("content"):
                    elapsed = (time.perf_counter() - start) * 1000
                    for _ in lines:
                        pass
                    return elapsed
    raise AssertionError("no text in the answer")


def first_tokens(rig: RouterRig, count: int) -> None:
    own = [first_token_direct(rig, "alpha") for _ in range(count)]
    loaded = [first_token(rig, "alpha") for _ in range(count)]
    cold = []
    for _ in range(count):
        unloaded(rig, "alpha")
        rig.clock.jump(31.0)
        cold.append(first_token(rig, "alpha"))
    swapped = []
    for turn in range(count):
        rig.clock.jump(31.0)  # the other one is no longer in active use: it may go
        swapped.append(first_token(rig, "beta" if turn % 2 == 0 else "alpha"))
    loads = [e.to_dict()["model"] for e in rig.events if e.type == "model.loading"]
    print(f"first token, llama-server directly:     {ms(own)}")
    print(f"first token, loaded:                    {ms(loaded)}")
    print(f"first token, loaded on demand:          {ms(cold)}")
    print(f"first token, on demand with a swap:     {ms(swapped)}")
    print(f"loads: {len(loads)}; bookings that did not fit the GPU: {rig.problems or 'none'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--loads", type=int, default=10)
    args = parser.parse_args()
    configured = os.environ.get("GPUWARDEN_LLAMA_SERVER")
    binary = find_llama_server(Path(configured) if configured else None)
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        alpha = write_tiny_llama(tmp / "alpha.gguf", seed=1)
        beta = write_tiny_llama(tmp / "beta.gguf", seed=2)
        with router_rig(tmp, binary, llama("alpha", alpha), llama("beta", beta)) as rig:
            first_token(rig, "alpha")  # loaded on demand, once
            overhead(rig, args.requests)
            first_tokens(rig, args.loads)


if __name__ == "__main__":
    main()
