# The load tester Flagger's webhooks call (`canaryctl loadtester`), with the tools Flagger's load tester
# image ships for its commands: hey, curl, grpcurl, ghz, kubectl and helm (plus jq).
#   docker build -f docker/loadtester.Dockerfile --build-arg VERSION=0.2.0 -t ghcr.io/canaryctl/loadtester:0.2.0 .
# grpcurl and ghz are built from their Go modules (checked against the Go checksum database); kubectl
# and helm are the release binaries, checked against the SHA-256 files published beside them.
FROM --platform=$BUILDPLATFORM golang:1.24-bookworm@sha256:1a6d4452c65dea36aac2e2d606b01b4a029ec90cc1ae53890540ce6173ea77ac AS go-tools
ARG GRPCURL_VERSION=v1.9.3
ARG GHZ_VERSION=v0.120.0
ARG TARGETOS
ARG TARGETARCH
# Cross-compiled on the build machine's platform: no emulation for the arm64 image.
ENV CGO_ENABLED=0
# go install puts a cross-compiled binary under bin/<os>_<arch>/, a native one under bin/.
RUN GOOS="$TARGETOS" GOARCH="$TARGETARCH" go install "github.com/fullstorydev/grpcurl/cmd/grpcurl@${GRPCURL_VERSION}" \
 && GOOS="$TARGETOS" GOARCH="$TARGETARCH" go install "github.com/bojand/ghz/cmd/ghz@${GHZ_VERSION}" \
 && mkdir /out \
 && find "$(go env GOPATH)/bin" -type f \( -name grpcurl -o -name ghz \) -exec cp {} /out/ \;

FROM python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91 AS build
ARG VERSION=0.0.0
ARG TARGETARCH
ARG KUBECTL_VERSION=v1.34.2
ARG HELM_VERSION=v3.19.2
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 SETUPTOOLS_SCM_PRETEND_VERSION=${VERSION}
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends curl ca-certificates \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /tools
RUN curl -fsSLo kubectl "https://dl.k8s.io/release/${KUBECTL_VERSION}/bin/linux/${TARGETARCH}/kubectl" \
 && echo "$(curl -fsSL "https://dl.k8s.io/release/${KUBECTL_VERSION}/bin/linux/${TARGETARCH}/kubectl.sha256")  kubectl" \
    | sha256sum --check \
 && curl -fsSLo helm.tgz "https://get.helm.sh/helm-${HELM_VERSION}-linux-${TARGETARCH}.tar.gz" \
 && echo "$(curl -fsSL "https://get.helm.sh/helm-${HELM_VERSION}-linux-${TARGETARCH}.tar.gz.sha256")  helm.tgz" \
    | sha256sum --check \
 && tar -xzf helm.tgz --strip-components=1 "linux-${TARGETARCH}/helm" \
 && chmod 0755 kubectl helm \
 && rm helm.tgz
RUN python -m venv /opt/canaryctl
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY canaryctl ./canaryctl
COPY mesh ./mesh
RUN /opt/canaryctl/bin/pip install ./mesh '.[loadtester]'

FROM python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91
ARG VERSION=0.0.0
LABEL org.opencontainers.image.title="canaryctl-loadtester" \
      org.opencontainers.image.description="Flagger-compatible load tester with hey, curl, grpcurl, ghz, kubectl and helm" \
      org.opencontainers.image.source="https://github.com/canaryctl/canaryctl" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"
# tini: PID 1 that forwards signals and reaps the commands the load tester starts.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends hey curl jq ca-certificates tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 canaryctl \
 && useradd --system --uid 10001 --gid 10001 --home-dir /home/canaryctl --create-home canaryctl
COPY --from=go-tools /out/grpcurl /out/ghz /usr/local/bin/
COPY --from=build /tools/kubectl /tools/helm /usr/local/bin/
COPY --from=build /opt/canaryctl /opt/canaryctl
ENV PATH=/opt/canaryctl/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /home/canaryctl
ENTRYPOINT ["tini", "--", "canaryctl", "loadtester"]
