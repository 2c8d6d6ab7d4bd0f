"""The one native part: the state tree's hashing (node/chain/_merkle.c). It is optional: where it cannot
be built (no C compiler, Python or OpenSSL headers), node/chain/tree_levels.py runs the same in Python."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("node.chain._merkle", ["node/chain/_merkle.c"], libraries=["crypto"],
                             extra_compile_args=["-O2"], optional=True)])
