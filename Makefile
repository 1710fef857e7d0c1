# Every target is a thin wrapper over `python -m keras_captioning <subcommand>`.
# `make install` / `make test` work on a fresh clone with nothing else installed.
# Pass a config with CONFIG=configs/<exp>.yaml and extra flags with ARGS="--set train.epochs=3".

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
CONFIG ?=
ARGS   ?=
RUN    ?=
cfg = --config $(or $(CONFIG),$(1))

.PHONY: install test test-slow test-all demo features train-attention train-vanilla evaluate \
        compare caption export coco-data bench lint clean

$(STAMP): setup.cfg setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,coco]"
	touch $(STAMP)

install: $(STAMP)

# The default suite runs in TEST_WORKERS processes (pytest-xdist): most of its time is
# single-threaded Python (graph tracing, Keras saving), so two processes use two cores.
# TEST_WORKERS=0 runs it in this process.
TEST_WORKERS ?= 2

test: $(STAMP)
	$(PY) -m pytest -q -m "not slow" -n $(TEST_WORKERS)

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

test-all: $(STAMP)
	$(PY) -m pytest -q

demo: $(STAMP)
	$(PY) -m keras_captioning demo $(ARGS)

features: $(STAMP)
	$(PY) -m keras_captioning features $(call cfg,configs/demo.yaml) $(ARGS)

train-attention: $(STAMP)
	$(PY) -m keras_captioning train $(call cfg,configs/demo_attention.yaml) $(ARGS)

train-vanilla: $(STAMP)
	$(PY) -m keras_captioning train $(call cfg,configs/demo_vanilla.yaml) $(ARGS)

evaluate: $(STAMP)
	$(PY) -m keras_captioning evaluate --run $(or $(RUN),runs/demo-attention) $(ARGS)

compare: $(STAMP)
	$(PY) -m keras_captioning compare $(or $(RUN),runs) $(ARGS)

export: $(STAMP)
	$(PY) -m keras_captioning export --run $(or $(RUN),runs/demo-attention) --out $(or $(OUT),$(or $(RUN),runs/demo-attention)/export) $(ARGS)

coco-data: $(STAMP)
	$(PY) -m keras_captioning coco-data --dest $(or $(DEST),data/coco) $(ARGS)

bench: $(STAMP)
	$(PY) -m benchmarks.run $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check keras_captioning tests benchmarks examples

clean:
	rm -rf runs features data/synthetic data/smoke bench_out
