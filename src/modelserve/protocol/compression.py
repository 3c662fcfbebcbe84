"""Compressed answers for clients that ask (``Accept-Encoding: gzip`` or ``deflate``), as Triton gives
them: tritonclient's ``response_compression_algorithm`` sends the header and inflates the answer.

Answers below MIN_BYTES go out as they are: general HTTP clients (requests, httpx, browsers) ask for
gzip on every request, and deflating a 100-byte answer costs more CPU than sending it. Deflating a
large answer would hold the event loop, so above INLINE_BYTES it runs on a worker thread (zlib
releases the GIL meanwhile).
"""

from __future__ import annotations

import asyncio
import zlib

MIN_BYTES = 1024
# zlib at level 1 on 1,000 floats in JSON (11 KB): 0.10 ms, down to 49 % of the size; level 6: 0.35 ms
# for 46 %. Binary floats barely shrink at any level, and take 1.7 ms per 64 KiB: a body above 16 KiB
# (at worst some 0.4 ms) is deflated off the loop.
LEVEL = 1
INLINE_BYTES = 16 * 1024
ENCODINGS = ("gzip", "deflate")  # in the order preferred when a client accepts both equally


def accepted(accept_encoding: str | None) -> str | None:
    """The encoding to answer with, from the client's ``Accept-Encoding``: gzip or deflate where it accepts
    one (``*`` counts for both; ``q=0`` refuses), the higher ``q`` first; None for the body as it is."""
    if not accept_encoding:
        return None
    weights: dict[str, float] = {}
    for item in accept_encoding.split(","):
        name, _, parameters = item.strip().partition(";")
        quality = 1.0
        for parameter in parameters.split(";"):
            key, _, value = parameter.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0  # an unreadable weight accepts nothing
        weights[name.strip().lower()] = quality
    wildcard = weights.get("*", 0.0)
    best = max(ENCODINGS, key=lambda encoding: weights.get(encoding, wildcard))
    return best if weights.get(best, wildcard) > 0 else None


def compress(body: bytes, encoding: str) -> bytes:
    """``body`` as gzip or deflate (zlib's format, as HTTP's ``deflate`` means and tritonclient reads)."""
    deflater = zlib.compressobj(LEVEL, zlib.DEFLATED, 31 if encoding == "gzip" else 15)
    return deflater.compress(body) + deflater.flush()


async def compressed(body: bytes, accept_encoding: str | None) -> tuple[bytes, str | None]:
    """The answer's body and its ``Content-Encoding`` (None: sent as it is)."""
    if len(body) < MIN_BYTES or (encoding := accepted(accept_encoding)) is None:
        return body, None
    if len(body) <= INLINE_BYTES:
        return compress(body, encoding), encoding
    return await asyncio.to_thread(compress, body, encoding), encoding
