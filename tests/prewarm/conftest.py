"""The pre-warming tests that drive a real ModelManager build it as the manager tests do."""

from tests.models.conftest import make_manager

__all__ = ["make_manager"]
