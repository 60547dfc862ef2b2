"""Heimdex: turns raw video into structured, queryable metadata."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("heimdex")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
