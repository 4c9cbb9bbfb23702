"""Start a PyInstaller build of gpuwarden once and say whether it works.

    python scripts/bundle_smoke.py [dist/gpuwarden]

Runs the bundle's executable offscreen in a throw-away home (so it neither reads nor
writes the user's config, data or single-instance lock): `--version`, `status --simulate`
and the window on a simulated GPU for one second (`--simulate --quit-after 1`). Each must
exit 0 and print nothing alarming (a traceback, a missing module or library, a Qt
warning). Then `install-desktop --autostart` there, whose menu entry must run the bundle.
Prints one line per step and the bundle's size; exit status 0 when all passed,
1 otherwise. `make bundle` runs it after the build; tests/test_bundle.py runs it against
an existing build when GPUWARDEN_BUNDLE=1.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STEPS: tuple[tuple[str, ...], ...] = (
    ("--version",),
    ("status", "--simulate"),
    ("--simulate", "--quit-after", "1"),
    ("install-desktop", "--autostart"),  # in the throw-away home: the icons need QtSvg
)
TIMEOUT_S = 120.0
# What a healthy start prints on stderr besides nothing: the note for a first run without
# a config file, where its control API listens, the offscreen platform's notice for every
# top-level window, and the note that the offscreen platform has no system tray.
HARMLESS = (
    re.compile(r"^gpuwarden: no config file at .* yet: no models to manage"),
    re.compile(r"^gpuwarden: control API on http://127\.0\.0\.1:\d+ \(its token: .*\)$"),
    re.compile(r"^This plugin does not support propagateSizeHints\(\)$"),
    re.compile(r"WARNING gpuwarden\.app\.tray: no system tray on this desktop"),
)
ALARMING = re.compile(
    r"Traceback|Error|Exception|[Ww]arning|Could not|Cannot|[Ff]ailed|not found|"
    r"No module|qt\.\w+")


def bundle_size_mib(folder: Path) -> float:
    return sum(p.lstat().st_size for p in folder.rglob("*") if not p.is_symlink()) / 2**20


def private_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "GPUWARDEN_"))}
    env.update(HOME=str(home), QT_QPA_PLATFORM="offscreen")
    for name in ("CONFIG", "DATA", "CACHE", "STATE", "RUNTIME"):
        folder = home / name.lower()
        folder.mkdir(mode=0o700)
        env[f"XDG_{name}_HOME" if name != "RUNTIME" else "XDG_RUNTIME_DIR"] = str(folder)
    return env


def alarming_lines(stdout: str, stderr: str) -> list[str]:
    """The lines that say something went wrong: anything on stderr that is not known to be
    harmless, and any alarming word on stdout."""
    bad = [line for line in stderr.splitlines()
           if line.strip() and not any(h.search(line) for h in HARMLESS)]
    bad += [line for line in stdout.splitlines() if ALARMING.search(line)]
    return bad


def run_step(exe: Path, args: tuple[str, ...], env: dict[str, str]) -> list[str]:
    """Run one step; print its result; return what went wrong (empty when it passed)."""
    start = time.monotonic()
    try:
        done = subprocess.run([str(exe), *args], env=env, capture_output=True, text=True,
                              timeout=TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        problems = [f"did not finish within {TIMEOUT_S:g} s"]
    else:
        problems = alarming_lines(done.stdout, done.stderr)
        if done.returncode != 0:
            problems.insert(0, f"exit status {done.returncode}")
    took = time.monotonic() - start
    print(f"{'FAIL' if problems else 'ok  '} gpuwarden {' '.join(args)}  ({took:.1f} s)")
    for line in problems:
        print(f"     {line}")
    return problems


def menu_entry_runs(exe: Path, data_home: Path) -> bool:
    """Whether the menu entry the bundle installed starts the bundle itself."""
    entry = data_home / "applications" / "gpuwarden.desktop"
    lines = entry.read_text(encoding="utf-8").splitlines() if entry.is_file() else []
    if f"Exec={exe.absolute()}" in lines:
        return True
    print(f"FAIL the menu entry {entry} does not run {exe.absolute()}")
    return False


def smoke(folder: Path) -> bool:
    exe = folder / ("gpuwarden.exe" if os.name == "nt" else "gpuwarden")
    if not exe.is_file():
        print(f"no bundle at {exe}: build it with `make bundle`", file=sys.stderr)
        return False
    print(f"bundle {folder}: {bundle_size_mib(folder):.0f} MiB")
    with tempfile.TemporaryDirectory(prefix="gpuwarden-smoke-") as home:
        env = private_env(Path(home))
        failed = [args for args in STEPS if run_step(exe, args, env)]
        if not failed and not menu_entry_runs(exe, Path(env["XDG_DATA_HOME"])):
            failed.append(("install-desktop",))
    print("bundle smoke: " + ("FAILED" if failed else "passed"))
    return not failed


def main(argv: list[str]) -> int:
    folder = Path(argv[0]) if argv else Path("dist") / "gpuwarden"
    return 0 if smoke(folder) else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
