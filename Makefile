# shopsense: `make demo` and `make test` set everything up on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export SHOPSENSE_HOME ?= $(CURDIR)/.shopsense
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export RAY_USAGE_STATS_ENABLED := 0
# DEMO_EXIT=1: run the whole demo, then stop the service and exit (for scripts).
DEMO_EXIT ?= 0
# RECIPE=full: train the best CPU model instead of the fast demo recipe when none exists.
RECIPE ?= demo
# The reviews `make demo` indexes for similar-review search when the index is empty.
DEMO_INDEX ?= blitzer-electronics
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install demo test serve stop train benchmarks clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	# torch first and pinned: a looser requirement can pull a multi-GB CUDA build.
	$(VENV)/bin/pip install -q torch==2.13.0
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

install: $(STAMP)

demo: install
	$(VENV)/bin/shopsense prepare --recipe $(RECIPE)
	@n=$$($(VENV)/bin/shopsense retrieval status --json | $(PY) -c 'import json,sys; print(json.load(sys.stdin)["dense"]["count"])') && \
	  if [ "$$n" = "0" ]; then $(VENV)/bin/shopsense index --data $(DEMO_INDEX); \
	  else echo "similar-review index: $$n reviews already indexed"; fi
	$(VENV)/bin/shopsense serve --background --host $(HOST) --port $(PORT)
	$(VENV)/bin/shopsense demo --url http://$(HOST):$(PORT)
	@if [ "$(DEMO_EXIT)" = "1" ]; then $(VENV)/bin/shopsense stop; else \
	  echo; echo "The service is running at http://$(HOST):$(PORT) (API docs: http://$(HOST):$(PORT)/docs)."; \
	  echo "Try: curl -s -X POST http://$(HOST):$(PORT)/v1/sentiment -H 'content-type: application/json' -d '{\"text\": \"Broke after two days.\"}'"; \
	  echo "Stop it with: $(VENV)/bin/shopsense stop"; fi

test: install
	$(PY) -m pytest -q --timeout 900

train: install
	$(VENV)/bin/shopsense train --recipe full

serve: install
	$(VENV)/bin/shopsense serve --host $(HOST) --port $(PORT)

stop:
	$(VENV)/bin/shopsense stop

benchmarks: install
	$(PY) benchmarks/quality.py
	$(PY) benchmarks/speed.py

clean:
	rm -rf $(VENV) .shopsense .pytest_cache
