"""modelserve: a fast model-serving server speaking the Open Inference Protocol (KServe V2)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("modelserve")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
