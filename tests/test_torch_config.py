"""A ``backend = "torch"`` entry: a Transformers folder or an exported / scripted file,
a dtype, placed whole on the GPU or the CPU; what is wrong is named by line and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuwarden.engine.lifecycle.config import Config, ConfigProblem, parse_config
from torch_factory import tiny_transformers

__all__ = ["tiny_transformers"]  # the fixture, used by name


def parse(content: str, base_dir: Path) -> tuple[Config, list[ConfigProblem]]:
    return parse_config(content, "config.toml", base_dir)


def folder(tmp_path: Path, *, config: bool = True, weights: str = "model.safetensors") -> Path:
    model = tmp_path / "tiny"
    model.mkdir()
    if config:
        (model / "config.json").write_text("{}")
    (model / weights).write_bytes(b"weights")
    return model


def entry(path: str, extra: str = "") -> str:
    return f'[[models]]\nname = "t"\nbackend = "torch"\npath = "{path}"\n{extra}'


def test_a_transformers_folder_is_a_torch_model_run_whole(tmp_path: Path) -> None:
    folder(tmp_path)
    config, problems = parse(entry("tiny", 'dtype = "float16"\n'), tmp_path)
    assert problems == []
    model = config.models[0]
    assert (model.path, model.dtype) == (tmp_path / "tiny", "float16")
    assert model.layers == 1  # whole: a GPU out-of-memory goes straight to the CPU
    assert parse(entry("tiny"), tmp_path)[0].models[0].dtype == "bfloat16"


@pytest.mark.parametrize("name", ["m.pt2", "m.pt", "m.ts", "m.torchscript"])
def test_exported_and_scripted_files_are_torch_models(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_bytes(b"PK")
    assert parse(entry(name), tmp_path)[1] == []


@pytest.mark.parametrize(("make", "said"), [
    (lambda p: folder(p, config=False), "not a Transformers model folder (no config.json)"),
    (lambda p: folder(p, weights="pytorch_model.bin"), "pickled .bin weights are never"),
    (lambda p: (p / "tiny").write_bytes(b"x"), "a torch model is a Transformers folder"),
    (lambda p: None, "model not found"),
])
def test_what_is_not_a_torch_model_is_named_on_the_path_line(tmp_path: Path, make,
                                                             said: str) -> None:
    make(tmp_path)
    config, problems = parse(entry("tiny"), tmp_path)
    assert [(p.line, p.field) for p in problems] == [(4, "path")]
    assert said in problems[0].message
    assert config.models == ()


def test_layers_dtypes_and_other_kinds_keys_are_refused(tmp_path: Path) -> None:
    folder(tmp_path)
    _, problems = parse(entry("tiny", 'placement = 12\ndtype = "int8"\ncommand = ["x"]\n'),
                        tmp_path)
    by_field = {p.field: (p.line, p.message) for p in problems}
    assert by_field["placement"][0] == 5 and "no layers" in by_field["placement"][1]
    assert by_field["dtype"][0] == 6 and "bfloat16, float16, float32" in by_field["dtype"][1]
    assert by_field["command"] == (7, "'command' is only for backend = \"command\"")
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    _, problems = parse('[[models]]\nname = "g"\nbackend = "llama-server"\npath = "m.gguf"\n'
                        'dtype = "float16"\n', tmp_path)
    assert [(p.line, p.message) for p in problems] == [
        (5, "'dtype' is only for backend = \"torch\"")]


def test_a_torch_folder_is_priced_from_its_safetensors_headers(tmp_path: Path,
                                                               tiny_transformers: Path) -> None:
    """Float tensors counted in the dtype they load as: half of float32 for bfloat16."""
    from gpuwarden.engine.clock import FakeClock
    from gpuwarden.engine.lifecycle.config import ModelConfig
    from gpuwarden.engine.lifecycle.planning import TORCH_OVERHEAD, Planner
    from gpuwarden.engine.safety.overhead import OverheadBook
    from gpuwarden.engine.safety.torch_size import weights_mib

    stored = (tiny_transformers / "model.safetensors").stat().st_size / 2**20
    as_f32 = weights_mib(tiny_transformers, "float32")
    as_bf16 = weights_mib(tiny_transformers, "bfloat16")
    assert as_f32 is not None and as_bf16 is not None
    assert as_f32 == pytest.approx(stored, rel=0.02)  # saved as float32: its size
    assert as_bf16 == pytest.approx(as_f32 / 2)
    planner = Planner(OverheadBook(tmp_path / "overhead.json", FakeClock()))
    cfg = ModelConfig("t", "torch", path=tiny_transformers, layers=1, dtype="bfloat16")
    assert planner.plan(cfg).gpu_mib(1) == pytest.approx(as_bf16 * TORCH_OVERHEAD, rel=0.05)
    broken = folder(tmp_path)  # b"weights": no header to read
    assert weights_mib(broken, "float16") is None
