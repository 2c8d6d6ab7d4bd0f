"""The version of the installed alliance-node package."""

import importlib.metadata

try:
    VERSION = importlib.metadata.version("alliance-node")
except importlib.metadata.PackageNotFoundError:
    VERSION = "0+unknown"
