"""`gpuwarden estimate MODEL.gguf`, run in-process: verdicts, JSON, and one clear line
(exit 2, no traceback) for every kind of bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gguf_factory import write_garbage, write_tiny_llama, write_truncated
from gpuwarden import estimate_cmd
from gpuwarden.engine.safety.gguf_plan import read_gguf
from gpuwarden.estimate_cmd import EXIT_DOES_NOT_FIT, EXIT_FITS, EXIT_USAGE, main


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
    assert doc["needed_mib"] > doc["overhead_mib"] == 400.0
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
