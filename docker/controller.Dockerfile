# The Kubernetes controller: `canaryctl operator`. No Envoy, no mesh control plane.
#   docker build -f docker/controller.Dockerfile --build-arg VERSION=0.2.0 -t ghcr.io/canaryctl/controller:0.2.0 .
# Bases are pinned by digest (python:3.11-slim-bookworm); bump with `docker buildx imagetools inspect`.
FROM python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91 AS build
ARG VERSION=0.0.0
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 SETUPTOOLS_SCM_PRETEND_VERSION=${VERSION}
RUN python -m venv /opt/canaryctl
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY canaryctl ./canaryctl
COPY providers ./providers
COPY mesh ./mesh
RUN /opt/canaryctl/bin/pip install ./mesh ./providers '.[operator,otlp]'

FROM python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91
ARG VERSION=0.0.0
LABEL org.opencontainers.image.title="canaryctl-controller" \
      org.opencontainers.image.description="canaryctl's Kubernetes controller: progressive delivery of Canary resources" \
      org.opencontainers.image.source="https://github.com/canaryctl/canaryctl" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"
RUN groupadd --system --gid 10001 canaryctl \
 && useradd --system --uid 10001 --gid 10001 --no-create-home canaryctl
COPY --from=build /opt/canaryctl /opt/canaryctl
ENV PATH=/opt/canaryctl/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 10001:10001
ENTRYPOINT ["canaryctl", "operator"]
