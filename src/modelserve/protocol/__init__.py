"""Protocols are codecs around the core: they decode requests into numpy tensors and encode results."""
