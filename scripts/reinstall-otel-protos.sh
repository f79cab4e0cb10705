#!/usr/bin/env bash
# xds-protos (Envoy's protos, for the mesh's ADS server) ships its own, older copy of
# opentelemetry/proto/*_pb2.py. pip installs both packages into the same directory, and whichever
# comes last wins: with xds-protos last, the OTLP exporter fails to import (no InstrumentationScope).
# Reinstall the opentelemetry-proto version pip resolved, without touching anything else, so its
# files win. canaryctl does not load Envoy's OpenTelemetry protos, which used the older copy.
set -euo pipefail
python="${1:?usage: reinstall-otel-protos.sh PYTHON}"
version="$("$python" -c 'from importlib.metadata import version; print(version("opentelemetry-proto"))')"
"$python" -m pip install --quiet --force-reinstall --no-deps "opentelemetry-proto==${version}"
"$python" -c 'import opentelemetry.exporter.otlp.proto.http.trace_exporter'
