# One image for every canaryctl component: the controller (`canaryctl operator`), the mesh control
# plane and injector (`canaryctl meshd ...`) and the load tester (`canaryctl loadtester`).
#   docker build -t ghcr.io/canaryctl/canaryctl:0.1.0 .
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/canaryctl
WORKDIR /src
COPY pyproject.toml README.md ./
COPY canaryctl ./canaryctl
# The project, its runtime dependencies and the OTLP trace exporter (no [test] extras), into a venv.
RUN /opt/canaryctl/bin/pip install --upgrade pip \
 && /opt/canaryctl/bin/pip install '.[otlp]'

FROM ${PYTHON_IMAGE}
# hey: the load generator webhook commands run in the load tester ("hey -z 1m -q 10 -c 2 URL").
# tini: PID 1 that forwards signals and reaps the load tester's finished commands.
RUN apt-get update \
 && apt-get install -y --no-install-recommends hey tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 canaryctl \
 && useradd --system --uid 10001 --gid 10001 --home-dir /home/canaryctl --create-home canaryctl
COPY --from=build /opt/canaryctl /opt/canaryctl
ENV PATH=/opt/canaryctl/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /home/canaryctl
ENTRYPOINT ["tini", "--", "canaryctl"]
CMD ["--help"]
