"""The engine and the terminal commands run with no Qt at all (checked in a fresh process;
import-linter checks the same statically in `make test`)."""

import subprocess
import sys


def _modules_after(code: str) -> set[str]:
    probe = code + "\nimport sys\nprint('\\n'.join(sorted(sys.modules)))\n"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    return set(out.split())


def test_the_engine_never_loads_qt():
    loaded = _modules_after(
        "import gpuwarden.engine.runtime, gpuwarden.engine.telemetry.sampler, "
        "gpuwarden.engine.telemetry.simulated, gpuwarden.engine.telemetry.nvml"
    )
    assert "gpuwarden.engine.telemetry.sampler" in loaded
    assert not {m for m in loaded if m.startswith(("PySide6", "shiboken6", "pyqtgraph"))}


def test_gpuwarden_status_runs_without_loading_qt():
    loaded = _modules_after(
        "from gpuwarden.cli import main\nmain(['status', '--simulate', '--json'])"
    )
    assert "gpuwarden.console" in loaded
    assert not {m for m in loaded if m.startswith(("PySide6", "pyqtgraph"))}


def test_the_build_commands_output_goes_to_stderr_not_stdout(capfd):
    """`make test` reads the llama-server path from `gpuwarden setup`'s stdout, so the
    cmake and compiler chatter must go to stderr."""
    from gpuwarden.llama_build import _run

    _run([sys.executable, "-c", "print('-- Configuring done')"])
    out, err = capfd.readouterr()
    assert out == ""
    assert "-- Configuring done" in err


def test_setup_refuses_nonsense_options_before_building(capsys):
    import pytest

    from gpuwarden.llama_build import main

    for argv in (["--jobs", "-5"], ["--version", ""], ["--version", "latest; rm -rf /"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
    assert "expected" in capsys.readouterr().err
