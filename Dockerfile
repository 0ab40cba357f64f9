# vfstack: three images from one build, each with what its containers need.
#
#   --target stack (vfstack:local): the stack service
#       (`stackservice run`) and the operator commands, `pip install
#       '.[stack]'`. Compose's nic and stack services, and `vfstack deploy`.
#   --target app (vfstack-app:local): the SDK alone, `pip install .`
#       (grpcio, protobuf: no pyroute2, prometheus-client, health or
#       reflection services). Compose's example apps; a base for your own
#       (`FROM vfstack-app:local`, then your code).
#   --target app-frameworks (vfstack-app-frameworks:local): the SDK and
#       the asyncio frameworks, `pip install '.[frameworks]'`.
#
# All install the same wheel into /opt/vfstack, on PATH. Name the target:
# the default (the last stage) is app-frameworks.
#
# BASE_IMAGE: any Debian-like image with python3 (>= 3.11) and its venv
# module. Where python:3.12-slim cannot be pulled (air-gapped hosts),
# docker/build-base-image.sh builds vfstack-base:local with debootstrap and
# .env passes BASE_IMAGE=vfstack-base:local (see .env.example).
#
# Written for the classic builder as well as BuildKit (no RUN --mount):
# Debian's docker.io 20.10 has no buildx. The classic builder runs every
# stage up to the target, so the app's stages come first: `--target app`
# never installs the stack's dependencies.
ARG BASE_IMAGE=python:3.12-slim

# Dependencies first, from pyproject.toml alone, with empty packages (and
# README, the package's description) in place of the sources: these layers
# (grpcio & co., most of the build time) are reused until the dependencies
# themselves change.
FROM ${BASE_IMAGE} AS sdk-deps
WORKDIR /src
COPY pyproject.toml ./
RUN python3 -m venv /opt/vfstack \
    && mkdir -p stackservice sdk/vfstack \
    && touch README.md stackservice/__init__.py sdk/vfstack/__init__.py \
    && /opt/vfstack/bin/pip install --no-cache-dir . \
    && /opt/vfstack/bin/pip uninstall -y vfstack

# The package, once, as a wheel both images install, with the hot path
# (vfstack.shm, vfstack.sockets, net/, tcp/, fastpath/, nic/, metrics/) compiled by
# setup.py: the apps' images run the compiled rings and sockets too. This stage alone gets a C compiler,
# and Python's headers where the base image has none (Debian's python3
# keeps them in python3-dev; python:3.12-slim has its own): the images
# copy the venv, never the compiler. (setuptools' build/ would keep the
# empty stubs: they are newer than the sources copied here.)
FROM sdk-deps AS wheel
RUN headers="$(/opt/vfstack/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["include"])')" \
    && apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
        $([ -e "$headers/Python.h" ] || echo python3-dev) \
    && rm -rf /var/lib/apt/lists/*
RUN rm -rf build *.egg-info stackservice sdk
COPY README.md setup.py ./
COPY stackservice ./stackservice
COPY sdk ./sdk
RUN /opt/vfstack/bin/pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# Not editable: the runtime stages copy the venv alone. pip's byte-compiled
# files stay: the health checks start Python every few seconds, and a
# read-only container could not write them.
FROM sdk-deps AS sdk-venv
COPY --from=wheel /wheels /wheels
RUN /opt/vfstack/bin/pip install --no-cache-dir --no-deps /wheels/*.whl \
    && /opt/vfstack/bin/pip uninstall -y pip

# What both images share. The example apps run as this user where the
# stack's file modes let them (see docker-compose.yml, APP_USER); the
# stack itself runs as root with a few capabilities, given by compose /
# `vfstack deploy`.
FROM ${BASE_IMAGE} AS runtime
RUN groupadd --gid 10001 vfstack \
    && useradd --uid 10001 --gid vfstack --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin vfstack
ENV PATH=/opt/vfstack/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# The SDK alone. No health check of its own: an app's health is the app's
# (compose checks that its listener shows in `vfstack conns`).
FROM runtime AS app
COPY --from=sdk-venv /opt/vfstack /opt/vfstack

# The stack's dependencies on top of the SDK's layer.
FROM sdk-deps AS stack-deps
RUN /opt/vfstack/bin/pip install --no-cache-dir '.[stack]' \
    && /opt/vfstack/bin/pip uninstall -y vfstack

FROM stack-deps AS stack-venv
COPY --from=wheel /wheels /wheels
RUN /opt/vfstack/bin/pip install --no-cache-dir --no-deps /wheels/*.whl \
    && /opt/vfstack/bin/pip uninstall -y pip

FROM runtime AS stack
COPY --from=stack-venv /opt/vfstack /opt/vfstack
COPY docker/healthcheck.py /usr/local/bin/vfstack-healthcheck
COPY docker/nic.sh /usr/local/bin/vfstack-nic
# (in case the checkout lost the execute bits)
RUN chmod 0755 /usr/local/bin/vfstack-healthcheck /usr/local/bin/vfstack-nic
# The stack's health: its gRPC health service over the control socket
# (docker/healthcheck.py). The nic container replaces it in
# docker-compose.yml. Every 10 s: a check costs ~0.15 s of CPU (Python
# and grpc start-up), and the engine (20.10) has no faster start-up
# interval.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["vfstack-healthcheck"]
# One instance, configured by VFSTACK_IFACE, VFSTACK_IP, VFSTACK_NAME,
# VFSTACK_METRICS_PORT, ... (every `stackservice run` flag has one).
CMD ["stackservice", "run"]

# The SDK and the asyncio frameworks its examples run on, '.[frameworks]'
# (aiohttp, uvicorn, Starlette, websockets): compose's app-web (profile
# frameworks), and a base for framework apps (`FROM
# vfstack-app-frameworks:local`). Last, so that no other target builds
# it: the classic builder runs every stage up to its target.
FROM sdk-deps AS frameworks-deps
RUN /opt/vfstack/bin/pip install --no-cache-dir '.[frameworks]' \
    && /opt/vfstack/bin/pip uninstall -y vfstack

FROM frameworks-deps AS frameworks-venv
COPY --from=wheel /wheels /wheels
RUN /opt/vfstack/bin/pip install --no-cache-dir --no-deps /wheels/*.whl \
    && /opt/vfstack/bin/pip uninstall -y pip

FROM runtime AS app-frameworks
COPY --from=frameworks-venv /opt/vfstack /opt/vfstack
