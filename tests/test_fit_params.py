"""llama.cpp's own memory projection (llama-fit-params): the parser, the failure modes,
the plan it gives, and, with the real tool, agreement with what a real llama-server
then allocates."""

from __future__ import annotations

import logging
import os
import stat
import time
from pathlib import Path

import pytest

from gguf_factory import write_tiny_llama
from gpuwarden.engine.safety import fit_params
from gpuwarden.engine.safety.fit_params import (
    Allocated,
    Buffers,
    FitParseError,
    Projection,
    allocated,
    filter_args,
    parse,
    project,
    to_plan,
)
from gpuwarden.engine.supervisor.locate import (
    LlamaServerNotFound,
    find_fit_params,
    find_llama_server,
)
from server_buffers import server_allocation


def _tools() -> tuple[Path | None, Path | None]:
    """(llama-server, its fit tool), resolved at import: before the private XDG folders."""
    configured = os.environ.get("GPUWARDEN_LLAMA_SERVER")
    try:
        server: Path | None = find_llama_server(Path(configured) if configured else None)
    except LlamaServerNotFound:
        server = None
    return server, find_fit_params(server)


LLAMA_SERVER, FIT_TOOL = _tools()

# Captured: llama-fit-params 0.3.36 (CPU build), stdout, tiny model (4 layers, n_embd 256,
# GQA 8/2, f32), --ctx-size 4096 -ngl 0 --fit-print on. On a GPU build one line per device
# comes first (CUDA_SAMPLE's numbers are from llama.cpp's README).
CPU_SAMPLE = "Host 9 4 8 \n"
CUDA_SAMPLE = (  # the tool ends each number with a space, the line too
    "build: 1 (abcdef0) with cc (GCC) 13.2.0 for x86_64-linux-gnu\n"
    "CUDA0 17904 384 898 \n"
    "CUDA1 1200 64 120 \n"
    "Host 58259 0 12 \n"
)


@pytest.fixture(autouse=True)
def fresh_cache() -> None:
    fit_params.clear_cache()


@pytest.fixture(scope="module")
def fit_tool() -> Path:
    if FIT_TOOL is None:
        message = ("llama-fit-params is not built: run `gpuwarden setup llama-server` (it "
                   "builds the fit tool beside llama-server)")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return FIT_TOOL


# -- the parser --------------------------------------------------------------------------

def test_parse_cpu_build_has_only_the_host():
    p = parse(CPU_SAMPLE, context_size=4096, gpu_layers=0)
    assert p.devices == ()
    assert p.host == Buffers("Host", 9, 4, 8)
    assert (p.total_mib, p.device_mib, p.context_size) == (21, 0, 4096)


def test_parse_devices_then_host_ignoring_log_lines():
    p = parse(CUDA_SAMPLE, gpu_layers=99)
    assert [d.name for d in p.devices] == ["CUDA0", "CUDA1"]
    assert p.devices[0] == Buffers("CUDA0", 17904, 384, 898)
    assert p.device_mib == 17904 + 384 + 898 + 1200 + 64 + 120
    assert (p.model_mib, p.context_mib, p.compute_mib) == (17904 + 1200 + 58259, 448, 1030)
    assert p.total_mib == p.device_mib + 58259 + 12


@pytest.mark.parametrize("text", [
    "", "garbage\n", "CUDA0 1 2 3\n",  # no Host line
    "Host 1 2 3\nCUDA0 1 2 3\n",  # a device after the host
    "Host 1 2 3\nHost 1 2 3\n",
    "Host 1 2\n", "Host -1 2 3\n", "Host 1.5 2 3\n",
])
def test_parse_rejects_what_is_not_the_table(text):
    with pytest.raises(FitParseError):
        parse(text)


def test_filter_args_drops_server_only_options_with_their_values():
    accepted = frozenset({"--ctx-size", "-fa", "--flash-attn", "-ctk", "--seed", "-t"})
    kept, dropped = filter_args(
        ["-fa", "on", "--metrics", "-ctk", "q8_0", "--alias", "x y", "--seed", "-1",
         "--flash-attn=on", "--api-key=k", "-t", "4"], accepted)
    assert kept == ["-fa", "on", "-ctk", "q8_0", "--seed", "-1", "--flash-attn=on", "-t", "4"]
    assert dropped == ["--metrics", "--alias", "x y", "--api-key=k"]
    assert filter_args(["--anything", "1"], None) == (["--anything", "1"], [])


