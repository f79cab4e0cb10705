#!/usr/bin/env bash
# Copies the generated CRDs (crds/, from `make crds`) into the Helm chart, byte for byte:
#   crds/*.yaml     -> charts/canaryctl/crds/      (installed by helm before the templates)
#   crds/smi/*.yaml -> charts/canaryctl/files/smi/ (rendered as templates when smi.installCRDs=true)
# charts/canaryctl/crds/kopf-peering.yaml belongs to the chart and is left alone.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
chart="$repo/charts/canaryctl"
sync_dir() {
  local src="$1" dst="$2" keep="$3"
  mkdir -p "$dst"
  find "$dst" -maxdepth 1 -name '*.yaml' ! -name "$keep" -delete
  cp "$src"/*.yaml "$dst"/
}
sync_dir "$repo/crds" "$chart/crds" kopf-peering.yaml
sync_dir "$repo/crds/smi" "$chart/files/smi" ""
