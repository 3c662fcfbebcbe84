"""Dynamic batching: requests for one model gathered into one runtime call."""

from modelserve.batching.batcher import Batcher

__all__ = ["Batcher"]
