"""Heimdex: turns raw video into structured, queryable metadata."""

from typing import Any


def __getattr__(name: str) -> Any:
    # importlib.metadata costs tens of milliseconds at start-up; only what prints the version
    # pays for it (`heimdex probe` should start as fast as ffprobe).
    if name != "__version__":
        raise AttributeError(f"module 'heimdex' has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = version("heimdex")
    except PackageNotFoundError:  # running from a source tree that was never installed
        found = "0.0.0"
    globals()["__version__"] = found
    return found
