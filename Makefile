# prunekit: `make install`, then `make demo` and `make test`.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
PYTEST  := $(BIN)/python -m pytest

.PHONY: install data demo check-wheel test test-slow reproduce-ice reproduce-ice-smoke reproduce-autocompress \
        reproduce-autocompress-smoke reproduce-gradual reproduce-gradual-smoke reproduce-slr \
        reproduce-slr-smoke compare bench-admm \
        bench-speedup bench-deploy bench-loop bench-stop bench-gpu verdicts verdicts-full verdicts-gpu report-screenshot docs clean

install:  ## a virtualenv with prunekit (editable) and the test tools
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e ".[dev]"

FASHION_MNIST := /usr/share/datasets/fashion-mnist
data:  ## Fashion-MNIST, the offline benchmark data: Debian's dataset-fashion-mnist (apt, as root)
	@if [ -f $(FASHION_MNIST)/train-images-idx3-ubyte.gz ]; then \
		echo "Fashion-MNIST is in $(FASHION_MNIST)"; \
	elif [ "$$(id -u)" = 0 ]; then \
		apt-get update && apt-get install -y dataset-fashion-mnist; \
	else \
		echo "make data installs a Debian package: run  sudo apt-get install dataset-fashion-mnist"; \
		echo "(or put the four IDX files in a folder and pass dataset.path=FOLDER)"; exit 1; \
	fi

demo:  ## the default run: resnet18 on digits, gradual pruning to 50%, offline
	$(BIN)/prune-run

REPORT  ?= outputs/report.html
SHOT    ?= docs/img/report.png
report-screenshot:  ## a PNG of a report.html in headless Chromium (REPORT=..., SHOT=docs/img/report.png)
	@command -v chromium >/dev/null || { echo "needs Debian's chromium (apt-get install chromium)"; exit 1; }
	@mkdir -p $(dir $(SHOT))
	chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1760,1250 \
		--virtual-time-budget=5000 --screenshot=$(abspath $(SHOT)) file://$(abspath $(REPORT))

check-wheel:  ## the wheel, installed (not editable, no dev extra) in a fresh venv, run from outside the checkout (CI runs it)
	PY=$(BIN)/python scripts/check_wheel.sh

TEST_WORKERS ?= 2
SITE ?= outputs/site
test:  ## lint, the architecture map's figures, the docs site (strict), then the fast suite on TEST_WORKERS processes (what CI runs)
	$(BIN)/ruff check prunekit tests scripts
	$(BIN)/python scripts/code_stats.py --check docs/architecture.md
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir $(SITE)
	$(PYTEST) -q -n $(TEST_WORKERS) --dist loadgroup

docs:  ## preview the documentation site (MkDocs, Material theme) at http://127.0.0.1:8000
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

test-slow:  ## the long end-to-end runs (paper-scale checks of the issues' "done when")
	$(PYTEST) -q -m slow

reproduce-ice:  ## ICE-Pruning vs the standard pipeline as in the paper: resnet56, CIFAR-10, ratios 0.6/0.7/0.8 (a GPU; downloads CIFAR-10)
	$(BIN)/python scripts/bench_ice.py --setting paper --model resnet56 --dataset cifar10 \
		--ratios 0.6 0.7 0.8 --out outputs/reproduce-ice --json outputs/reproduce-ice/results.json \
		-- pretrain.epochs=160 pretrain.lr=0.1

reproduce-ice-smoke:  ## the same comparison on digits with resnet18 at ratio 0.5, on CPU in minutes
	$(BIN)/python scripts/bench_ice.py --setting both --ratios 0.5 --out outputs/reproduce-ice-smoke \
		--json outputs/reproduce-ice-smoke/results.json

reproduce-autocompress:  ## AutoCompress as the paper: VGG-16 and ResNet-18 on CIFAR-10 at ~52x (a GPU; downloads CIFAR-10)
	$(BIN)/prune-run -m experiment=autocompress_vgg16_cifar10,autocompress_resnet18_cifar10 \
		hydra.sweep.dir=outputs/reproduce-autocompress

reproduce-autocompress-smoke:  ## AutoCompress (0.8) and ADMM (0.9) on digits with resnet18, on CPU in minutes
	$(BIN)/prune-run method=autocompress model=resnet18 dataset=digits sparsity=0.8 \
		hydra.run.dir=outputs/reproduce-autocompress-smoke/autocompress
	$(BIN)/prune-run method=admm model=resnet18 dataset=digits sparsity=0.9 \
		hydra.run.dir=outputs/reproduce-autocompress-smoke/admm

# SLR vs ADMM from one dense model at the same epoch budget; the table: test top-1 at the hard
# prune (0 retrain epochs) and after 1 and 5 masked retrain epochs, per sparsity
SLR_TABLE = --metric top1_hard --metric top1_retrain1 --metric top1_retrain5 --metric sparsity \
            --metric time_total_s --no-plots
