# syntax=docker/dockerfile:1
# stepshot images. Two targets:
#   docker build --target operator -t stepshot-operator .        # kopf operator, no torch
#   docker build --target trainer  -t stepshot-trainer  .        # torch (CUDA build from PyPI) + torchrun
# The trainer brings the InfiniBand user-space libraries (libibverbs + providers) NCCL uses;
# --build-arg RDMA_PACKAGES= builds it without them.
# CPU-only trainer (torch's CPU build from its own index):
#   docker build --target trainer --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu \
#     -t stepshot-trainer:cpu .
# Without a registry (scripts/build-images.sh, CI): buildah on a local Debian base
# (PYTHON_IMAGE/TRAINER_BASE) with a local torch wheel (PIP_FIND_LINKS, TORCH_VERSION=2.13.0+cpu).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG TRAINER_BASE=python:3.11-slim-bookworm

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
# requirements: each image's third-party requirements, read from pyproject.toml alone. They
# change rarely, so the layers that install them stay cached when only the code changes.
FROM base AS requirements
COPY pyproject.toml /tmp/pyproject.toml
RUN mkdir /requirements && python -c "import tomllib; p = tomllib.load(open('/tmp/pyproject.toml', 'rb'))['project']; \
[open(f'/requirements/{x}.txt', 'w').write('\n'.join(p['dependencies'] + p['optional-dependencies'][x]) + '\n') \
 for x in ('operator', 'trainer')]"

# ---------------------------------------------------------------------------------------
# wheel: builds the stepshot wheel once (all three packages).
FROM base AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY stepshot/ stepshot/
COPY trainer/ trainer/
COPY operator/ operator/
RUN pip wheel --no-deps --wheel-dir /wheels .

# ---------------------------------------------------------------------------------------
# operator: the kopf operator. The `operator` extra only: no torch, numpy, scipy or tqdm (the
# operator imports none of them), small image. The chart runs it with a read-only root
# filesystem and an emptyDir on /tmp.
FROM base AS operator
COPY --from=requirements /requirements/operator.txt /tmp/requirements.txt
RUN pip install -r /tmp/requirements.txt && rm /tmp/requirements.txt
COPY --from=wheel /wheels/ /wheels/
RUN pip install --no-deps "$(ls /wheels/stepshot-*.whl)" \
 && rm -rf /wheels \
 && pip check \
 && stepshot-operator --help >/dev/null \
 && ! python -c "import torch" 2>/dev/null \
 && ! python -c "import numpy" 2>/dev/null \
 && ! python -c "import tqdm" 2>/dev/null
USER 1000:1000
WORKDIR /home/stepshot
EXPOSE 8080 8081
ENTRYPOINT ["stepshot-operator"]

# ---------------------------------------------------------------------------------------
# trainer: runs the stage Jobs (`torchrun ... stepshot train`, `stepshot snapshot`,
# `stepshot evaluate`). TORCH_VERSION is the version the tests run (requirements/cpu.txt);
# PyPI's Linux wheels of it are the CUDA build. Torch and the `trainer` extra's requirements
# come before the code, as in the operator image.
FROM ${TRAINER_BASE} AS trainer
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://pypi.org/simple
ARG PIP_FIND_LINKS
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
# InfiniBand/RoCE: NCCL's IB transport loads libibverbs and the adapter's provider (mlx5, ...)
# at run time, and falls back to TCP sockets without them; ibv_devinfo (ibverbs-utils) shows
# what a pod sees. RDMA_PACKAGES="" leaves them out (a base image that brings its own).
# Before torch, so a code change does not reinstall them.
ARG RDMA_PACKAGES="libibverbs1 ibverbs-providers ibverbs-utils"
RUN if [ -n "${RDMA_PACKAGES}" ]; then \
      apt-get update -qq \
   && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ${RDMA_PACKAGES} \
   && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \
   && python -c "import ctypes; ctypes.CDLL('libibverbs.so.1')"; \
    fi
COPY --from=requirements /requirements/trainer.txt /tmp/requirements.txt
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}" \
 && echo "torch==${TORCH_VERSION}" > /tmp/torch-constraint.txt \
 && pip install --constraint /tmp/torch-constraint.txt -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt /tmp/torch-constraint.txt
# Fashion-MNIST (Debian's dataset-fashion-mnist, 30 MB) at the spec's default dataset.path, so
# that examples/fmnist-try.yaml runs on any cluster without a data volume (the README's path).
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends dataset-fashion-mnist \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \
 && test -r /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
COPY --from=wheel /wheels/ /wheels/
RUN pip install --no-deps "$(ls /wheels/stepshot-*.whl)" \
 && rm -rf /wheels \
 && pip check \
 && stepshot --help >/dev/null \
 && torchrun --help >/dev/null
# Ground truths and architecture sets: the operator mounts the spec at /opt/stepshot/spec/,
# so a spec's relative paths (../benchmarks/...) resolve here as they do in a checkout.
COPY benchmarks/groundtruth/*.json /opt/stepshot/benchmarks/groundtruth/
COPY benchmarks/archs/ /opt/stepshot/benchmarks/archs/
USER 1000:1000
WORKDIR /home/stepshot
ENTRYPOINT ["stepshot"]
