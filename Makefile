# Entry points behind the README's two commands. Everything runs from the project venv.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# Some machines point pip at a local folder holding a CPU-only torch wheel whose build does not
# match PyPI's torchvision; an empty find-links folder makes pip take both from the index.
PIP_ENV := PIP_FIND_LINKS=$(CURDIR)/.pip-empty-find-links
PYTEST_ARGS ?=

.PHONY: setup system-deps venv pipeline test test-fast lint docker-engine images clean

setup: system-deps venv

# Debian packages: Java 17 for multi-model-server, the Fashion-MNIST demo images for the
# offline pipeline, Chromium to render the profiler report in tests.
system-deps:
	@bash scripts/install_system_deps.sh

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3.11 -m venv $(VENV) || python3 -m venv $(VENV)
	mkdir -p .pip-empty-find-links
	$(PIP_ENV) $(VENV)/bin/pip install -q --upgrade pip
	$(PIP_ENV) $(VENV)/bin/pip install -q -e ".[dev]"
	# smdebug-rulesconfig (a dependency of the sagemaker SDK) installs its own tests as a top-level
	# package `tests`, which would shadow this repository's tests/ (tests.helpers) for every test.
	rm -rf $(VENV)/lib/python*/site-packages/tests
	touch $@

# The main job: the whole pipeline, locally, on the offline demo dataset.
pipeline: setup
	$(VENV)/bin/byoc pipeline

test: setup
	$(VENV)/bin/pytest $(PYTEST_ARGS)

test-fast: venv
	$(VENV)/bin/pytest -m "not slow and not container" $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check .

docker-engine:
	bash ../shared/tools/docker-offline.sh

# Each image's torch: the Dockerfile's default (training CUDA 12.6, serving CPU-only) unless
# TRAIN_TORCH_INDEX_URL / SERVE_TORCH_INDEX_URL is set; set empty, PyPI (what this offline machine
# reaches): `make images TRAIN_TORCH_INDEX_URL= SERVE_TORCH_INDEX_URL=`.
torch_index_arg = $(if $(filter undefined,$(origin $(1))),,--build-arg TORCH_INDEX_URL=$($(1)))
images:
	docker build --network host $(call torch_index_arg,TRAIN_TORCH_INDEX_URL) -f docker/train.Dockerfile -t byoc-train:latest .
	docker build --network host $(call torch_index_arg,SERVE_TORCH_INDEX_URL) -f docker/serve.Dockerfile -t byoc-serve:latest .

clean:
	rm -rf runs/ .pytest_cache