def test_allocated_sums_a_server_log():
    log_text = """\
load_tensors:   CPU_Mapped model buffer size =     0.52 MiB
llama_context:        CPU  output buffer size =     0.00 MiB
llama_kv_cache:        CPU KV buffer size =     2.00 MiB
sched_reserve:        CPU compute buffer size =     8.01 MiB
"""
    got = allocated(log_text)
    assert got == Allocated(model_mib=0.52, context_mib=2.0, compute_mib=8.01, output_mib=0.0)
    assert got is not None and got.total_mib == pytest.approx(10.53)
    assert allocated("nothing here\n") is None


# -- the plan ----------------------------------------------------------------------------

def _proj(devices: tuple[Buffers, ...], host: Buffers, ngl: int) -> Projection:
    return Projection(devices, host, 4096, ngl)


def test_plan_from_a_full_offload_is_exact_there():
    p = _proj((Buffers("CUDA0", 4000, 400, 300),), Buffers("Host", 250, 0, 20), ngl=40)
    plan = to_plan(p, 40)
    assert plan.source == "llama.cpp"
    assert plan.gpu_mib(40) == pytest.approx(4700)
    assert plan.host_mib(40) == pytest.approx(270)
    # -ngl 20: the output layer (nothing left over here) and the last 19 layers
    assert plan.gpu_mib(20) == pytest.approx(19 * 100 + 19 * 10 + 300)
    assert plan.host_only_mib == pytest.approx(250)


def test_plan_from_a_partial_offload_spreads_the_weights_evenly():
    # gpuwarden projects full offloads; a partial one (the output and 9 layers on the
    # device, as llama.cpp counts -ngl 10) tells layers and output apart no better than
    # an even split
    p = _proj((Buffers("CUDA0", 1000, 100, 300),), Buffers("Host", 3250, 300, 20), ngl=10)
    plan = to_plan(p, 40)
    assert plan.layer_weights_mib == (4250 / 40,) * 40
    assert plan.gpu_mib(40) + plan.host_only_mib == pytest.approx(4250 + 400 + 300)


def test_plan_from_the_cpu_splits_by_the_given_shares():
    p = _proj((), Buffers("Host", 1000, 64, 10), ngl=0)
    plan = to_plan(p, 4, [0.2, 0.2, 0.2, 0.2])
    assert plan.layer_weights_mib == pytest.approx((200.0,) * 4)
    assert plan.output_mib == pytest.approx(200)
    assert plan.kv_per_layer_mib == pytest.approx(16)
    assert plan.host_mib(0) == pytest.approx(1000 + 64 + 10)
    even = to_plan(p, 4)
    assert even.layer_weights_mib == (250.0,) * 4
    assert to_plan(p, 4, [1.0, 1.0, 1.0, 1.0]).layer_weights_mib == (250.0,) * 4  # normalised
    assert to_plan(p, 4, [0.5]).layer_weights_mib == (250.0,) * 4  # wrong length: even


# -- failures give None ------------------------------------------------------------------