reproduce-slr:  ## SLR vs ADMM, resnet18 on CIFAR-10 at 70/80/90%, 50 epochs each, 5 retrain epochs (a GPU; downloads CIFAR-10)
	$(BIN)/prune-run -m method=slr model=resnet18 dataset=cifar10 sparsity=0.7,0.8,0.9 \
		method.epochs=50 method.retrain_epochs=5 pretrain.epochs=160 pretrain.lr=0.1 \
		hydra.sweep.dir=outputs/reproduce-slr/slr
	$(BIN)/prune-run -m method=admm model=resnet18 dataset=cifar10 sparsity=0.7,0.8,0.9 \
		method.iterations=50 method.retrain_epochs=5 pretrain.epochs=160 pretrain.lr=0.1 \
		hydra.sweep.dir=outputs/reproduce-slr/admm
	$(BIN)/prune-report outputs/reproduce-slr --out outputs/reproduce-slr/retraining $(SLR_TABLE)

reproduce-slr-smoke:  ## the same on digits (10 epochs each, the defaults), on CPU in about 15 minutes
	$(BIN)/prune-run -m method=slr,admm model=resnet18 dataset=digits sparsity=0.7,0.8,0.9 \
		method.retrain_epochs=5 hydra.sweep.dir=outputs/reproduce-slr-smoke
	$(BIN)/prune-report outputs/reproduce-slr-smoke --out outputs/reproduce-slr-smoke/retraining \
		$(SLR_TABLE)

reproduce-gradual:  ## Zhu & Gupta's gradual pruning on resnet18 / CIFAR-10 at 50/75/90%, 3 seeds (a GPU; downloads CIFAR-10)
	$(BIN)/prune-run -m method=gradual model=resnet18 dataset=cifar10 sparsity=0.5,0.75,0.9 \
		seed=0,1,2 method.epochs=60 pretrain.epochs=160 pretrain.lr=0.1 \
		hydra.sweep.dir=outputs/reproduce-gradual

reproduce-gradual-smoke:  ## the same sweep on digits, one seed, on CPU in minutes
	$(BIN)/prune-run -m method=gradual model=resnet18 dataset=digits sparsity=0.5,0.75,0.9 \
		hydra.sweep.dir=outputs/reproduce-gradual-smoke

# every method x 3 seeds x 3 sparsities into one report; COMPARE_ARGS picks model and dataset
COMPARE_ARGS ?= model=resnet18 dataset=digits
compare:  ## all methods x seeds 0,1,2 x sparsities 0.5/0.75/0.9 -> outputs/compare/report.md (digits: hours on CPU)
	$(BIN)/prune-run -m method=dense,oneshot,iterative,gradual,ice,admm,autocompress,slr \
		seed=0,1,2 sparsity=0.5,0.75,0.9 $(COMPARE_ARGS) hydra.sweep.dir=outputs/compare

verdicts:  ## each seed paper's claim on Fashion-MNIST with a verdict -> docs/results.md (CPU: dense ~45 min once, then <1 h)
	$(BIN)/python scripts/verdicts.py

verdicts-full:  ## the GPU tier at paper scale, every job in one go (one GPU; the jobs add up to over an hour)
	$(BIN)/python scripts/verdicts.py --full

verdicts-gpu:  ## one job of the GPU tier, merged into outputs/verdicts-full/results.json: make verdicts-gpu JOB=ice56
	$(BIN)/python scripts/verdicts.py --full --job $(JOB)

bench-admm:  ## ADMM's costs side by side: penalised vs plain training step, Z/U update, quick evaluation
	$(BIN)/python scripts/bench_admm.py

bench-speedup:  ## FLOPs vs measured speedup of filter pruning at 30/50/70% (resnet18, vgg16, mobilenet_v2; CPU)
	$(BIN)/python scripts/bench_speedup.py

bench-deploy:  ## torch eager vs ONNX Runtime speedups of resnet56/resnet18 at 0.5/0.7, channel multiples 1/8/16
	$(BIN)/python scripts/bench_speedup.py --models resnet56 resnet18 --sparsity 0.5 0.7 \
		--multiples 1 8 16 --runtimes torch onnxruntime

bench-loop:  ## the training loop against plain PyTorch, masked and pruned steps, the data path, the CPU precision modes
	$(BIN)/python scripts/bench_loop.py --quick --modes

bench-stop:  ## SIGTERM mid-epoch on a 224 px image folder: seconds to stop, where, and the resume
	$(BIN)/python scripts/bench_stop.py --json outputs/bench_stop.json

bench-gpu:  ## one GPU: pruned vs dense resnet56 latency eager/graphed, training eager/compiled, into docs/benchmarks.md (--smoke on CPU)
	$(BIN)/python scripts/bench_gpu.py --json outputs/bench_gpu.json --doc docs/benchmarks.md

clean:  ## run outputs and caches of this checkout (not the dense-model cache)
	rm -rf outputs/20* outputs/multirun multirun .pytest_cache build *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
