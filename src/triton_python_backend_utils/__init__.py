"""Triton's ``triton_python_backend_utils`` under its own name, so that a Triton Python model's
``import triton_python_backend_utils as pb_utils`` finds it: modelserve's ``runtimes/pb_utils.py``."""

from modelserve.runtimes.pb_utils import *  # noqa: F403
from modelserve.runtimes.pb_utils import __all__ as __all__
