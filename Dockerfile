# syntax=docker/dockerfile:1
# stepshot images. Two targets:
#   docker build --target operator -t stepshot-operator .        # kopf operator, no torch
#   docker build --target trainer  -t stepshot-trainer  .        # torch + torchrun, CUDA base
# CPU-only trainer (any Python >= 3.10 base without torch; torch comes from TORCH_INDEX_URL):
#   docker build --target trainer --build-arg TRAINER_BASE=python:3.11-slim-bookworm \
#     --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu -t stepshot-trainer:cpu .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG TRAINER_BASE=pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime

# ---------------------------------------------------------------------------------------
# base: slim Python, the non-root user (uid/gid 1000) and quiet pip/Python settings.
FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN groupadd --gid 1000 stepshot \
 && useradd --uid 1000 --gid 1000 --create-home --home-dir /home/stepshot \
      --shell /usr/sbin/nologin stepshot

# ---------------------------------------------------------------------------------------
# wheel: builds the stepshot wheel once (all three packages; extras pick the dependencies).
FROM base AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY stepshot/ stepshot/
COPY trainer/ trainer/
COPY operator/ operator/
RUN pip wheel --no-deps --wheel-dir /wheels .

# ---------------------------------------------------------------------------------------
# operator: the kopf operator. `.[operator]` only: no torch, small image. The chart runs it
# with a read-only root filesystem and an emptyDir on /tmp.
FROM base AS operator
COPY --from=wheel /wheels/ /wheels/
RUN pip install "$(ls /wheels/stepshot-*.whl)[operator]" \
 && rm -rf /wheels \
 && stepshot-operator --help >/dev/null \
 && ! python -c "import torch" 2>/dev/null
USER 1000:1000
WORKDIR /home/stepshot
EXPOSE 8080 8081
ENTRYPOINT ["stepshot-operator"]

# ---------------------------------------------------------------------------------------
# trainer: runs the stage Jobs (`torchrun ... stepshot train`, `stepshot snapshot`,
# `stepshot evaluate`). The base image brings torch (CUDA build by default); `.[trainer]`
# is installed with torch pinned to the version already there, so pip never replaces it.
FROM ${TRAINER_BASE} AS trainer
ARG TORCH_VERSION=2.5.1
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    HOME=/home/stepshot
RUN (getent group 1000 >/dev/null || groupadd --gid 1000 stepshot) \
 && (getent passwd 1000 >/dev/null || useradd --uid 1000 --gid 1000 --no-create-home \
      --home-dir /home/stepshot --shell /usr/sbin/nologin stepshot) \
 && mkdir -p /home/stepshot && chown 1000:1000 /home/stepshot
COPY --from=wheel /wheels/ /wheels/
RUN python -c "import torch" 2>/dev/null \
      || pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}" \
 && python -c "import torch; print('torch==' + torch.__version__)" > /tmp/torch-constraint.txt \
 && pip install --constraint /tmp/torch-constraint.txt "$(ls /wheels/stepshot-*.whl)[trainer]" \
 && rm -rf /wheels /tmp/torch-constraint.txt \
 && stepshot --help >/dev/null \
 && torchrun --help >/dev/null
# Ground truths and architecture sets: the operator mounts the spec at /opt/stepshot/spec/,
# so a spec's relative paths (../benchmarks/...) resolve here as they do in a checkout.
COPY benchmarks/groundtruth/*.json /opt/stepshot/benchmarks/groundtruth/
COPY benchmarks/archs/ /opt/stepshot/benchmarks/archs/
USER 1000:1000
WORKDIR /home/stepshot
ENTRYPOINT ["stepshot"]
