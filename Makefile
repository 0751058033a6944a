# earthsnap: the two commands a newcomer needs are `make demo` and `make test`.
# Each creates .venv when missing and installs the pinned dependencies first.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The install stamps change whenever the pins change, so a changed settings.ini reinstalls. `make demo` and `make lab`
# install only what the local path needs (earthsnap and JupyterLab: the `lab` extra); `make test` and the developer
# targets add the test tools, the docs toolchain, the SageMaker SDK and moto, and the model zoo (`dev`, `docs`,
# `sagemaker`, `zoo`).
# --no-compile: pip would compile every module of every package it installs, most of which nothing ever imports (half
# the install's CPU time); Python compiles a module the first time it is imported, once.
PINS := $(shell cat settings.ini setup.py | sha256sum | cut -c1-12)
LOCAL := $(VENV)/.installed-local-$(PINS)
FULL := $(VENV)/.installed-full-$(PINS)
PIPELINE_NBS := $(wildcard pipeline/*.ipynb)

.PHONY: demo test test-fast install install-local pip-install check format docs export bench clean-venv image image-push image-lock lab
.DEFAULT_GOAL := help

help:
	@echo "make demo   generate the demo data and run the local pipeline end to end (installs only what that needs)"
	@echo "make test   check notebooks and library agree, then run every test (installs chromium for the console's browser tests)"
	@echo "make test-fast  the library's notebooks and the quick tests (a few minutes): the inner loop while you work"
	@echo "make lab    start JupyterLab on the project (the place to write nbs/ and pipeline/ notebooks)"
	@echo "make docs   build the documentation site into _docs/site (the library's notebooks executed, CLI and API references)"
	@echo "make bench  run the benchmarks in bench/ (figures as ratios against a baseline)"
	@echo "make export regenerate earthsnap/, its project template and README.md from nbs/ and pipeline/ (for developers)"
	@echo "make image  build earthsnap's image for SageMaker jobs and endpoints (image-push: and push it; image-lock: re-pin it)"

install-local: $(LOCAL)
	@$(BIN)/python tools/install_hooks.py

install: $(FULL)
	@$(BIN)/python tools/install_hooks.py

$(LOCAL): settings.ini setup.py
	@if [ -e "$(FULL)" ]; then touch $@; else $(MAKE) --no-print-directory pip-install EXTRAS=lab STAMPS="$@"; fi

$(FULL): settings.ini setup.py
	@$(MAKE) --no-print-directory pip-install EXTRAS=dev,docs,sagemaker,lab,zoo STAMPS="$@ $(LOCAL)"

pip-install:
	@test -x $(BIN)/python || { echo "creating $(VENV) with $$($(PYTHON) --version)"; $(PYTHON) -m venv $(VENV); }
	@echo "installing pinned dependencies ($(EXTRAS)) into $(VENV) (a few minutes the first time; log: $(VENV)/install.log)"
	@{ $(BIN)/python -m pip install --upgrade pip==26.3 setuptools==84.2.1 wheel==0.48.0 \
	   && $(BIN)/python -m pip install --no-compile torch==2.13.0 \
	   && $(BIN)/python -m pip install --no-compile -e ".[$(EXTRAS)]" \
	   && $(BIN)/python -m pip check; } > $(VENV)/install.log 2>&1 \
	 || { tail -n 30 $(VENV)/install.log; echo "install failed: see $(VENV)/install.log"; exit 1; }
	@rm -f $(VENV)/.installed-*; touch $(STAMPS)
	@echo "installed"

demo: install-local
	$(BIN)/earthsnap demo

# JupyterLab on the project, with its environment as the kernel: where nbs/ and pipeline/ notebooks are written.
lab: install-local
	$(BIN)/earthsnap lab

# git's notebook filter (.gitconfig) runs once per notebook the first time git looks at a fresh checkout (about 20 s
# here); later calls take milliseconds. The run records ask git for the code version, from several processes at once,
# which then each paid that first look: one `git status` first refreshes the index for all of them.
check: install
	@git status --porcelain > /dev/null 2>&1 || true
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED) || { echo "run make format to lay these out as ruff format does"; exit 1; }
	$(BIN)/python tools/check_sources.py
	$(BIN)/lint-imports

# The sources people write, linted by ruff (ruff.toml: pyflakes, pycodestyle, import order, bugbear; 120 columns),
# notebooks cell by cell. `make format` lays them out and sorts their imports; a string or comment over 120 columns
# is split by hand. earthsnap/ is generated from nbs/ (make export).
LINTED := nbs pipeline tests tools bench
format: install
	$(BIN)/ruff check --fix --select I001,E401,F541,W291,W292,W293 $(LINTED)
	$(BIN)/ruff format $(LINTED)

# Hard limits, so a hung test fails with a message instead of holding CI: 15 min for the docs build, 5 min for any
# one pytest test (the notebooks, the fault-injection trials and the site's tests set longer ones for themselves),
# 10 min for any one cell of a pipeline notebook.
# make test is one pytest run: the tests, the pipeline's notebooks (nbval) and the library's notebooks
# (tests/test_notebooks.py executes each as nbdev_test does; tests/test_docs.py renders the site from those runs, so
# the notebooks run once for both). Tests wait on kernels, servers and subprocesses much of the time, so pytest takes
# two workers more than there are cores (4 on 2 cores), at most 4. Each worker is handed whole files, or single tests
# where a file is split, the longest first (tests/conftest.py: LONGEST_FIRST), so that no worker is left alone with a
# long one at the end. The 25 slowest tests are listed at the end, to see where the time goes.
WORKERS := $(shell echo $$(( $$(nproc) + 1 )))
TEST_WORKERS := $(shell echo $$(( $$(nproc) + 2 )))
# Many processes share the cores at once: each keeps torch (and numpy's BLAS) to one thread. With one thread per core
# each, they spun waiting on each other: the tuning notebook took 110 s in the docs build instead of 33 s.
test test-fast docs: export OMP_NUM_THREADS := 1
# The console's tests drive a real browser: Debian's chromium (Playwright's own browser builds cannot be downloaded here).
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	@echo "installing chromium (Debian's package) for the console's browser tests"
	@{ apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; } > /tmp/earthsnap-apt.log 2>&1 \
	 || { tail -n 20 /tmp/earthsnap-apt.log; echo "could not install chromium: see /tmp/earthsnap-apt.log (run as root, or install it yourself)"; exit 1; }

# The documentation site (_docs/site) on its own: the library's notebooks executed as nbdev_test executes them, the
# pipeline's notebooks, the CLI and API references, rendered by Sphinx.
docs: install
	timeout --kill-after=10 900 $(BIN)/python tools/build_docs.py --workers $(WORKERS) || { echo "make docs failed or ran past 900 s"; exit 1; }

PYTEST := $(BIN)/python -m pytest -p no:cacheprovider --timeout=300 -n $(TEST_WORKERS) --maxprocesses=4 --dist loadfile

test: check $(CHROMIUM)
	rm -rf _docs/executed _docs/site
	$(PYTEST) --durations=25 tests $(PIPELINE_NBS) $(if $(PIPELINE_NBS),--nbval-lax --nbval-cell-timeout=600,)

# The inner loop: the library's notebooks and the tests not marked slow (a few minutes). make test, which CI runs,
# runs these and the rest.
test-fast: check
	$(PYTEST) -m "not slow" tests

bench: install
	$(BIN)/python bench/demodata.py
	$(BIN)/python bench/demodata_learnability.py
	$(BIN)/python bench/executor.py
	$(BIN)/python bench/training.py
	$(BIN)/python bench/endpoint.py
	$(BIN)/python bench/router.py
	$(BIN)/python bench/console.py
	$(BIN)/python bench/preprocess.py
	$(BIN)/python bench/drift.py
	$(BIN)/python bench/loop.py
	$(BIN)/python bench/chaos.py
	$(BIN)/python bench/transfer.py

export: install
	$(BIN)/nbdev_export
	$(BIN)/nbdev_clean
	$(BIN)/nbdev_clean --fname pipeline
	$(BIN)/python tools/sync_template.py
	$(BIN)/python tools/make_readme.py

# earthsnap's image for SageMaker jobs and endpoints (Dockerfile), tagged by its content: `earthsnap sagemaker image`
# names it (sagemaker_image_repository:<tag>), and `--gpu` its GPU variant (<tag>-gpu, torch's CUDA build), which jobs on
# ml.g* and ml.p* instances run. image builds both; image-push pushes each unless the registry has its tag already;
# image-lock writes docker/requirements.lock and docker/requirements-gpu.lock again after a pin changed in settings.ini.
IMAGE_VARIANTS = cpu gpu
# Built for SageMaker's x86 instances on any machine: a tag is the content, and ECR's repository is immutable, so an
# arm64 build pushed once would keep the tag for good.
IMAGE_PLATFORM = linux/amd64

image: install
	@for v in $(IMAGE_VARIANTS); do \
	  docker build --build-arg VARIANT=$$v --platform $(IMAGE_PLATFORM) -t "$$($(BIN)/earthsnap sagemaker image $$([ $$v = gpu ] && echo --gpu))" . \
	  || exit 1; \
	done

image-push: install
	@for v in $(IMAGE_VARIANTS); do \
	  IMAGE="$$($(BIN)/earthsnap sagemaker image $$([ $$v = gpu ] && echo --gpu))" || exit 1; \
	  if docker manifest inspect "$$IMAGE" > /dev/null 2>&1; then echo "$$IMAGE is in the registry already"; \
	  else docker build --build-arg VARIANT=$$v --platform $(IMAGE_PLATFORM) -t "$$IMAGE" . && docker push "$$IMAGE" || exit 1; fi; \
	done

image-lock: install
	$(BIN)/python tools/lock_image.py

clean-venv:
	rm -rf $(VENV)
