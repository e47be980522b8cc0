# prunekit: `make install`, then `make demo` and `make test`.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
PYTEST  := $(BIN)/python -m pytest

.PHONY: install demo test test-slow clean

install:  ## a virtualenv with prunekit (editable) and the test tools
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e ".[dev]"

demo:  ## the default run: resnet18 on digits, gradual pruning to 50%, offline
	$(BIN)/prune-run

test:  ## the fast suite (what CI runs)
	$(PYTEST) -q

test-slow:  ## the long end-to-end runs (paper-scale checks of the issues' "done when")
	$(PYTEST) -q -m slow

clean:  ## run outputs and caches of this checkout (not the dense-model cache)
	rm -rf outputs/20* outputs/multirun multirun .pytest_cache build *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
