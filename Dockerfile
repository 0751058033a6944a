# earthsnap's image for SageMaker: the pipeline's processing and training jobs and every tuning trial
# (`earthsnap-job process ...`, `earthsnap-job train`), and the endpoints of registered models (`earthsnap-job serve`:
# SageMaker's serving contract, /ping and /invocations on port 8080, the model from /opt/ml/model).
#
# Every package comes from docker/requirements.lock, the pinned closure of settings.ini's requirements
# (tools/lock_image.py), installed with --no-deps: the build resolves nothing, and a job installs nothing when it
# runs, so jobs start at once and need no internet. The tag is the content: `earthsnap sagemaker image` prints it,
# `make image` builds it, the release stack's ImageProject and CI push it to ECR, and the compiler uses it.
FROM python:3.11.7-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

# The CPU build of torch is on PyTorch's own index; the rest is on PyPI.
COPY docker/requirements.lock /opt/earthsnap/requirements.lock
RUN pip install --no-deps --extra-index-url https://download.pytorch.org/whl/cpu -r /opt/earthsnap/requirements.lock

# The earthsnap package itself (its requirements are the lock above).
COPY setup.py settings.ini /opt/earthsnap/src/
COPY earthsnap /opt/earthsnap/src/earthsnap
RUN pip install --no-deps --no-build-isolation /opt/earthsnap/src && pip check

WORKDIR /opt/ml
EXPOSE 8080
ENTRYPOINT ["earthsnap-job"]
