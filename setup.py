"""Package discovery; everything else is in pyproject.toml.

Every package under prunekit/ is found (a new subpackage cannot be left out of the wheel), and the
top-level conf/ tree ships inside the package as prunekit.conf (pyproject's package-dir maps it),
so an installed prune-run finds its configs at pkg://prunekit.conf.
"""
from setuptools import find_packages, setup

setup(packages=find_packages(include=["prunekit", "prunekit.*"])
      + [f"prunekit.{name}" for name in find_packages(include=["conf", "conf.*"])])
