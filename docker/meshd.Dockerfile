# The included mesh's control plane and sidecar injector: `canaryctl-meshd control-plane|injector`,
# the canaryctl-mesh distribution alone (no canaryctl).
# It serves Envoy config; the Envoy binary itself is in the sidecar image.
#   docker build -f docker/meshd.Dockerfile --build-arg VERSION=0.2.0 -t ghcr.io/canaryctl/meshd:0.2.0 .
FROM python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91 AS build
ARG VERSION=0.0.0
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 SETUPTOOLS_SCM_PRETEND_VERSION=${VERSION}
RUN python -m venv /opt/canaryctl
WORKDIR /src
COPY LICENSE ./
COPY mesh ./mesh
RUN /opt/canaryctl/bin/pip install './mesh[meshd]'

FROM python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91
ARG VERSION=0.0.0
LABEL org.opencontainers.image.title="canaryctl-meshd" \
      org.opencontainers.image.description="canaryctl mesh control plane (SMI TrafficSplit to Envoy xDS) and sidecar injector" \
      org.opencontainers.image.source="https://github.com/canaryctl/canaryctl" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"
RUN groupadd --system --gid 10001 canaryctl \
 && useradd --system --uid 10001 --gid 10001 --no-create-home canaryctl
COPY --from=build /opt/canaryctl /opt/canaryctl
ENV PATH=/opt/canaryctl/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 10001:10001
ENTRYPOINT ["canaryctl-meshd"]
CMD ["control-plane"]
