"""The one part of ESP's build that pyproject.toml does not hold: the engine's hottest loop
(runtime/rules/pair_scan.py), compiled by Cython. It is optional: without a C compiler the
install goes on and the module runs as the plain Python it is."""

from Cython.Build import cythonize
from setuptools import Extension, setup

pair_scan = Extension("runtime.rules.pair_scan", ["runtime/rules/pair_scan.py"], optional=True)
setup(ext_modules=cythonize([pair_scan], build_dir="build"))  # the C it generates goes to build/, not the sources
