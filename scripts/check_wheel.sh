#!/usr/bin/env bash
# prunekit as users install it: build the wheel, install it (not editable, without the dev extra)
# into a fresh virtual environment, and from a folder outside the checkout import every module of
# the installed package, run prune-run on a small digits run and prune-report on its output.
# CI runs it (.ci/run), `make check-wheel` here. PY: the Python to build and install with.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
started=$SECONDS
"$PY" -m pip wheel --no-deps -q -w "$work/dist" .  # isolated build: pyproject's build-system alone
"$PY" -m venv "$work/venv"
"$work/venv/bin/pip" install -q "$work"/dist/prunekit-*.whl
cd "$work"  # outside the checkout: nothing of it on sys.path
"$work/venv/bin/python" - <<'PYTHON'
import importlib
import pkgutil

import prunekit

assert "site-packages" in prunekit.__file__, f"not the installed package: {prunekit.__file__}"
names = [m.name for m in pkgutil.walk_packages(prunekit.__path__, "prunekit.")]
for name in names:
    importlib.import_module(name)
print(f"check-wheel: imported all {len(names)} modules of {prunekit.__path__[0]}")
PYTHON
export PRUNEKIT_CACHE="$work/cache" PRUNEKIT_DATA="$work/data"
"$work/venv/bin/prune-run" method=oneshot model=lenet5 dataset=digits dataset.subset=0.3 \
    pretrain.epochs=2 method.finetune_epochs=1 hardware.latency.enabled=false \
    hydra.run.dir="$work/run"
"$work/venv/bin/python" -c "import json, sys; s = json.load(open(sys.argv[1])); \
assert s['status'] == 'ok', s" "$work/run/summary.json"
"$work/venv/bin/prune-report" "$work/run" --no-plots
test -s "$work/run/report.md"
echo "check-wheel: ok ($((SECONDS - started)) s)"
