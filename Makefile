# The two commands a newcomer needs: `make demo` (main job end to end) and `make test`.
# Both create .venv/ from the exact pins in requirements.lock when it is missing.
SHELL := /bin/bash
PY := .venv/bin/python
export RECSYS_DATA_DIR ?= $(abspath ../shared/data)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: venv demo test clean

venv: .venv/.installed

.venv/.installed: requirements.lock pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --no-deps -r requirements.lock
	$(PY) -m pip install -q --no-deps -e .
	touch $@

demo: venv
	FAST=$(FAST) bash scripts/demo.sh

test: venv
	$(PY) -m pytest -q tests

clean:
	rm -rf .venv runs
