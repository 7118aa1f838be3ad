# eoseg: two commands set everything up on a fresh machine.
#   make demo   - create .venv, install (pinned CPU torch first), run the main job on a real scene
#   make test   - same set-up, then the test suite (.ci/run calls this)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SHARED_DATA ?= $(abspath ../shared/data)
OUT ?= out/demo
PYTEST_ARGS ?=

export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export PREFECT_LOGGING_EXTRA_LOGGERS ?= eoseg
export EOSEG_SHARED_DATA ?= $(SHARED_DATA)

.PHONY: install demo demo-spacenet test test-slow test-all lint bench gpu-check clean help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# torch first, pinned: an unpinned torch requirement would pull a multi-GB CUDA build.
$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	@touch $@

install: $(VENV)/.installed  ## create .venv and install eoseg with its pinned dependencies

# The demo's small CPU training configuration (the paper's I=2, J=50 on every patch is for GPU runs):
DEMO_TRAINING ?= --epochs 1 --iterations 10 --batch-size 8 --patch-size 64 --max-patches 64

demo: install  ## segment the real LoveDA scene end to end; prints the outputs, per-class scores and a k-means baseline
	@test -f "$(SHARED_DATA)/loveda/rural_1.tif" || { echo "error: $(SHARED_DATA)/loveda/rural_1.tif not found; set SHARED_DATA=/path/to/shared/data"; exit 2; }
	$(BIN)/eoseg run "$(SHARED_DATA)/loveda/rural_1.tif" --out "$(OUT)/loveda_map.tif" \
		--reference "$(SHARED_DATA)/loveda/rural_1.labels.tif" --ignore 0 --class-names loveda --baseline kmeans \
		--chunk-size 512 $(DEMO_TRAINING) --overwrite

demo-spacenet: install  ## the second example: SpaceNet buildings vs rest (one panchromatic band; a hard case)
	@test -f "$(SHARED_DATA)/spacenet/sample_geotiff.tif" || { echo "error: $(SHARED_DATA)/spacenet/sample_geotiff.tif not found; set SHARED_DATA=/path/to/shared/data"; exit 2; }
	$(BIN)/eoseg run "$(SHARED_DATA)/spacenet/sample_geotiff.tif" --out "$(OUT)/spacenet_map.tif" \
		--reference "$(SHARED_DATA)/spacenet/geotiff_labels.geojson" --class-names spacenet --baseline kmeans \
		--chunk-size 512 $(DEMO_TRAINING) --overwrite

lint: install  ## ruff (lint and format) and mypy --strict, as .ci/run and pre-commit run them
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: install  ## the default test run: every test not marked slow (real Prefect server, Dask LocalCluster, loopback S3)
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

test-slow: install  ## only the tests marked slow (production guide, cluster scaling, long pipelines); .ci/run runs them too
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

test-all: install  ## every test, slow ones included
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Every speed benchmark; each rewrites its benchmarks/results/NAME.{md,json} with the machine and load.
bench: install  ## speed benchmarks: command overhead, tile/mosaic, inference and training fp32/bf16, clusterer, scaling (~1 h on 2 cores)
	$(BIN)/python benchmarks/bench_command_overhead.py
	$(BIN)/python benchmarks/bench_tile_mosaic.py --sizes 0.25x,1x,4x
	$(BIN)/python benchmarks/bench_inference.py
	$(BIN)/python benchmarks/bench_training.py
	$(BIN)/python benchmarks/bench_clusterer_speed.py
	$(BIN)/python benchmarks/bench_scaling.py

gpu-check:  ## on a GPU machine (python3 with CUDA torch + numpy): tests, throughput -> benchmarks/results/gpu_check.*
	bash benchmarks/gpu_check.sh

clean:  ## remove demo outputs (keeps .venv)
	rm -rf out
