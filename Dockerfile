# vfstack: the stack service (`stackservice run`), the `vfstack` admin CLI
# and the SDK for applications, in one image.
#
# BASE_IMAGE: any Debian-like image with python3 (>= 3.11) and its venv
# module. Where python:3.12-slim cannot be pulled (air-gapped hosts),
# docker/build-base-image.sh builds vfstack-base:local with debootstrap and
# .env passes BASE_IMAGE=vfstack-base:local (see .env.example).
#
# Written for the classic builder as well as BuildKit (no RUN --mount):
# Debian's docker.io 20.10 has no buildx.
ARG BASE_IMAGE=python:3.12-slim

FROM ${BASE_IMAGE} AS build
WORKDIR /src
RUN python3 -m venv /opt/vfstack
# Dependencies first, from pyproject.toml alone, with empty packages in
# place of the sources: this layer (grpcio & co., most of the build time)
# is reused until the dependencies themselves change.
COPY pyproject.toml README.md ./
RUN mkdir -p stackservice sdk/vfstack \
    && touch stackservice/__init__.py sdk/vfstack/__init__.py \
    && /opt/vfstack/bin/pip install --no-cache-dir . \
    && /opt/vfstack/bin/pip uninstall -y vfstack \
    && rm -rf build *.egg-info stackservice sdk
# (setuptools' build/ would keep the empty stubs: they are newer than the
# sources copied below.)
COPY stackservice ./stackservice
COPY sdk ./sdk
# Not editable: the runtime stage copies the venv alone.
# pip's byte-compiled files stay: the health check starts Python every few
# seconds, and a read-only container could not write them.
RUN /opt/vfstack/bin/pip install --no-cache-dir --no-deps . \
    && /opt/vfstack/bin/pip uninstall -y pip

FROM ${BASE_IMAGE}
# The example apps run as this user where the stack's file modes let them
# (see docker-compose.yml, APP_USER); the stack itself runs as root with a
# few capabilities, given by compose / `vfstack deploy`.
RUN groupadd --gid 10001 vfstack \
    && useradd --uid 10001 --gid vfstack --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin vfstack
COPY --from=build /opt/vfstack /opt/vfstack
COPY docker/healthcheck.py /usr/local/bin/vfstack-healthcheck
COPY docker/nic.sh /usr/local/bin/vfstack-nic
# (in case the checkout lost the execute bits)
RUN chmod 0755 /usr/local/bin/vfstack-healthcheck /usr/local/bin/vfstack-nic
ENV PATH=/opt/vfstack/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# The stack's health: its gRPC health service over the control socket
# (docker/healthcheck.py). Containers that are not stacks (nic, apps)
# replace it in docker-compose.yml. Every 10 s: a check costs ~0.15 s of
# CPU (Python and grpc start-up), and the engine (20.10) has no faster
# start-up interval.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["vfstack-healthcheck"]
# One instance, configured by VFSTACK_IFACE, VFSTACK_IP, VFSTACK_NAME,
# VFSTACK_METRICS_PORT, ... (every `stackservice run` flag has one).
CMD ["stackservice", "run"]
