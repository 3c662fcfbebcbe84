"""Backends that execute models. Each imports its heavy library only when a model of its kind loads."""

from modelserve.runtimes.base import Runtime, Signature, runtime_class

__all__ = ["Runtime", "Signature", "runtime_class"]
