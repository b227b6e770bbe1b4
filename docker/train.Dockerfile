# SageMaker training image: fine-tunes the classifier with the sagemaker-training toolkit.
#
#   docker build --network host -f docker/train.Dockerfile -t byoc-train:latest .
#   docker run --network host -v "$PWD/job/opt/ml:/opt/ml" byoc-train:latest train
#
# SageMaker starts the container as `docker run IMAGE train`: `train` is the toolkit's entry
# point. It reads /opt/ml/input/config/*.json and runs, in /opt/ml/code,
# `python train.py --<hyperparameter> <value> ...` (SAGEMAKER_PROGRAM=train.py).
#
# Build arguments:
#   BASE_IMAGE       any image with Python 3.11 (with its venv module) on PATH as `python3`
#                    (default python:3.11-slim-bookworm; a CUDA runtime base for GPU instances).
#   TORCH_INDEX_URL  package index for torch/torchvision. Default: PyTorch's CUDA 12.6 index. SageMaker's
#                    GPU training instances run CUDA 12 drivers (AWS's own PyTorch training containers
#                    are cu12x builds), and a CUDA 12.6 torch runs on any driver >= 525 (CUDA minor
#                    version compatibility) and still carries sm_70 kernels (ml.p3's V100); torch 2.13.0
#                    has no cu128 build (dropped at 2.12), and cu129 drops sm_70 for sm_100 (ml.p6).
#                    The same image runs on CPU instances. Empty = pip's default index (PyPI), whose
#                    torch 2.13.0 is the CUDA 13.0 build (needs driver >= 580): what the offline tests
#                    here build with (tests/containers/conftest.py).
#   SERVE_IMAGE_URI  the serving image built together with this one: `docker run IMAGE serve` (what
#                    the SageMaker SDK runs for deploy() without image_uri) names it (train_entrypoint.py).
#
# Layer order: torch (shared with serve.Dockerfile), group dependencies (rebuilt only when
# pyproject.toml changes), then the code, so a code change rebuilds in seconds.
ARG BASE_IMAGE=python:3.11-slim-bookworm

# ---- Dependency lists, read from pyproject.toml (the only place they are written down). ----
FROM ${BASE_IMAGE} AS requirements
WORKDIR /requirements
COPY docker/pyproject_requirements.py pyproject.toml ./
RUN python3 pyproject_requirements.py pyproject.toml model > model.txt \
 && python3 pyproject_requirements.py pyproject.toml train --minus model > train.txt

# ---- The image. ----
FROM ${BASE_IMAGE}
# Everything Python goes into a virtualenv at /opt/venv, first on PATH: the same layout whatever
# way the base image installed its Python (python.org build, Debian/Ubuntu package, CUDA base).
ENV VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv "$VIRTUAL_ENV"

# The `model` group (torch, torchvision, pillow, numpy, ...): the same instructions open
# serve.Dockerfile, so both images share this multi-GB layer when they are built with the same
# TORCH_INDEX_URL (the offline tests do). With TORCH_INDEX_URL set, torch and torchvision come from
# that index first (e.g. 2.13.0+cu126, which satisfies the ==2.13.0 pins); the rest of the group
# always comes from PyPI.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126
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

# The training group (sagemaker-training, smdebug, ...). sagemaker-training and smdebug's
# pyinstrument compile C extensions: the compiler and headers are installed and purged in this
# same layer, so the image keeps no build tools.
COPY --from=requirements /requirements/train.txt /tmp/requirements/train.txt
RUN set -eux; \
    build_deps="gcc libc6-dev"; \
    include_dir="$(python -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"; \
    [ -f "$include_dir/Python.h" ] || build_deps="$build_deps python3-dev"; \
    apt-get update; \
    apt-get install -y --no-install-recommends $build_deps; \
    pip install -r /tmp/requirements/train.txt -c /tmp/requirements/model.txt; \
    apt-get purge -y --auto-remove $build_deps; \
    apt-get clean; rm -rf /var/lib/apt/lists/*; \
    python -c "import torch, torchvision.ops, smdebug, sagemaker_training; print('torch', torch.__version__)"

# The code. The toolkit runs /opt/ml/code/$SAGEMAKER_PROGRAM (SageMaker mounts input/, model/,
# output/ and checkpoints/ under /opt/ml, not code/). The packages are importable from anywhere
# through PYTHONPATH. BYOC_TRAIN_SCRIPT is the entry point's spare copy of train.py for runs that
# mount a whole /opt/ml tree over the image's (see train_entrypoint.py). SAGEMAKER_TRAINING_MODULE is
# the toolkit's launcher hook: container_train/launch.py runs train.py under the toolkit's torchrun
# runner when the job has more than one host or GPU, and as the toolkit alone would otherwise.
ENV PYTHONPATH=/opt/byoc \
    SAGEMAKER_PROGRAM=train.py \
    SAGEMAKER_TRAINING_MODULE=container_train.launch:main \
    SAGEMAKER_SUBMIT_DIRECTORY=/opt/ml/code \
    BYOC_TRAIN_SCRIPT=/opt/byoc/container_train/train.py
# Under tini: runs the toolkit and passes SageMaker's SIGTERM on to train.py (see the file).
COPY docker/train_entrypoint.py /opt/byoc/train_entrypoint.py
COPY byoc_common /opt/byoc/byoc_common
COPY container_train /opt/byoc/container_train
COPY container_train/train.py /opt/ml/code/train.py

# Last, so a new serving image's tag rebuilds nothing above it.
ARG SERVE_IMAGE_URI=
ENV BYOC_SERVE_IMAGE=${SERVE_IMAGE_URI}

ENTRYPOINT ["tini", "--", "python", "/opt/byoc/train_entrypoint.py"]
CMD ["train"]
