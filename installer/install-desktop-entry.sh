#!/usr/bin/env bash
# Put gpuwarden in the desktop's application menu (per user, no root), so it starts with
# a double click. Run after `make run` (or `pip install gpuwarden`) has installed it.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
bin="${GPUWARDEN_BIN:-$root/.venv/bin/gpuwarden-gui}"
if [ ! -x "$bin" ]; then
    bin="$(command -v gpuwarden-gui || true)"
fi
if [ -z "$bin" ] || [ ! -x "$bin" ]; then
    echo "install-desktop-entry: gpuwarden-gui not found; run 'make run' first" >&2
    exit 1
fi
apps="${XDG_DATA_HOME:-$HOME/.local/share}/applications"
icons="${XDG_DATA_HOME:-$HOME/.local/share}/icons/hicolor/scalable/apps"
mkdir -p "$apps" "$icons"
cp "$root/src/gpuwarden/resources/gpuwarden.svg" "$icons/gpuwarden.svg"
tmp="$(mktemp "$apps/.gpuwarden.XXXXXX")"
sed "s|^Exec=.*|Exec=$bin|" "$here/gpuwarden.desktop" > "$tmp"
mv "$tmp" "$apps/gpuwarden.desktop"
echo "installed $apps/gpuwarden.desktop (runs $bin)"
