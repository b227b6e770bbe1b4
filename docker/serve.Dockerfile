# SageMaker serving image: multi-model-server (Java 17) driven by the sagemaker-inference toolkit.
#
#   docker build --network host -f docker/serve.Dockerfile -t byoc-serve:latest .
#   docker run --rm -p 127.0.0.1:8080:8080 -e SAGEMAKER_MULTI_MODEL=true \
#       -v "$PWD/models:/opt/ml/models" byoc-serve:latest serve
#
# SageMaker starts the container as `docker run IMAGE serve`. With SAGEMAKER_MULTI_MODEL=true
# (multi-model endpoints) models are loaded on demand from /opt/ml/models; otherwise the single
# model in /opt/ml/model is served. SAGEMAKER_BIND_TO_PORT moves the port off 8080. Locally, publish
# the port on 127.0.0.1 only: POST /models (multi-model) loads whatever model directory it is pointed
# at, so it is for SageMaker's host agent, not for the machine's network.
#
# Inside, `serve` runs the request gate on the port and multi-model-server on Unix sockets behind it
# (container_serve/README.md); MMS's python workers are forked from one fork server that imported torch
# once (BYOC_FORK_SERVER, container_serve/fork_server.py).
#
# Build arguments: BASE_IMAGE and TORCH_INDEX_URL as in train.Dockerfile, but TORCH_INDEX_URL defaults
# to PyTorch's CPU-only index: this image only ever runs on CPU instances, and a CPU-only torch makes
# it several GB smaller, so an endpoint pulls and starts sooner. Empty = pip's default index (PyPI),
# what the offline tests here build with (tests/containers/conftest.py).
#
# Layer order: torch (shared with train.Dockerfile), Java, group dependencies (rebuilt only when
# pyproject.toml changes), then the code, so a code change rebuilds in seconds. No compiler ends
# up in the image: the MMS plugin jar is compiled in a separate stage and only the jar is copied.
ARG BASE_IMAGE=python:3.11-slim-bookworm

# ---- Dependency lists, read from pyproject.toml (the only place they are written down). ----
FROM ${BASE_IMAGE} AS requirements
WORKDIR /requirements
COPY docker/pyproject_requirements.py pyproject.toml ./
RUN python3 pyproject_requirements.py pyproject.toml model > model.txt \
 && python3 pyproject_requirements.py pyproject.toml serve --minus model > serve.txt

# ---- Runtime: everything but our code. ----
FROM ${BASE_IMAGE} AS runtime
# Everything Python goes into a virtualenv at /opt/venv, first on PATH: the same layout whatever
# way the base image installed its Python (python.org build, Debian/Ubuntu package, CUDA base).
ENV VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv "$VIRTUAL_ENV"

# The `model` group (torch, torchvision, pillow, numpy, ...): the same instructions open
# train.Dockerfile, so both images share this multi-GB layer when they are built with the same
# TORCH_INDEX_URL (the offline tests do). With TORCH_INDEX_URL set, torch and torchvision come from
# that index first (e.g. 2.13.0+cpu, which satisfies the ==2.13.0 pins); the rest of the group
# always comes from PyPI.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
COPY --from=requirements /requirements/model.txt /tmp/requirements/model.txt
RUN set -eux; \
    if [ -n "$TORCH_INDEX_URL" ]; then \
      pip install --index-url "$TORCH_INDEX_URL" -c /tmp/requirements/model.txt \
        $(grep -E '^torch(vision)?[=<>~! ]' /tmp/requirements/model.txt); \
    fi; \
    pip install -r /tmp/requirements/model.txt

# tini as PID 1 (shared layer too): it passes SageMaker's SIGTERM on and reaps orphaned processes,
# which a Python PID 1 would leave as zombies (MMS's Java frontend, for one).
RUN apt-get update && apt-get install -y --no-install-recommends tini \
 && apt-get clean && rm -rf /var/lib/apt/lists/*

# Java 17 for multi-model-server (slim images drop /usr/share/man, which the JRE's postinst needs).
RUN set -eux; \
    mkdir -p /usr/share/man/man1; \
    apt-get update; \
    apt-get install -y --no-install-recommends openjdk-17-jre-headless; \
    apt-get clean; rm -rf /var/lib/apt/lists/*; \
    java -version

# The serving group (multi-model-server, sagemaker-inference, ...).
COPY --from=requirements /requirements/serve.txt /tmp/requirements/serve.txt
RUN set -eux; \
    pip install -r /tmp/requirements/serve.txt -c /tmp/requirements/model.txt; \
    python -c "import torch, torchvision.ops, sagemaker_inference, mms; print('torch', torch.__version__)"

# `serve` on PATH: what SageMaker runs. The handler service and the MMS start-up live in
# container_serve; the packages are importable from anywhere through PYTHONPATH.
ENV PYTHONPATH=/opt/byoc
RUN printf '#!/bin/sh\nexec python -m container_serve.serve "$@"\n' > /usr/local/bin/serve \
 && chmod 0755 /usr/local/bin/serve
LABEL com.amazonaws.sagemaker.capabilities.multi-models=true \
      com.amazonaws.sagemaker.capabilities.accept-bind-to-port=true
EXPOSE 8080
ENTRYPOINT ["tini", "--"]
CMD ["serve"]

# ---- The MMS endpoint plugin (GET /execution-parameters), compiled with a JDK kept out of the image. ----
FROM runtime AS mms-plugin
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends openjdk-17-jdk-headless; \
    apt-get clean; rm -rf /var/lib/apt/lists/*
COPY byoc_common/__init__.py byoc_common/durable.py /build/byoc_common/
COPY container_serve/__init__.py /build/container_serve/__init__.py
COPY container_serve/mms_plugin /build/container_serve/mms_plugin
RUN PYTHONPATH=/build python -m container_serve.mms_plugin /opt/byoc/mms-plugins

# ---- The image: runtime + plugin jar + code. ----
FROM runtime
ENV BYOC_MMS_PLUGINS_DIR=/opt/byoc/mms-plugins
COPY --from=mms-plugin /opt/byoc/mms-plugins /opt/byoc/mms-plugins
COPY byoc_common /opt/byoc/byoc_common
COPY container_serve /opt/byoc/container_serve
