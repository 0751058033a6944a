# earthsnap's image for SageMaker: the pipeline's processing and training jobs and every tuning trial
# (`earthsnap-job process ...`, `earthsnap-job train`), and the endpoints of registered models (`earthsnap-job serve`:
# SageMaker's serving contract, /ping and /invocations on port 8080, the model from /opt/ml/model).
#
# Every package comes from docker/requirements.lock, the pinned closure of settings.ini's requirements
# (tools/lock_image.py), installed with --no-deps: the build resolves nothing, and a job installs nothing when it
# runs, so jobs start at once and need no internet. The tag is the content: `earthsnap sagemaker image` prints it,
# `make image` builds it, the release stack's ImageProject and CI push it to ECR, and the compiler uses it.
#
# Two variants of one build: VARIANT=cpu (the default) and VARIANT=gpu, for ml.g* and ml.p* instances
# (`earthsnap sagemaker image --gpu`), whose lock, docker/requirements-gpu.lock, is the CPU one with torch's CUDA build
# and NVIDIA's libraries in place of its CPU build. Nothing else differs; the GPU driver is the instance's.
#
# The base is Docker's official Python image from ECR Public's mirror of Docker Hub's library (the same image, by the
# same tag), which CodeBuild pulls without Docker Hub's rate limits on anonymous pulls. `make image` builds it for
# linux/amd64 whatever the machine (SageMaker's instances are x86; the tag is the content and ECR's repository is
# immutable, so an arm64 build pushed once would hold the tag for good).
FROM public.ecr.aws/docker/library/python:3.11.7-slim-bookworm
ARG VARIANT=cpu

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

# A C++ compiler: torch.compile (the training's `compile` parameter) builds its kernels with it, and triton its
# launchers on GPUs.
RUN apt-get update && apt-get install -y --no-install-recommends g++ && rm -rf /var/lib/apt/lists/*

# torch's CPU build is on PyTorch's own index; its CUDA build, like the rest, is on PyPI.
COPY docker/requirements.lock docker/requirements-gpu.lock /opt/earthsnap/
RUN if [ "$VARIANT" = gpu ]; then pip install --no-deps -r /opt/earthsnap/requirements-gpu.lock; \
    elif [ "$VARIANT" = cpu ]; then \
      pip install --no-deps --extra-index-url https://download.pytorch.org/whl/cpu -r /opt/earthsnap/requirements.lock; \
    else echo "VARIANT is cpu or gpu, not $VARIANT" >&2; exit 1; fi

# The earthsnap package itself (its requirements are the lock above).
COPY setup.py settings.ini /opt/earthsnap/src/
COPY earthsnap /opt/earthsnap/src/earthsnap
RUN pip install --no-deps --no-build-isolation /opt/earthsnap/src && pip check

WORKDIR /opt/ml
EXPOSE 8080
ENTRYPOINT ["earthsnap-job"]
