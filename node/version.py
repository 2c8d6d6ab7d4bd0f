"""The installed version of alliance, for `alliance --version`, status and metrics."""

from importlib.metadata import PackageNotFoundError, version

try:
    VERSION: str = version("alliance-node")
except PackageNotFoundError:  # run from a source tree that was never installed
    VERSION = "0+unknown"
