"""`gpuwarden estimate MODEL.gguf`, run in-process: verdicts, JSON, and one clear line
(exit 2, no traceback) for every kind of bad input; llama.cpp's projection (the real fit
tool beside the real llama-server) first, the GGUF metadata when the tool is missing or
fails, and `--source` to pick one."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from gguf_factory import write_garbage, write_tiny_llama, write_truncated
from gpuwarden import estimate_cmd
from gpuwarden.engine.safety import fit_params
from gpuwarden.engine.safety.gguf_plan import read_gguf
from gpuwarden.engine.supervisor import locate
from gpuwarden.engine.supervisor.locate import FIT_PARAMS, LlamaServerNotFound
from gpuwarden.estimate_cmd import EXIT_DOES_NOT_FIT, EXIT_FITS, EXIT_USAGE, main


@pytest.fixture(autouse=True)
def no_fit_tool(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No llama.cpp fit tool unless a test gives one (a llama-server on PATH would
    otherwise change which source prices the model); no projection cached across tests."""
    monkeypatch.setattr(estimate_cmd, "find_fit_tool", lambda: None)
    fit_params.clear_cache()
    yield
    fit_params.clear_cache()


@pytest.fixture
def fit_tool(llama_server_bin: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The real llama-fit-params beside the real llama-server, as estimate finds it. Skipped
    where it is not built, except in CI, where a missing tool is a failure."""
    tool = llama_server_bin.parent / FIT_PARAMS
    if not (tool.is_file() and os.access(tool, os.X_OK)):
        message = f"{FIT_PARAMS} is not built beside {llama_server_bin}: run " \
                  "`gpuwarden setup llama-server`"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    monkeypatch.setattr(locate, "find_llama_server", lambda configured=None:
                        llama_server_bin)
    monkeypatch.setattr(estimate_cmd, "find_fit_tool", locate.find_fit_tool)
    return tool


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return write_tiny_llama(tmp_path / "tiny.gguf", context_length=4096)


def _usage_error(capsys: pytest.CaptureFixture[str], argv: list[str], *names: str) -> str:
    assert main(argv) == EXIT_USAGE
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("gpuwarden estimate: error: ")
    for name in names:
        assert name in lines[0]
    return lines[0]


def test_fits_on_a_simulated_gpu(model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(model), "--simulate"]) == EXIT_FITS
    out, err = capsys.readouterr()
    assert out.startswith(f"{model}: fits\n")
    assert "Fits on GPU 0" in out
    for label in ("weights", "KV cache", "compute", "CUDA overhead", "free", "margin"):
        assert f"  {label}: " in out
    assert "figures from: GGUF metadata" in out
    assert err == ""


def test_json(model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(model), "--simulate", "2", "--ctx", "1024", "--json"]) == EXIT_FITS
    doc = json.loads(capsys.readouterr().out)
    assert doc["kind"] == "fits"
    assert doc["source"] == "metadata"
    assert doc["model"] == str(model)
    assert doc["gpu"] in (0, 1)
    assert doc["gpu_layers"] == doc["total_layers"] == 2
    assert doc["needed_mib"] > doc["overhead_mib"] == 650.0  # nothing learned yet: the default
    assert doc["margin_mib"] == 512.0
    assert isinstance(doc["lines"], list)
    assert doc["notes"] == []


def test_overhead_margin_and_gpu_options(model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [str(model), "--simulate", "2", "--gpu", "1", "--overhead-mib", "123",
            "--margin-mib", "7", "--json"]
    assert main(argv) == EXIT_FITS
    doc = json.loads(capsys.readouterr().out)
    assert (doc["gpu"], doc["overhead_mib"], doc["margin_mib"]) == (1, 123.0, 7.0)


def test_does_not_fit_exits_one(model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(model), "--simulate", "--margin-mib", "1000000"]) == EXIT_DOES_NOT_FIT
    out = capsys.readouterr().out
    assert out.startswith(f"{model}: does-not-fit")
    assert "short" in out


def test_a_gpu_that_is_not_there(model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(model), "--simulate", "--gpu", "3"]) == EXIT_DOES_NOT_FIT
    assert "There is no GPU 3" in capsys.readouterr().out


def test_without_any_gpu_it_runs_on_the_cpu(
    model: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(estimate_cmd, "free_vram", lambda simulate: {})
    assert main([str(model)]) == EXIT_FITS
    out = capsys.readouterr().out
    assert "No GPU found: every layer would run on the CPU." in out
    assert "note: no GPU found" in out


def test_context_above_training_is_noted(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    path = write_tiny_llama(tmp_path / "short.gguf", context_length=256)
    assert main([str(path), "--simulate", "--ctx", "2048"]) == EXIT_FITS
    out = capsys.readouterr().out
    assert "training context (256)" in out
    assert "2048 cells" in out


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "nowhere.gguf"
    assert "no such file" in _usage_error(capsys, [str(path), "--simulate"], str(path))


def test_text_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "readme.gguf"
    path.write_text("hello\n")
    _usage_error(capsys, [str(path), "--simulate"], str(path), "not a GGUF")


def test_garbage_truncated_and_a_folder(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    for path in (write_garbage(tmp_path / "g.gguf"), write_truncated(tmp_path / "t.gguf"),
                 tmp_path):
        _usage_error(capsys, [str(path), "--simulate"], str(path))


def test_absurd_metadata(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    liar = write_tiny_llama(tmp_path / "liar.gguf", claimed_block_count=1_000_000_000)
    _usage_error(capsys, [str(liar), "--simulate"], str(liar), "block_count")
    ctx = write_tiny_llama(tmp_path / "ctx.gguf", context_length=1 << 30)
    _usage_error(capsys, [str(ctx), "--simulate"], str(ctx), "context_length")


def test_refusal_as_json_keeps_stderr(tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    path = write_garbage(tmp_path / "g.gguf")
    assert main([str(path), "--simulate", "--json"]) == EXIT_USAGE
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert doc["kind"] == "refused"
    assert str(path) in doc["message"]
    assert str(path) in err


@pytest.mark.parametrize("ctx", ["0", "-1", "abc", str(1 << 30)])
def test_bad_context(model: Path, capsys: pytest.CaptureFixture[str], ctx: str) -> None:
    _usage_error(capsys, [str(model), "--simulate", "--ctx", ctx], "--ctx")


@pytest.mark.parametrize(
    "extra",
    [["--gpu", "x"], ["--gpu", "-1"], ["--margin-mib", "nan"], ["--overhead-mib", "-3"],
     ["--simulate", "99"], ["--bogus"]],
)
def test_bad_options(model: Path, capsys: pytest.CaptureFixture[str], extra: list[str]) -> None:
    _usage_error(capsys, [str(model), *extra])


def test_no_model_given(capsys: pytest.CaptureFixture[str]) -> None:
    _usage_error(capsys, [], "MODEL.gguf")


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "--ctx" in capsys.readouterr().out


def test_make_plan_is_the_metadata_plan(model: Path) -> None:
    plan = estimate_cmd.make_plan(model, 1024)
    assert plan.source == "metadata"
    assert plan.context_size == 1024
    facts = read_gguf(model)
    assert estimate_cmd.make_plan(model, 1024, facts=facts) == plan
    q8 = estimate_cmd.make_plan(model, 1024, cache_type_k="q8_0", facts=facts)
    assert q8 == estimate_cmd.make_plan(model, 1024, cache_type_k="q8_0")
    assert q8.kv_per_layer_mib < plan.kv_per_layer_mib


# -- llama.cpp's projection first, the metadata when there is none ------------------------


@pytest.fixture
def wider(tmp_path: Path) -> Path:
    """Big enough that whole-MiB rounding does not hide the figures (about 50 MiB)."""
    return write_tiny_llama(tmp_path / "wider.gguf", n_layers=4, n_embd=512, n_ff=1536,
                            n_head=8, context_length=8192)


def _total(plan: estimate_cmd.MemoryPlan, gpu_layers: int) -> float:
    return plan.gpu_mib(gpu_layers) + plan.host_mib(gpu_layers)


def _stored(plan: estimate_cmd.MemoryPlan) -> float:
    return (sum(plan.layer_weights_mib) + plan.output_mib + plan.host_only_mib
            + plan.kv_per_layer_mib * plan.layers)


def test_both_sources_agree(wider: Path, fit_tool: Path) -> None:
    facts = read_gguf(wider)
    for ctx in (512, 4096):
        ours = estimate_cmd.make_plan(wider, ctx, facts=facts, source="metadata")
        theirs = estimate_cmd.make_plan(wider, ctx, facts=facts)  # auto: llama.cpp first
        assert (ours.source, theirs.source) == ("metadata", "llama.cpp")
        assert theirs.layers == ours.layers == facts.layers
        assert theirs.context_size == ctx
        # All of it, as a CPU build of llama.cpp (this one, in CI) allocates it...
        assert abs(_total(theirs, 0) - _total(ours, 0)) < 4.0, ctx
        # ...and the weights and KV cache wherever they go. (A CPU build projects no GPU
        # compute buffer: compute is compared only where everything is on the host.)
        assert abs(_stored(theirs) - _stored(ours)) < 4.0, ctx
        # Each layer's weights in the file's proportions.
        share = [b / facts.tensor_bytes for b in facts.layer_bytes]
        assert theirs.layer_weights_mib[0] / theirs.layer_weights_mib[-1] == \
            pytest.approx(share[0] / share[-1])
        assert estimate_cmd.make_plan(wider, ctx, facts=facts, source="llama.cpp") == theirs
    # The fit tool was asked for a full offload with the context and slots of the launch.
    asked = fit_params.project(fit_tool, wider, context_size=4096, gpu_layers=facts.layers)
    assert asked is not None
    assert "--n-gpu-layers" in asked.argv and str(facts.layers) in asked.argv


def test_llama_cpp_source_is_printed(wider: Path, fit_tool: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(wider), "--simulate"]) == EXIT_FITS
    assert "figures from: llama.cpp (llama-fit-params)" in capsys.readouterr().out
    assert main([str(wider), "--simulate", "--json"]) == EXIT_FITS
    auto = json.loads(capsys.readouterr().out)
    assert auto["source"] == "llama.cpp"
    assert main([str(wider), "--simulate", "--json", "--source", "metadata"]) == EXIT_FITS
    meta = json.loads(capsys.readouterr().out)
    assert meta["source"] == "metadata"
    assert auto["gpu_layers"] == meta["gpu_layers"] == auto["total_layers"] == 4


def test_metadata_source_never_runs_the_tool(
    model: Path, fit_tool: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def no_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("the fit tool was run")

    monkeypatch.setattr(fit_params, "project", no_run)
    assert main([str(model), "--simulate", "--source", "metadata"]) == EXIT_FITS
    assert "figures from: GGUF metadata" in capsys.readouterr().out


def test_missing_tool_falls_back_on_the_metadata(
    model: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    asked: list[Path | None] = []

    def none_here(server: Path | None = None) -> Path | None:
        asked.append(server)
        return None

    monkeypatch.setattr(estimate_cmd, "find_fit_tool", locate.find_fit_tool)
    monkeypatch.setattr(locate, "find_fit_params", none_here)
    assert estimate_cmd.make_plan(model, 1024).source == "metadata"
    assert main([str(model), "--simulate"]) == EXIT_FITS
    assert "figures from: GGUF metadata" in capsys.readouterr().out
    assert asked
    # Asked for llama.cpp by name: one clear line, exit 2.
    line = _usage_error(capsys, [str(model), "--simulate", "--source", "llama.cpp"])
    assert "llama-fit-params" in line and "--source metadata" in line


def test_no_llama_server_still_looks_in_the_cache(
    model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[Path | None] = []

    def not_found(configured: Path | None = None) -> Path:
        raise LlamaServerNotFound(["PATH"])

    def none_here(server: Path | None = None) -> Path | None:
        asked.append(server)
        return None

    monkeypatch.setattr(estimate_cmd, "find_fit_tool", locate.find_fit_tool)
    monkeypatch.setattr(locate, "find_llama_server", not_found)
    monkeypatch.setattr(locate, "find_fit_params", none_here)
    assert estimate_cmd.make_plan(model, 1024).source == "metadata"
    assert asked == [None]


@pytest.mark.parametrize("script", [
    "#!/bin/sh\necho 'failed to load model' >&2\nexit 1\n",  # fails
    "#!/bin/sh\necho 'no table here'\nexit 0\n",  # answers nonsense
])
def test_failing_tool_falls_back_on_the_metadata(
    model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], script: str,
) -> None:
    tool = tmp_path / FIT_PARAMS
    tool.write_text(script)
    tool.chmod(0o755)
    monkeypatch.setattr(estimate_cmd, "find_fit_tool", lambda: tool)
    assert estimate_cmd.make_plan(model, 1024).source == "metadata"
    assert main([str(model), "--simulate", "--json"]) == EXIT_FITS
    assert json.loads(capsys.readouterr().out)["source"] == "metadata"
    _usage_error(capsys, [str(model), "--simulate", "--source", "llama.cpp"], "llama-fit-params")


def test_a_bad_file_is_refused_before_the_tool_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("the fit tool was run")

    monkeypatch.setattr(estimate_cmd, "find_fit_tool", lambda: tmp_path)
    monkeypatch.setattr(fit_params, "project", no_run)
    path = write_garbage(tmp_path / "g.gguf")
    lines = {_usage_error(capsys, [str(path), "--simulate", "--source", source], str(path))
             for source in ("auto", "llama.cpp", "metadata")}
    assert len(lines) == 1  # the same refusal whichever source was asked for


def test_bad_source(model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _usage_error(capsys, [str(model), "--source", "guess"], "--source")
