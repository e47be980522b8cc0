"""The package as users install it: the wheel holds every module and config of the checkout.

(CI also installs that wheel, not editable and without the dev extra, into a fresh virtual
environment and runs prune-run and prune-report from outside the checkout: scripts/check_wheel.sh.)
"""
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_holds_every_module_and_config(tmp_path):
    """A subpackage left out of pyproject's package list once made every installed run fail
    (prunekit.tracking): setuptools discovers the packages, and the wheel has them all."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("prunekit", "conf"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                        "-q", "-w", str(tmp_path / "dist"), str(src)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("prunekit-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "prunekit").rglob("*.py")
               if "__pycache__" not in p.parts}
    configs = {"prunekit/" + p.relative_to(ROOT).as_posix() for p in (ROOT / "conf").rglob("*")
               if p.suffix in (".yaml", ".py") and "__pycache__" not in p.parts}
    assert "prunekit/tracking/__init__.py" in modules and "prunekit/conf/config.yaml" in configs
    assert modules - names == set() and configs - names == set()
    assert not any(n.startswith("conf/") for n in names)  # only inside the package
