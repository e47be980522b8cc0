# prunekit: `make install`, then `make demo` and `make test`.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
PYTEST  := $(BIN)/python -m pytest

.PHONY: install demo test test-slow reproduce-ice reproduce-ice-smoke clean

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

reproduce-ice:  ## ICE-Pruning vs the standard pipeline as in the paper: resnet56, CIFAR-10, ratios 0.6/0.7/0.8 (a GPU; downloads CIFAR-10)
	$(BIN)/python scripts/bench_ice.py --setting paper --model resnet56 --dataset cifar10 \
		--ratios 0.6 0.7 0.8 --out outputs/reproduce-ice --json outputs/reproduce-ice/results.json \
		-- pretrain.epochs=160 pretrain.lr=0.1

reproduce-ice-smoke:  ## the same comparison on digits with resnet18 at ratio 0.5, on CPU in minutes
	$(BIN)/python scripts/bench_ice.py --setting both --ratios 0.5 --out outputs/reproduce-ice-smoke \
		--json outputs/reproduce-ice-smoke/results.json

clean:  ## run outputs and caches of this checkout (not the dense-model cache)
	rm -rf outputs/20* outputs/multirun multirun .pytest_cache build *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