def _script(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "llama-fit-params"
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return write_tiny_llama(tmp_path / "tiny.gguf")


def test_missing_tool_gives_none(tmp_path, model, caplog):
    with caplog.at_level(logging.INFO):
        assert project(tmp_path / "nope", model, context_size=512, gpu_layers=0) is None
    assert "no llama.cpp projection" in caplog.text


def test_nonzero_exit_gives_none(tmp_path, model, caplog):
    tool = _script(tmp_path, 'echo "error: invalid argument" >&2; exit 1')
    with caplog.at_level(logging.WARNING):
        assert project(tool, model, context_size=512, gpu_layers=0) is None
    assert "exited 1" in caplog.text and "invalid argument" in caplog.text


def test_garbage_gives_none(tmp_path, model):
    tool = _script(tmp_path, "echo hello; echo world")
    assert project(tool, model, context_size=512, gpu_layers=0) is None


def test_timeout_gives_none(tmp_path, model, caplog):
    tool = _script(tmp_path, 'case "$1" in --help) exit 0;; esac; exec sleep 5')
    with caplog.at_level(logging.WARNING):
        assert project(tool, model, context_size=512, gpu_layers=0, timeout_s=0.3) is None
    assert "took over" in caplog.text


def test_a_stand_in_tool_gets_the_launch_arguments_and_is_cached(tmp_path, model):
    calls = tmp_path / "calls"
    tool = _script(tmp_path, f"""\
case "$1" in --help) echo "-c,    --ctx-size N"; echo "-fa,   --flash-attn [on|off]"; exit 0;; esac
echo "$@" >> {calls}
echo "Host 1 2 3"
""")
    args = ("-fa", "on", "--metrics", "--alias", "m")
    got = project(tool, model, context_size=512, gpu_layers=7, parallel=2, extra_args=args)
    assert got is not None and got.total_mib == 6
    assert got.dropped_args == ("--metrics", "--alias", "m")
    again = project(tool, model, context_size=512, gpu_layers=7, parallel=2, extra_args=args)
    assert again is got
    # -np 2 is dropped from the args: the tool gets --parallel from the slots.
    assert project(tool, model, context_size=512, gpu_layers=7,
                   extra_args=("-np", "2", "--kv-unified")) is not None
    line = calls.read_text().splitlines()[:1]
    assert line == [f"--model {model} --n-gpu-layers 7 --ctx-size 512 --parallel 2 -fa on "
                    "--fit-print on"]
    os.utime(model, ns=(time.time_ns(), time.time_ns() + 10**9))  # a new file: ask again
    project(tool, model, context_size=512, gpu_layers=7, parallel=2, extra_args=args)
    assert len(calls.read_text().splitlines()) == 3


@pytest.mark.parametrize(("args", "sequences"), [
    ((), "1"),  # the server's default: 4 slots, one unified cache
    (("-np", "3"), "3"),
    (("--parallel=3", "--kv-unified"), "1"),
    (("-np", "-1"), "1"),
    (("-np", "2", "-fa", "on"), "2"),
])
def test_slots_as_the_tool_sees_them(tmp_path, args, sequences):
    tool = _script(tmp_path, 'echo "-np,   --parallel N"; echo "-fa,   --flash-attn"; '
                             'echo "-c,    --ctx-size N"')
    argv, _dropped = fit_params.fit_argv(tool, tmp_path / "m.gguf", context_size=512,
                                         gpu_layers=0, parallel=1, extra_args=args)
    assert argv[argv.index("--parallel") + 1] == sequences
    assert argv.count("--parallel") == 1 and "-np" not in argv and "--kv-unified" not in argv


# -- the real tool against the real server -----------------------------------------------

@pytest.mark.parametrize("context_size", [512, 4096])
def test_projection_matches_the_real_server(fit_tool, llama_server_bin, tmp_path,
                                           context_size):
    model = write_tiny_llama(tmp_path / "tiny.gguf", n_layers=4, n_embd=256, n_ff=512,
                             n_head=8, n_head_kv=2, context_length=4096)
    args = ("--threads", "1")
    started = time.monotonic()
    got = project(fit_tool, model, context_size=context_size, gpu_layers=0, extra_args=args)
    elapsed = time.monotonic() - started
    assert got is not None
    assert got.devices == ()  # the CPU build
    real = server_allocation(llama_server_bin, model, context_size, tmp_path / "server.log",
                             args)
    # The tool prints whole MiB, rounded down: each part within 1 MiB below the real one.
    assert 0 <= real.model_mib - got.host.model_mib < 1
    assert 0 <= real.context_mib - got.host.context_mib < 1
    assert 0 <= real.compute_mib - got.host.compute_mib < 1
    assert abs(real.total_mib - got.total_mib) < 3
    assert elapsed < 5.0
    plan = to_plan(got, 4)
    assert plan.host_mib(0) == pytest.approx(got.total_mib)


# -- finding and building the tool --------------------------------------------------------

def _exe(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_find_fit_params_beside_the_server_then_the_cache(tmp_path):
    from gpuwarden.engine.supervisor.locate import llama_server_cache_dir

    assert find_fit_params(tmp_path / "bin" / "llama-server") is None
    cached = _exe(llama_server_cache_dir() / "llama-fit-params")
    assert find_fit_params(tmp_path / "bin" / "llama-server") == cached
    assert find_fit_params() == cached
    beside = _exe(tmp_path / "bin" / "llama-fit-params")
    assert find_fit_params(tmp_path / "bin" / "llama-server") == beside


def test_a_cache_without_the_fit_tool_builds_again(monkeypatch):
    from gpuwarden import llama_build
    from gpuwarden.engine.supervisor.locate import llama_server_cache_dir

    asked: list[str] = []

    def no_download(version: str, into: Path) -> Path:
        asked.append(version)
        raise RuntimeError("no network in tests")

    monkeypatch.setattr(llama_build, "download_sources", no_download)
    monkeypatch.setattr(llama_build.shutil, "which", lambda _name: "/usr/bin/true")
    server = _exe(llama_server_cache_dir() / "llama-server")
    with pytest.raises(RuntimeError):
        llama_build.build()
    version = llama_build.LLAMA_CPP_PYTHON_VERSION
    assert asked == [version]
    _exe(llama_server_cache_dir() / "llama-fit-params")
    assert llama_build.build() == server  # complete: nothing to do
    assert asked == [version]
    assert llama_build.TARGETS == ("llama-server", "llama-fit-params")
