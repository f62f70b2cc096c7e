# The two commands: `make run` (whole local stack) and `make test` (whole suite).
# Everything else is installed by `make install`, idempotently and quickly when nothing changed.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
TORCH_VERSION := $(shell sed -n 's/.*"torch==\([^"]*\)".*/\1/p' pyproject.toml)

VENV_STAMP  := $(VENV)/.installed
KAFKA_STAMP := infra/kafka/lib/.fetched
SPARK_STAMP := infra/spark/jars/.fetched
MVN := mvn -q -B

.PHONY: help install install-browser run test test-fast lint format kafka-up kafka-down \
        kafka-status train evaluate evaluate-real score clean bench fuzz

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*?## "}{printf "  make %-16s %s\n", $$1, $$2}'

install: $(VENV_STAMP) $(KAFKA_STAMP) $(SPARK_STAMP) ## Python env (.venv), Kafka and Spark-Kafka jars

# torch goes in first and alone, pinned: pip then takes a local CPU wheel where the
# machine's pip configuration offers one, and the project install finds it satisfied
# (no resolver can pull a second torch on top of it).
$(VENV_STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "torch==$(TORCH_VERSION)"
	$(PY) -m pip install -q -e '.[dev,eval]'
	@n=$$(ls -d $(VENV)/lib/python3*/site-packages/torch-*.dist-info | wc -l); \
	  test "$$n" = 1 || { echo "expected one torch, found $$n"; exit 1; }
	@touch $@

$(KAFKA_STAMP): infra/kafka/pom.xml
	rm -rf infra/kafka/lib
	$(MVN) -f infra/kafka/pom.xml dependency:copy-dependencies
	@touch $@

$(SPARK_STAMP): infra/spark/pom.xml
	rm -rf infra/spark/jars
	$(MVN) -f infra/spark/pom.xml dependency:copy-dependencies
	@touch $@

install-browser: ## Debian's chromium + chromedriver for the browser tests (needs root or sudo)
	@if command -v chromium >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null; \
	else echo "install Debian's browser first: sudo apt-get install -y chromium chromium-driver"; exit 1; fi

run: install ## start Kafka, the streaming job, the dashboard and the producer; Ctrl-C stops all
	$(PY) -m app.stack --fresh

test: install install-browser ## lint + type check + the whole test suite (unit, contract, integration, browser)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest

test-fast: install ## the quick inner loop: everything but Kafka/Spark/browser tests
	$(VENV)/bin/pytest -m "not integration and not browser"

lint: install ## ruff lint + format check + mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: install ## apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

kafka-up: install ## start the local KRaft broker (127.0.0.1:9092, KAFKA_PORT) and create the topics
	$(PY) -m app.kafka_local up --topics

kafka-down: install ## stop the local broker
	$(PY) -m app.kafka_local down

kafka-status: install ## is the local broker running?
	$(PY) -m app.kafka_local status

TRAIN_DETECTOR ?= all
train: install ## train FCVAE + VAE+GAN + ensemble for the demo combos into models/ (TRAIN_DETECTOR=fcvae|vaegan|all)
	$(PY) -m app.train --detector $(TRAIN_DETECTOR) --output-dir models

evaluate: install ## test-split metrics (metrics.json, metrics.md) and plots into plots/eval
	$(PY) -m app.evaluate detailed --model-dir models --output-dir plots/eval

# The 30-minute budget of a 2-core machine: 18 series (--subset default) and the product's
# models capped at 5 epochs; EVAL_REAL_ARGS='--subset all' (and no cap) for the full run.
EVAL_REAL_ARGS ?= --subset default --product-args "--epochs 5 --kl-warmup-epochs 2"
evaluate-real: install ## real labelled series (../shared/realdata): product vs library baselines → plots/real (~13 min on 2 cores)
	$(PY) -m app.evaluate_real --data-root ../shared/realdata $(EVAL_REAL_ARGS)

score: install ## score the whole demo CSV causally into scores.csv (as the stream would)
	$(PY) -m app.score --model-dir models --output scores.csv

FUZZ_EXAMPLES ?= 20000
fuzz: install ## a long fuzz run of the ingest validator (CI runs 300 examples; FUZZ_EXAMPLES=N)
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(VENV)/bin/pytest -q -p no:cacheprovider --timeout 3600 \
	    tests/property/test_ingest_fuzz.py

BENCH_ARGS ?=
bench: install ## benchmarks: scoring, training, streaming (~10 min) → bench/results/latest.{json,md} (BENCH_ARGS=--quick)
	$(PY) bench/run.py $(BENCH_ARGS)

clean: ## remove run-time state (Kafka data, checkpoints, plots); keeps .venv and jars
	rm -rf .run plots .pytest_cache
